"""A tiny, randomly initialised OWLv2 / OWL-ViT saved as a model folder, built offline from the library's own
config classes, with a CLIP BPE tokenizer whose vocabulary is the 256 byte symbols (no merges)."""

from __future__ import annotations

import json
from pathlib import Path


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's printable stand-ins for the 256 byte values."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def build_tiny_owl(folder: Path, kind: str = "owlv2", image_size: int = 64, seed: int = 0) -> Path:
    """Save a tiny OWL detector (2 layers, width 32, 16 px patches) with tokenizer and image processor."""
    import torch
    import transformers as tf

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # the largest id: the text tower pools at the argmax of the ids
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer", "pad_token": "!",
                                                              "model_max_length": 16}))
    cfg_cls, model_cls, proc_cls = {
        "owlv2": (tf.Owlv2Config, tf.Owlv2ForObjectDetection, tf.Owlv2ImageProcessor),
        "owlvit": (tf.OwlViTConfig, tf.OwlViTForObjectDetection, tf.OwlViTImageProcessor),
    }[kind]
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=16, bos_token_id=len(vocab) - 2,
                eos_token_id=len(vocab) - 1, pad_token_id=0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=image_size, patch_size=16)
    torch.manual_seed(seed)
    model = model_cls(cfg_cls(text_config=text, vision_config=vision, projection_dim=32)).eval()
    with torch.no_grad():  # random heads saturate: make boxes patch-sized and scores spread over (0, 1)
        model.box_head.dense2.weight.mul_(0.05)
        model.class_head.logit_scale.weight.mul_(0.02)
        model.class_head.logit_shift.weight.mul_(0.5)
    model.save_pretrained(folder)
    size = {"height": image_size, "width": image_size}
    extra = {"crop_size": size} if kind == "owlvit" else {}
    proc_cls(size=size, **extra).save_pretrained(folder)
    return folder
