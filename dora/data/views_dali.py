"""The augmentations of dora.augment as a DALI graph: nvJPEG decoding and every operation on the GPU.

One DALI sample is one stored frame. The host feeds the JPEG bytes and, per view, a parameter
vector; with `device_id` set, decoding runs on the GPU (`device="mixed"`), so does everything after
it, and the iterator hands torch tensors on the GPU to the trainer (no host round trip). With
`device_id=None` the same graph runs on the CPU (tests, machines without a GPU). The operation
definitions are those of dora/data/views_torch.py.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dora.data.augment import ClipParams, blur_window
from dora.data.normalization import IMAGENET_MEAN, IMAGENET_STD

PARAMS = 12  # y0, x0, y1, x1, flip, brightness, contrast, saturation, hue (degrees), sigma, window, solarise
MEAN255 = [m * 255 for m in IMAGENET_MEAN]
STD255 = [s * 255 for s in IMAGENET_STD]


def view_params(p: ClipParams, views: int) -> np.ndarray:
    """[T, V + m, 12] float32 parameter vectors of one clip, in the graph's order."""
    t = p.global_box.shape[0]
    boxes = np.concatenate([p.global_box, p.local_box], 1)
    flips = np.concatenate([p.global_flip, p.local_flip], 1)
    out = np.zeros((t, boxes.shape[1], PARAMS), np.float32)
    out[..., 0], out[..., 1], out[..., 2], out[..., 3] = boxes[..., 1], boxes[..., 0], boxes[..., 3], boxes[..., 2]
    out[..., 4] = flips
    out[..., 5:8] = p.color[..., :3]
    out[..., 8] = p.color[..., 3] * 360.0
    out[..., 9] = p.blur
    out[..., 10] = np.vectorize(blur_window)(p.blur)
    out[..., 11] = p.solarize
    return out


def build_pipeline(source: Callable, n_frames: int, n_views: int, global_views: int, global_size: int,
                   local_size: int, device_id: int | None, num_threads: int = 4, prefetch: int = 2, seed: int = 0):
    """A DALI pipeline whose outputs are the n_views views [N, 3, S, S] of N = n_frames frames.

    `source()` returns (jpegs [N], params_0 [N], ..., params_{n_views-1} [N]) per batch.
    """
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali import math as dmath

    gpu = device_id is not None

    @pipeline_def(batch_size=n_frames, num_threads=num_threads, device_id=device_id, prefetch_queue_depth=prefetch,
                  seed=seed, exec_dynamic=True)
    def pipe():
        inputs = fn.external_source(source=source, num_outputs=1 + n_views, batch=True, parallel=False,
                                    dtype=[types.UINT8] + [types.FLOAT] * n_views)
        images = fn.decoders.image(inputs[0], device="mixed" if gpu else "cpu", output_type=types.RGB)
        outs = []
        for j, p in enumerate(inputs[1:]):
            size = global_size if j < global_views else local_size
            x = fn.resize(images, roi_start=p[0:2], roi_end=p[2:4], roi_relative=False, size=[size, size],
                          antialias=True, dtype=types.FLOAT)
            x = dmath.clamp(fn.brightness_contrast(x, brightness=p[5], contrast=p[6], contrast_center=127.5), 0, 255)
            x = dmath.clamp(fn.hsv(x, saturation=p[7], hue=p[8], dtype=types.FLOAT), 0, 255)
            x = fn.gaussian_blur(x, sigma=p[9], window_size=fn.cast(p[10], dtype=types.INT32))
            sol = fn.reshape(p[11:12], shape=[1, 1, 1])
            x = x + (sol.gpu() if gpu else sol) * (x >= 127.5) * (255.0 - 2.0 * x)
            outs.append(fn.crop_mirror_normalize(x, mirror=fn.cast(p[4], dtype=types.INT32), mean=MEAN255,
                                                 std=STD255, output_layout="CHW", dtype=types.FLOAT))
        return tuple(outs)

    return pipe()

