"""Loader benchmark on the CPU: our clip loader vs the official code's way, same source, same clips.

  official-style  per clip: open the 4K source video, seek to the clip start, decode forward through
                  the 7 s span, keep the 8 frames 1 s apart, then the same augmentations
                  (what the official WTDataloader does with decord, here with PyAV)
  ours            the same clips from `dora-data shard` output (720p JPEG shards): one pread per
                  frame, JPEG decode, augmentations; DALI on CPU and torch DataLoader workers

Source (built once, cached in bench/.cache): one continuous shot of real footage (Big Buck Bunny,
played forwards and backwards) at 3840x2160, 60 fps, VP9 with light grain, 16 s.
Usage: python bench/loader_bench.py [--clips 64] [--official-clips 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from fourk import upscaled, write_vp9_4k60  # noqa: E402

from dora.config import load_config  # noqa: E402
from dora.data.augment import clip_rng, draw_clip  # noqa: E402
from dora.data.batches import BatchSource  # noqa: E402
from dora.data.loader import Loader, dali_available  # noqa: E402
from dora.data.views_torch import render_clip  # noqa: E402
from pipeline.format import ShardFolder  # noqa: E402
from pipeline.video.samples import sample_video  # noqa: E402

CACHE = ROOT / "bench" / ".cache"


def make_source(seconds: float = 16.0) -> Path:
    """One continuous shot: Big Buck Bunny (25 fps) forwards then backwards, shown at 60 fps."""
    path = CACHE / f"one_shot_4k60_vp9_{seconds:g}s.webm"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    src = upscaled(sample_video("bigbuckbunny.mp4"))
    loop = src + src[::-1][1:-1]
    n = int(seconds * 60)
    return write_vp9_4k60(path, (loop[(i * 25 // 60) % len(loop)] for i in range(n)), n)


def make_shards(source: Path) -> Path:
    out = CACHE / f"shards_{source.stem}"
    if not ShardFolder(out).is_finished():
        subprocess.run([sys.executable, "-m", "pipeline.cli", "shard", str(source), "--out", str(out), "--quiet"],
                       check=True, cwd=ROOT)
    return out


def official_clip(source: Path, times: list[float], params, cfg) -> None:
    """Open the video, seek to the first time, decode through the span, augment the picked frames."""
    with av.open(str(source)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        c.seek(int(times[0] / s.time_base), stream=s, backward=True)
        picked, want = [], list(times)
        for f in c.decode(s):
            t = float(f.pts * s.time_base)
            if want and t >= want[0] - 1e-3:
                picked.append(torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1))
                want.pop(0)
            if not want:
                break
    render_clip(picked, params, cfg.dora.global_views, cfg.data.global_size, cfg.data.local_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--official-clips", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    source = make_source()
    shards = make_shards(source)
    batch = 8
    cfg = load_config(ROOT / "configs" / "dora_vits16.yaml", [f"train.batch_size={batch}"])
    src = BatchSource.from_config([str(shards)], cfg)
    clips = [src.sampler.clip(p) for p in range(args.official_clips)]
    t0 = time.perf_counter()
    for c in clips:  # the official way, on the 4K source; same clip times and augmentation parameters
        params = draw_clip(clip_rng(cfg.train.seed, 0, c.position), (3840, 2160), cfg.data.clip_frames,
                           cfg.dora.global_views, cfg.data)
        official_clip(source, list(c.times), params, cfg)
    official = len(clips) / (time.perf_counter() - t0)
    results = {"official_style_clips_per_s": official}
    backends = (["dali"] if dali_available() else []) + ["torch"]
    n_batches = max(1, args.clips // batch)
    for backend in backends:
        loader = Loader(src, 0, torch.device("cpu"), backend, workers=args.workers)
        next(loader)  # start-up (workers, pipeline build) is not part of the rate
        t0 = time.perf_counter()
        for _ in range(n_batches):
            next(loader)
        results[f"ours_{backend}_clips_per_s"] = n_batches * batch / (time.perf_counter() - t0)
    print(f"source {source.name}: 3840x2160 VP9 60 fps; shards {shards.name}: 1280x720 JPEG at 10 fps; "
          f"T={cfg.data.clip_frames}, V={cfg.dora.global_views}, m={cfg.data.local_crops}, "
          f"{cfg.data.global_size}/{cfg.data.local_size} px, {os.cpu_count()} cores, workers={args.workers}")
    print(f"{'loader':34s} {'clips/s':>9s} {'vs official':>12s}")
    for name, rate in results.items():
        print(f"{name:34s} {rate:9.3f} {rate / official:11.1f}x")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
