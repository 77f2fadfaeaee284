"""WT-like 4K test sources for the benchmarks: real footage scaled to 3840x2160, light grain, VP9 60 fps."""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_vp9_4k60(path: Path, frames: Iterator[np.ndarray], n: int) -> Path:
    """Encode n 3840x2160 yuv420p frames (grain added so the bit rate is YouTube-like) to `path`,
    through a temporary file: the result exists only when complete."""
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".tmp.webm")
    print(f"building {path.name} ({n} frames of 3840x2160 VP9, once; a few minutes)", flush=True)
    with av.open(str(tmp), "w") as out:
        s = out.add_stream("libvpx-vp9", rate=60)
        s.width, s.height, s.pix_fmt = 3840, 2160, "yuv420p"
        s.codec_context.time_base = Fraction(1, 60)
        s.bit_rate = 40_000_000
        s.options = {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "tile-columns": "2", "g": "120"}
        for i, yuv in zip(range(n), frames, strict=False):  # frames may be endless
            grain = rng.integers(-4, 5, yuv.shape, dtype=np.int16)
            f = av.VideoFrame.from_ndarray(np.clip(yuv + grain, 0, 255).astype(np.uint8), format="yuv420p")
            f.pts, f.time_base = i, Fraction(1, 60)
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    os.replace(tmp, path)
    return path


def upscaled(path: Path) -> list[np.ndarray]:
    """Every frame of a (small) video as 3840x2160 yuv420p arrays."""
    with av.open(str(path)) as c:
        return [f.reformat(3840, 2160, format="yuv420p", interpolation="BICUBIC").to_ndarray()
                for f in c.decode(video=0)]
