"""The linear probe's training views (DINO: RandomResizedCrop(224) + RandomHorizontalFlip) through DALI.

The crop box and the flip of every image are drawn on the host, with torchvision's RandomResizedCrop
algorithm (scale 0.08-1, log-uniform ratio 3/4-4/3, 10 tries, central fallback) and a torch.Generator
seeded per epoch, so an epoch's views do not depend on threads, prefetching or a resumption. DALI
decodes (nvJPEG on a GPU) and resamples the box to crop x crop, bilinear with antialias (torchvision:
PIL bilinear, antialiased), then flips and normalises.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from dora.eval.images import MEAN, STD, Split, image_size, run_batches


def random_resized_crop(width: int, height: int, gen: torch.Generator, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w): torchvision's RandomResizedCrop.get_params, drawing from `gen`."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(scale[0], scale[1], generator=gen).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=gen).item())
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            j = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class _TrainFeed:
    """Per batch: encoded files, ROI start/end [y, x] in source pixels, flip flags."""

    def __init__(self, split: Split, order: np.ndarray, batch_size: int, gen: torch.Generator):
        self.split, self.order, self.bs, self.gen = split, order, batch_size, gen
        self.starts = iter(range(0, len(order), batch_size))
        self.batches: list[np.ndarray] = []

    def __iter__(self):
        return self

    def __next__(self):
        start = next(self.starts)
        idx = self.order[start:start + self.bs]
        self.batches.append(idx)
        data, roi0, roi1, flips = [], [], [], []
        for i in idx:
            path = self.split.paths[i]
            w, h = image_size(path)
            top, left, ch, cw = random_resized_crop(w, h, self.gen)
            flip = int(torch.rand(1, generator=self.gen).item() < 0.5)
            data.append(np.fromfile(path, np.uint8))
            roi0.append(np.array([top, left], np.float32))
            roi1.append(np.array([top + ch, left + cw], np.float32))
            flips.append(np.array(flip, np.int32))
        return data, roi0, roi1, flips


def dali_train_batches(split: Split, order: np.ndarray, batch_size: int, workers: int, device: torch.device,
                       gen: torch.Generator, crop: int = 224) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """(views [B, 3, crop, crop] on `device`, indices) of `split` in `order`, augmented as DINO's linear probe."""
    from nvidia.dali import fn, pipeline_def, types


    gpu = device.type == "cuda"
    feed = _TrainFeed(split, np.asarray(order), batch_size, gen)

    @pipeline_def(batch_size=batch_size, num_threads=max(1, workers), device_id=(device.index or 0) if gpu else None,
                  prefetch_queue_depth=2, exec_dynamic=True)
    def pipe():
        data, r0, r1, flip = fn.external_source(source=feed, num_outputs=4, batch=True, parallel=False,
                                                dtype=[types.UINT8, types.FLOAT, types.FLOAT, types.INT32])
        images = fn.decoders.image(data, device="mixed" if gpu else "cpu", output_type=types.RGB,
                                   adjust_orientation=False)
        images = fn.resize(images, roi_start=r0, roi_end=r1, roi_relative=False, size=[crop, crop],
                           interp_type=types.INTERP_LINEAR, antialias=True)
        return fn.crop_mirror_normalize(images, mirror=flip, mean=[m * 255 for m in MEAN],
                                        std=[s * 255 for s in STD], output_layout="CHW", dtype=types.FLOAT)

    yield from run_batches(pipe(), feed, split, device)
