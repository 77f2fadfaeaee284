"""A valid shard folder of synthetic 720p JPEG frames, made without any video tools.

For machines that have no ffmpeg/PyAV (the lent GPU machine): frames are textured images that
move slowly, JPEG-encoded at quality 90 like `dora-data shard`, written as work units and turned
into shards by the project's own assembly step (pipeline.shard.assemble), so the folder is exactly what
the loader reads in real use.

Usage: python bench/synth_shards.py OUT [--videos 3] [--seconds 20] [--fps 10] [--size 1280x720]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.files.atomic import write_json_atomic  # noqa: E402
from pipeline.format import ShardFolder  # noqa: E402
from pipeline.shard.assemble import assemble  # noqa: E402
from pipeline.shard.settings import ShardSettings  # noqa: E402
from pipeline.shard.units import Unit, UnitWriter  # noqa: E402


def texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Smooth colour blobs plus fine grain: JPEG sizes like real 720p street footage."""
    small = rng.integers(0, 255, (h // 40 + 2, w // 40 + 2, 3), dtype=np.uint8)
    base = cv2.resize(small, (w + 64, h + 64), interpolation=cv2.INTER_CUBIC)
    grain = rng.integers(-12, 13, base.shape, dtype=np.int16)
    return np.clip(base.astype(np.int16) + grain, 0, 255).astype(np.uint8)


def make(out: Path, videos: int = 3, seconds: float = 20.0, fps: float = 10.0, size=(1280, 720)) -> Path:
    w, h = size
    settings = ShardSettings(fps=fps, short_side=min(size))
    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    n = int(seconds * fps)
    for v in range(videos):
        name = f"synthetic{v}"
        source = out / f"{name}.txt"
        source.write_text(f"synthetic video {v}: {n} frames {w}x{h} at {fps} fps\n")
        st = source.stat()
        unit = Unit(name, 0, 0.0, None)
        writer = UnitWriter(out, unit)
        tex = texture(rng, w, h)
        for i in range(n):
            dx, dy = int(32 + 30 * np.sin(i / 15)), int(32 + 30 * np.cos(i / 20))
            frame = tex[dy:dy + h, dx:dx + w]
            ok, jpg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
            writer.add_frame(i / fps, i, jpg.tobytes(), 0, 0)
        writer.finish(n_decoded=n, cuts=[], last_t=(n - 1) / fps, last_dt=1 / fps)
        info = {"path": str(source), "codec": "synthetic", "width": w, "height": h, "fps": fps, "time_base_num": 1,
                "time_base_den": 1000, "start_s": 0.0, "duration_s": n / fps, "n_frames_declared": n}
        write_json_atomic(ShardFolder(out).video_record(name), {
            "name": name, "source": str(source), "source_bytes": st.st_size, "source_mtime_ns": st.st_mtime_ns,
            "info": info, "n_units": 1, "stored_size": [w, h], "settings_fps": fps})
    assemble(out, settings, quiet=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--size", default="1280x720")
    args = ap.parse_args()
    w, h = map(int, args.size.split("x"))
    make(args.out, args.videos, args.seconds, args.fps, (w, h))
    meta = ShardFolder(args.out).read_index()
    print(f"{args.out}: {sum(v['n_frames'] for v in meta['videos'])} frames in {len(meta['shards'])} shard(s)")


if __name__ == "__main__":
    main()
