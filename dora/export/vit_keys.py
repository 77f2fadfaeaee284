"""A plain timm ViT backbone's weights under the key names other toolkits' ViTs use.

Every conversion starts from the teacher backbone in timm names (`dora.checkpoint.backbone_weights`)
and only renames (and, for Hugging Face, splits the fused qkv projection); no value changes. The
shapes these toolkits build for ViT-S/16 are kept as test data in tests/data/keylists/ (made by
bench/dense_keylists.py from the libraries themselves).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from pipeline.errors import InputError

# The keys of a plain ViT (class token, absolute position embedding, pre-norm blocks, final norm):
# the only layout the toolkits' ViT classes have a place for.
PLAIN_KEY = re.compile(r"^(cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)|"
                       r"blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias))$")
REQUIRED = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias")
# Heads by width, as dora-eval reads a ViT's shape off weights without a config (dora/eval/common.py).
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


@dataclass(frozen=True)
class VitShape:
    """The architecture a plain ViT's weights describe (what a toolkit's config must say)."""

    width: int
    depth: int
    patch: int
    grid: int  # the position-embedding grid side (img_size / patch)
    mlp: int  # hidden width of the MLP
    qkv_bias: bool

    @property
    def image_size(self) -> int:
        return self.grid * self.patch


def plain_vit(weights: dict[str, torch.Tensor], to: str) -> VitShape:
    """The shape of `weights` if they are a plain ViT that `--to to` can hold; else one InputError line."""
    odd = sorted(k for k in weights if not PLAIN_KEY.match(k))
    missing = [k for k in REQUIRED if k not in weights]
    if odd or missing:
        what = f"keys {odd[:3]} that" if odd else f"no {missing[:3]}, which"
        raise InputError(f"--to {to}: the backbone has {what} the {to} ViT has no place for; only a plain ViT "
                         "(class token, absolute position embedding, no layer scale or register tokens) exports "
                         "to it; use --to timm")
    width = int(weights["pos_embed"].shape[-1])
    patch = int(weights["patch_embed.proj.weight"].shape[-1])
    depth = 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("blocks."))
    grid = round((int(weights["pos_embed"].shape[1]) - 1) ** 0.5)
    if grid * grid + 1 != weights["pos_embed"].shape[1]:
        raise InputError(f"--to {to}: pos_embed has {weights['pos_embed'].shape[1]} tokens, not a class token and "
                         "a square grid; use --to timm")
    return VitShape(width=width, depth=depth, patch=patch, grid=grid,
                    mlp=int(weights["blocks.0.mlp.fc1.weight"].shape[0]), qkv_bias="blocks.0.attn.qkv.bias" in weights)


def heads_of(weights: dict[str, torch.Tensor], saved: dict | None) -> int:
    """The number of attention heads: the run's config (its timm arch and overrides) when the checkpoint
    carries one, else the standard one for the width (exports and official files carry no config)."""
    if isinstance(saved, dict) and isinstance(saved.get("model"), dict):
        from dora.config import config_from_dict
        from dora.model import create_backbone

        model_cfg = config_from_dict(saved).model
        model_cfg.last_block_heads = None  # the trained weights; the heads of blocks 0..n-2
        with torch.device("meta"):  # the architecture only: no memory, no initialisation
            return int(create_backbone(model_cfg).blocks[0].attn.num_heads)
    width = int(weights["pos_embed"].shape[-1])
    if width not in HEADS_BY_WIDTH:
        raise InputError(f"--to hf: a {width}-wide ViT is not a standard one ({sorted(HEADS_BY_WIDTH)}), so its "
                         "number of heads is unknown; export a checkpoint of ours (it carries its config)")
    return HEADS_BY_WIDTH[width]


def _blocks(weights: dict[str, torch.Tensor]) -> int:
    return 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("blocks."))


def to_mmseg(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmsegmentation 1.x `VisionTransformer` names, as its tools/model_converters/vit2mmseg.py maps them:
    blocks -> layers, norm1/norm2 -> ln1/ln2, mlp.fc1 -> ffn.layers.0.0, mlp.fc2 -> ffn.layers.1,
    attn.qkv -> attn.attn.in_proj_weight/bias, attn.proj -> attn.attn.out_proj, patch_embed.proj ->
    patch_embed.projection, the final norm -> ln1 (final_norm=True)."""
    out = {}
    for k, v in weights.items():
        if k.startswith("norm."):
            k = k.replace("norm.", "ln1.", 1)
        elif k.startswith("patch_embed.proj."):
            k = k.replace("patch_embed.proj.", "patch_embed.projection.", 1)
        elif k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            rest = (rest.replace("norm1.", "ln1.").replace("norm2.", "ln2.")
                    .replace("mlp.fc1.", "ffn.layers.0.0.").replace("mlp.fc2.", "ffn.layers.1.")
                    .replace("attn.qkv.", "attn.attn.in_proj_").replace("attn.proj.", "attn.attn.out_proj."))
            k = f"layers.{i}.{rest}"
        out[k] = v
    return out


def to_hf(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face `ViTModel` names in the hub's layout (the one transformers 4.x writes and 5.x renames
    on load): embeddings.*, encoder.layer.N.attention.attention.query/key/value (the fused qkv split in
    timm's q, k, v order), attention.output.dense, intermediate.dense, output.dense, layernorm_before/after,
    and the final layernorm. Tensors are copies (safetensors refuses views of one storage)."""
    out = {"embeddings.cls_token": weights["cls_token"], "embeddings.position_embeddings": weights["pos_embed"],
           "embeddings.patch_embeddings.projection.weight": weights["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": weights["patch_embed.proj.bias"],
           "layernorm.weight": weights["norm.weight"], "layernorm.bias": weights["norm.bias"]}
    names = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    for i in range(_blocks(weights)):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        for part in ("weight", "bias"):
            for ours, theirs in names.items():
                out[f"{dst}{theirs}.{part}"] = weights[f"{src}{ours}.{part}"]
            qkv = weights.get(f"{src}attn.qkv.{part}")
            if qkv is not None:
                for name, t in zip(("query", "key", "value"), qkv.chunk(3, dim=0), strict=True):
                    out[f"{dst}attention.attention.{name}.{part}"] = t
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def to_mae(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm names with the class token's position kept as pos_embed[:, 0] ([1, 1 + N, D]), which MAE's
    main_finetune.py, ViTDet's and SeqTrack's loaders read from the file's "model" entry."""
    return {k: v.detach().contiguous() for k, v in weights.items()}


def hf_config(shape: VitShape, heads: int, eps: float = 1e-6) -> dict:
    """config.json of a transformers ViTModel with this shape (timm's LayerNorm eps and exact GELU)."""
    return {
        "architectures": ["ViTModel"], "model_type": "vit", "hidden_size": shape.width,
        "num_hidden_layers": shape.depth, "num_attention_heads": heads, "intermediate_size": shape.mlp,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02, "layer_norm_eps": eps, "image_size": shape.image_size,
        "patch_size": shape.patch, "num_channels": 3, "qkv_bias": shape.qkv_bias, "encoder_stride": shape.patch,
        "torch_dtype": "float32",
    }
