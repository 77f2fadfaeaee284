"""Contact sheets: clips as rows, their frames as columns, so a person can see what training sees."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

from pipeline.dataset.clips import Clip, ClipSampler
from pipeline.files import save_image_atomic

LABEL_H = 14


def clip_grid(sampler: ClipSampler, clips: list[Clip], path: Path, thumb_w: int = 160) -> Path:
    """Write a PNG with one row per clip (label: video, shot, start time) and T frames per row."""
    rows = []
    for clip in clips:
        thumbs = []
        for data in sampler.read(clip):
            im = Image.open(io.BytesIO(data)).convert("RGB")
            im.thumbnail((thumb_w, thumb_w * 4))
            thumbs.append(im)
        rows.append((clip, thumbs))
    th = max((im.height for _, ts in rows for im in ts), default=90)
    cols = max((len(ts) for _, ts in rows), default=1)
    sheet = Image.new("RGB", (cols * (thumb_w + 2), max(1, len(rows)) * (th + LABEL_H + 2)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for r, (clip, thumbs) in enumerate(rows):
        y = r * (th + LABEL_H + 2)
        draw.text((2, y + 1), f"{clip.video}  shot {clip.shot}  t0={clip.times[0]:.2f}s  "
                              f"dt={clip.times[1] - clip.times[0] if len(clip.times) > 1 else 0:.2f}s",
                  fill=(240, 240, 160))
        for c, im in enumerate(thumbs):
            sheet.paste(im, (c * (thumb_w + 2), y + LABEL_H))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image_atomic(path, sheet)
    return path
