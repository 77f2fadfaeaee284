"""Frames/s of `dora-data analyze`'s detector back-ends, side by side in one run, on real frames.

Published OWL weights cannot be downloaded on the benchmark box, so the OWL models are RANDOMLY
initialised at the published architecture sizes (OWLv2 B/16 at 960 px = google/owlv2-base-patch16-ensemble,
OWL-ViT B/32 at 768 px = google/owlvit-base-patch32). Speed does not depend on the weights' values.
The FLOPs of one frame are counted with torch's FlopCounterMode, for the GPU estimate in BENCHMARKS.md.

    python bench/owl_bench.py [--frames 4] [--batch 2] [--models owlv2,owlvit,offline] [--gpu-tflops 139]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.analyze.vocabulary import load_vocabulary  # noqa: E402
from pipeline.video.samples import sample_video  # noqa: E402
from tests.tiny_owl import build_tiny_owl  # noqa: E402
from tests.videos import decode_all  # noqa: E402

ARCH = {  # the published configs' sizes (text tower: CLIP B, 12 layers, width 512, 16 tokens)
    "owlv2": dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                              image_size=960, patch_size=16), projection_dim=512),
    "owlvit": dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                               image_size=768, patch_size=32), projection_dim=512),
}
TEXT = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
            max_position_embeddings=16, pad_token_id=0)


def full_size_folder(kind: str, root: Path) -> Path:
    """A model folder with the real architecture (random weights) and the tiny test tokenizer (the text
    tower's cost does not depend on which token ids it sees)."""
    import torch
    import transformers as tf

    folder = build_tiny_owl(root / kind, kind)  # tokenizer + processor files
    cfg_cls, model_cls, proc_cls = {"owlv2": (tf.Owlv2Config, tf.Owlv2ForObjectDetection, tf.Owlv2ImageProcessor),
                                    "owlvit": (tf.OwlViTConfig, tf.OwlViTForObjectDetection,
                                               tf.OwlViTImageProcessor)}[kind]
    a = ARCH[kind]
    text = {**TEXT, "bos_token_id": 49406, "eos_token_id": 49407}
    torch.manual_seed(0)
    model = model_cls(cfg_cls(text_config=text, vision_config=a["vision"], projection_dim=a["projection_dim"]))
    model.save_pretrained(folder)
    size = {"height": a["vision"]["image_size"], "width": a["vision"]["image_size"]}
    proc_cls(size=size, **({"crop_size": size} if kind == "owlvit" else {})).save_pretrained(folder)
    return folder


def frames(n: int, long_side: int) -> list[np.ndarray]:
    import cv2

    _, fr = decode_all(sample_video("bikes.mp4"))
    picks = [fr[i] for i in np.linspace(0, len(fr) - 1, n).astype(int)]
    h, w = picks[0].shape[:2]
    s = long_side / max(h, w)
    return [cv2.resize(f, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR) for f in picks]


def flops_per_frame(det, frame: np.ndarray) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    pv = det.processor(images=[frame], return_tensors="pt")["pixel_values"]
    with FlopCounterMode(display=False) as fc:
        det.scores(pv)
    return fc.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--models", default="owlv2,owlvit,offline")
    ap.add_argument("--gpu-tflops", type=float, default=139.0,
                    help="achieved bf16 TFLOP/s on one GPU for the estimate (139: this project's H200 ViT-S/16 "
                         "training-step measurement, 5,495 img/s x 25.3 GFLOP fwd+bwd as FlopCounterMode counts)")
    args = ap.parse_args()
    import torch

    from pipeline.analyze.detectors import OfflineDetector, detect_batch
    from pipeline.analyze.owl import OwlDetector

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU only; frames from bikes.mp4")
    vocab = load_vocabulary("lvis")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models.split(","):
            if kind == "offline":
                det, fr = OfflineDetector(0.5), frames(args.frames, 640)
                detect_batch(det, fr[:1])
                t0 = time.perf_counter()
                detect_batch(det, fr)
                dt = time.perf_counter() - t0
                rows.append((det.name, 640, None, len(fr) / dt, None))
                continue
            folder = full_size_folder(kind, Path(tmp))
            t0 = time.perf_counter()
            det = OwlDetector(str(folder), vocab, cache_dir=Path(tmp) / "cache", device="cpu")
            text_s = time.perf_counter() - t0
            fr = frames(args.frames, det.input_size)
            det.detect(fr[:1])  # warm-up
            t0 = time.perf_counter()
            for i in range(0, len(fr), args.batch):
                det.detect(fr[i:i + args.batch])
            dt = time.perf_counter() - t0
            rows.append((f"{kind} (random weights, real size)", det.input_size, text_s, len(fr) / dt,
                         flops_per_frame(det, fr[0])))
            del det
    base = rows[0][3]
    print(f"{'back-end':48s} {'input px':>8s} {'load+LVIS text s':>16s} {'frames/s':>9s} {'ratio':>7s} "
          f"{'GFLOP/frame':>11s} {'est. GPU frames/s':>17s}")
    for name, px, text_s, fps, flops in rows:
        gpu = f"{args.gpu_tflops * 1e12 / flops:17.0f}" if flops else f"{'-':>17s}"
        print(f"{name:48s} {px:8d} {text_s if text_s is not None else float('nan'):16.1f} {fps:9.3f} "
              f"{fps / base:7.2f} {flops / 1e9 if flops else float('nan'):11.1f} {gpu}")


if __name__ == "__main__":
    main()
