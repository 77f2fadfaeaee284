"""The GPU check (run by bench/gpu_check.sh on a lent H100/H200): loader, step, and both together.

  1. synthetic 720p JPEG shards (bench/synth_shards.py: the machine has no video tools)
  2. loader alone: DALI, nvJPEG decoding and every augmentation on the GPU -> augmented frames/s
  3. step alone: DoRA step on tensors already on the GPU (official setting) vs bare ViT-S -> clips/s
  4. together: `Trainer` with the DALI loader for ~40 steps -> clips/s and data-wait %
Targets (issue 5): loader >= 4,000 frames/s, step >= 100 clips/s per GPU, data wait ~0.
Writes details as JSON under --out and prints a short table last.
Usage: python bench/gpu_check.py --out DIR [--device cpu --quick]   (cpu/quick: a dry run of the script)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import step_bench  # noqa: E402
import synth_shards  # noqa: E402

from dora.config import load_config  # noqa: E402
from dora.data.batches import BatchSource  # noqa: E402
from dora.data.loader import Loader  # noqa: E402
from dora.train.loop import Trainer  # noqa: E402
from pipeline.format import ShardFolder  # noqa: E402

OFFICIAL = ROOT / "configs" / "dora_vits16_official.yaml"


def loader_rate(shards: Path, device: torch.device, batch: int, n: int, quick: bool) -> dict:
    over = [f"train.batch_size={batch}"] + (["data.global_size=64", "data.local_size=32"] if quick else [])
    cfg = load_config(OFFICIAL, over)
    loader = Loader(BatchSource.from_config([str(shards)], cfg), 0, device, "dali", workers=4)
    for _ in range(3):
        next(loader)  # warm-up: pipeline build, nvJPEG handles
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(n):
        b = next(loader)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t
    frames = n * batch * cfg.data.clip_frames
    return {"frames_per_s": frames / dt, "clips_per_s": n * batch / dt, "batches": n,
            "views_per_frame": cfg.dora.global_views + cfg.data.local_crops,
            "output_device": str(b.globals_.device), "global_shape": list(b.globals_.shape)}


def together(shards: Path, run: Path, batch: int, steps: int, quick: bool) -> dict:
    over = [f"train.batch_size={batch}", "train.loader=dali", "train.num_workers=4", "train.checkpoint_every=100000",
            "train.maps_every=100000", "train.log_every=1", "train.precision=bf16"]
    if quick:
        over += ["data.global_size=64", "data.local_size=32", "model.depth=2", "model.out_dim=256"]
    cfg = load_config(OFFICIAL, over)
    probe = BatchSource.from_config([str(shards)], cfg)
    cfg.train.epochs = steps / probe.steps_per_epoch()
    t = time.perf_counter()
    summary = Trainer([str(shards)], cfg, run, resume="none", quiet=True).fit(quiet=True)
    wall = time.perf_counter() - t
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][5:]  # after warm-up
    return {"steps": summary["steps"], "wall_s": wall, "backend": summary["backend"],
            "clips_per_s": sum(r["clips_per_s"] for r in rows) / max(1, len(rows)),
            "data_wait_pct": sum(r["data_wait_pct"] for r in rows) / max(1, len(rows)),
            "loss_last": summary["loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a dry run on CPU)")
    args = ap.parse_args()
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/dora_gpu_check")
    res: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                 "torch": torch.__version__}
    t0 = time.perf_counter()
    shards = work / "shards"
    if not ShardFolder(shards).is_finished():
        synth_shards.make(shards, videos=3, seconds=8 if args.quick else 20)
    res["synth_s"] = time.perf_counter() - t0
    batch = 2 if args.quick else 16
    res["loader"] = loader_rate(shards, device, batch, 3 if args.quick else 40, args.quick)
    print(f"loader: {res['loader']['frames_per_s']:.0f} frames/s", flush=True)
    tiny = ["data.global_size=64", "data.local_size=32", "model.depth=2", "model.out_dim=256"]
    step_over = tiny if args.quick else []
    res["step"] = step_bench.run(OFFICIAL, batch, 2 if args.quick else 10, device, step_over)
    print(f"step: {res['step']['dora_clips_per_s']:.1f} clips/s", flush=True)
    res["together"] = together(shards, work / "run", batch, 12 if args.quick else 45, args.quick)
    res["total_s"] = time.perf_counter() - t0
    (args.out / "gpu_check.json").write_text(json.dumps(res, indent=1))
    lo, st, tg = res["loader"], res["step"], res["together"]
    print(f"\n== gpu_check on {res['device']} (torch {res['torch']}), {res['total_s']:.0f} s ==")
    print(f"{'measure':46s} {'value':>10s} {'target':>10s}")
    print(f"{'DALI loader, augmented frames/s (720p JPEG)':46s} {lo['frames_per_s']:10.0f} {'>= 4000':>10s}")
    print(f"{'DoRA step alone, clips/s (official setting)':46s} {st['dora_clips_per_s']:10.1f} {'>= 100':>10s}")
    print(f"{'  DoRA step / bare ViT-S fwd+bwd':46s} {st['dora_over_bare']:10.2f}")
    print(f"{'  DINO baseline step, clips/s':46s} {st['dino_clips_per_s']:10.1f}")
    print(f"{'training with DALI loader, clips/s':46s} {tg['clips_per_s']:10.1f}")
    print(f"{'  data wait (% of step time)':46s} {tg['data_wait_pct']:10.1f} {'~0':>10s}")


if __name__ == "__main__":
    main()
