"""Cost of a DoRA step against bare ViT-S forward/backward on the same images, and of the DINO baseline.

One run, one machine, same input tensors:
  bare   the student ViT fwd+bwd on every image the student sees (masked globals and local
         crops) plus the teacher ViT forward on the global views: no heads, tracker or losses
  dora   DoRA's full step: teacher + tracker + masks + heads + losses (eq. 10) + backward + EMA
  dino   the DINO baseline step on the same clips
The ratio dora/bare is what the method adds to the backbone work.

Usage: python bench/step_bench.py [--config configs/dora_vits16_official.yaml] [--batch 16] [--iters 10]
       [--device cuda] [--out FILE.json]   (on CPU: --batch 1 --iters 2)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dora.config import load_config  # noqa: E402
from dora.model.method import DoRA  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, iters: int, device: torch.device) -> float:
    """Seconds per call after one warm-up call."""
    fn()
    _sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / iters


def run(config: Path, batch: int, iters: int, device: torch.device, overrides: list[str] = ()) -> dict:
    cfg = load_config(config, [f"train.batch_size={batch}", *overrides])
    d = cfg.data
    t, v, m, k = d.clip_frames, cfg.dora.global_views, d.local_crops, cfg.dora.num_objects
    g = torch.randn(batch, t, v, 3, d.global_size, d.global_size, device=device)
    lo = torch.randn(batch, t, m, 3, d.local_size, d.local_size, device=device)
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
           else contextlib.nullcontext())
    def method_step(c):
        """A full training step of DoRA or the DINO baseline (config c) on g, lo."""
        torch.manual_seed(0)
        model = DoRA.from_config(c).to(device).train()
        opt = torch.optim.AdamW([p for p in model.student.parameters() if p.requires_grad], lr=1e-5)

        def step():
            with amp:
                out = model(g, lo, 0.04)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            model.ema_update(0.996)

        return model, step

    model, dora_step = method_step(cfg)

    opt = torch.optim.AdamW([p for p in model.student.parameters() if p.requires_grad], lr=1e-5)
    masked = g[:, :, :, None].expand(-1, -1, -1, k, -1, -1, -1).flatten(0, 3).contiguous()
    locals_flat = lo.flatten(0, 2)
    student, teacher = model.student.backbone, model.teacher.backbone

    def bare_step():
        with amp:
            with torch.no_grad():
                teacher(g.flatten(0, 2))
            loss = student(masked).float().mean() + student(locals_flat).float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()

    res = {"config": str(config), "device": str(device), "batch_clips": batch, "frames": t, "global_views": v,
           "objects": k, "local_crops": m, "global_size": d.global_size, "local_size": d.local_size}
    res["bare_s"] = timed(bare_step, iters, device)
    res["dora_s"] = timed(dora_step, iters, device)
    _, dino_step = method_step(load_config(config, [f"train.batch_size={batch}", "dora.method=dino", *overrides]))
    res["dino_s"] = timed(dino_step, iters, device)
    for name in ("bare", "dora", "dino"):
        res[f"{name}_clips_per_s"] = batch / res[f"{name}_s"]
    res["dora_over_bare"] = res["dora_s"] / res["bare_s"]
    res["dino_over_bare"] = res["dino_s"] / res["bare_s"]
    if device.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(device)
        res["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "dora_vits16_official.yaml")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    res = run(args.config, args.batch, args.iters, torch.device(args.device), args.overrides)
    print(f"{res['device']}: {res['batch_clips']} clips x {res['frames']} frames, V={res['global_views']}, "
          f"k={res['objects']}, {res['local_crops']} local crops at {res['local_size']} px")
    for name in ("bare", "dora", "dino"):
        print(f"  {name:5s} {res[name + '_s'] * 1000:9.1f} ms/step  {res[name + '_clips_per_s']:8.2f} clips/s")
    print(f"  dora / bare ViT fwd+bwd on the same images: {res['dora_over_bare']:.3f}; dino / bare: "
          f"{res['dino_over_bare']:.3f}")
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
