"""DoRA⋆ crops (issue 19, point 7): on images, boxes are drawn in pixels as torchvision's
RandomResizedCrop draws them (DINO's recipe), not on the image seen as a square.

The boxes of `ImageSource.params` for a real 4:3 and a real 3:4 JPEG are compared with
`torchvision.transforms.RandomResizedCrop.get_params` on an image of the same size: the
distributions of the aspect ratio in pixels and of the area fraction must agree (quantiles and
the two-sample Kolmogorov-Smirnov statistic). Video clips keep the official geometry: crops drawn
on the 300x300 pre-crop, so their ratios are relative to the pre-crop box.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import encode_jpeg
from torchvision.transforms import RandomResizedCrop

from dora.config import load_config
from dora.data.augment import clip_rng, draw_clip, random_resized_crop
from dora.data.images import ImageSource
from pipeline.video.samples import sample_video
from tests.conftest import ROOT
from tests.videos import decode_all

CONFIG = ROOT / "configs" / "dora_star_vits16.yaml"
SIZES = ((640, 480), (480, 640))  # (width, height): 4:3 and 3:4
DRAWS = 1500  # images drawn per size; 2 global and 6 local boxes each


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    grid = np.concatenate([a, b])
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two real JPEGs (a frame of bikes.mp4) of 640x480 and 480x640."""
    root = tmp_path_factory.mktemp("star")
    for w, h in SIZES:
        _, (f, *_) = decode_all(sample_video("bikes.mp4"), size=(w, h))
        data = encode_jpeg(torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1), quality=90)
        (root / f"img_{w}x{h}.jpg").write_bytes(data.numpy().tobytes())
    return root


def ours(folder: Path) -> dict[tuple[int, int], dict[str, np.ndarray]]:
    """Boxes (x0, y0, x1, y1) of our DoRA⋆ image source, global and local, per image size."""
    cfg = load_config(CONFIG, ["train.batch_size=1"])
    source = ImageSource.from_config(folder, cfg)
    out: dict = {size: {"global": [], "local": []} for size in SIZES}
    for position in range(2 * DRAWS):
        clip = source.clip(position)
        _, size = source.read(clip)
        p = source.params(clip, size)
        out[size]["global"].append(p.global_box[0])
        out[size]["local"].append(p.local_box[0])
    return {s: {k: np.concatenate(v) for k, v in d.items()} for s, d in out.items()}


def torchvision_boxes(size: tuple[int, int], scale: tuple[float, float], n: int, seed: int) -> np.ndarray:
    """n boxes of torchvision's RandomResizedCrop.get_params (DINO's crops) on a width x height image."""
    torch.manual_seed(seed)
    img = torch.empty(3, size[1], size[0])
    boxes = []
    for _ in range(n):
        i, j, h, w = RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3])
        boxes.append((j, i, j + w, i + h))
    return np.array(boxes, float)


def shape(boxes: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(aspect ratio w/h in pixels, area fraction of the image) of each box."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return w / h, w * h / (size[0] * size[1])


def test_image_crops_follow_torchvisions_random_resized_crop(folder):
    cfg = load_config(CONFIG)
    drawn = ours(folder)
    for size in SIZES:
        for kind, scale in (("global", cfg.data.global_scale), ("local", cfg.data.local_scale)):
            mine = drawn[size][kind]
            assert len(mine) >= 2 * DRAWS
            assert (mine[:, :2] >= -1e-9).all() and (mine[:, 2] <= size[0] + 1e-9).all() \
                and (mine[:, 3] <= size[1] + 1e-9).all(), "boxes leave the image"
            ref = torchvision_boxes(size, scale, len(mine), seed=size[0])
            (ra, fa), (rb, fb) = shape(mine, size), shape(ref, size)
            q = [0.05, 0.25, 0.5, 0.75, 0.95]
            what = f"{kind} crops of a {size[0]}x{size[1]} image"
            # aspect ratios: DINO's lie in [3/4, 4/3] in pixels, median near 1
            assert ra.min() > 0.75 - 0.01 and ra.max() < 4 / 3 + 0.01, f"{what}: ratios {ra.min():.2f}-{ra.max():.2f}"
            assert np.allclose(np.quantile(np.log(ra), q), np.quantile(np.log(rb), q), atol=0.04), \
                f"{what}: ratio quantiles {np.quantile(ra, q).round(2)} vs torchvision {np.quantile(rb, q).round(2)}"
            assert ks_statistic(ra, rb) < 0.05, f"{what}: KS of ratios {ks_statistic(ra, rb):.3f}"
            assert np.allclose(np.quantile(fa, q), np.quantile(fb, q), atol=0.03), \
                f"{what}: area quantiles {np.quantile(fa, q).round(3)} vs {np.quantile(fb, q).round(3)}"
            assert ks_statistic(fa, fb) < 0.05, f"{what}: KS of areas {ks_statistic(fa, fb):.3f}"


def test_image_with_extreme_aspect_uses_the_whole_image_as_dino_does(folder):
    """A 2:1 image: no centre pre-crop to 4:3 first; crops may lie anywhere in the whole width."""
    source = ImageSource.from_config(folder, load_config(CONFIG, ["train.batch_size=1"]))
    boxes = np.concatenate([source.params(source.clip(p), (800, 400)).global_box[0] for p in range(400)])
    ratio = (boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1])
    assert ratio.min() > 0.74 and ratio.max() < 1.34
    assert boxes[:, 0].min() < 50 and boxes[:, 2].max() > 750  # reaches both ends of the 800 px width


def test_video_crops_keep_the_official_square_precrop():
    """Video (official DoRA): global crops are a RandomResizedCrop of the 300x300 pre-crop, so their
    ratio relative to the pre-crop box, not in pixels, lies in [3/4, 4/3]."""
    cfg = load_config(ROOT / "configs" / "dora_vits16.yaml")
    side = float(cfg.data.precrop_size)
    for p in range(50):
        got = draw_clip(clip_rng(0, 0, p), (3840, 2160), cfg.data.clip_frames, 2, cfg.data)
        rng = clip_rng(0, 0, p)  # the same draws, composed by hand
        pre = random_resized_crop(rng, 3840, 2160, cfg.data.precrop_scale)
        for v in range(2):
            g = random_resized_crop(rng, side, side, cfg.data.global_scale)
            sx, sy = (pre[2] - pre[0]) / side, (pre[3] - pre[1]) / side
            want = [pre[0] + g[0] * sx, pre[1] + g[1] * sy, pre[0] + g[2] * sx, pre[1] + g[3] * sy]
            assert np.allclose(got.global_box[:, v], want)
