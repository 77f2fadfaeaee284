"""Batches of augmented clips for the trainer, from DALI (GPU, or CPU) or from torch DataLoader workers.

Both back-ends consume `BatchSource` (same clips, same parameters) and yield `Batch`es with
  globals [B, T, V, 3, G, G] and locals [B, T, m, 3, L, L]
on the trainer's device. Step s of a run always receives batch s.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from dora.config import DataCfg
from dora.data.batches import BatchSource, HostBatch, substitutes
from dora.data.views_dali import view_params
from dora.data.views_torch import render_clip


@dataclass
class Batch:
    globals_: torch.Tensor
    locals_: torch.Tensor
    positions: list[int]
    bad: int  # clips replaced because they could not be read or decoded
    errors: list[str]


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(loader: str) -> str:
    """`train.loader`: auto (DALI when it is installed), dali or torch."""
    if loader == "auto":
        return "dali" if dali_available() else "torch"
    return loader


# ---------------------------------------------------------------- torch back-end


def decode(data: bytes) -> torch.Tensor:
    """JPEG bytes -> [3, H, W] uint8 (torchvision's libjpeg-turbo decoder)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


def render_host_batch(hb: HostBatch, d: DataCfg, global_views: int) -> dict:
    """Decode and augment a HostBatch on the CPU; clips that fail to decode are replaced like unreadable ones."""
    decoded, errors = [], list(hb.errors)
    for clip, frames in zip(hb.clips, hb.jpegs, strict=True):
        try:
            decoded.append([decode(f) for f in frames])
        except RuntimeError as e:
            decoded.append(None)
            errors.append(f"{clip.video} t={clip.times[0]:.2f}s: JPEG does not decode ({str(e).splitlines()[0]})")
    ok = [x is not None for x in decoded]
    idx = substitutes(ok, f"a batch ({errors[-1] if errors else ''})")
    views = [render_clip(decoded[i], hb.params[i], global_views, d.global_size, d.local_size) for i in idx]
    return {"globals": torch.stack([g for g, _ in views]), "locals": torch.stack([lo for _, lo in views]),
            "positions": [hb.clips[i].position for i in idx], "bad": hb.bad + ok.count(False),
            "errors": errors}


class _TorchBatches(torch.utils.data.IterableDataset):
    def __init__(self, source: BatchSource, start: int):
        self.source, self.start = source, start

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, n = (info.id, info.num_workers) if info else (0, 1)
        for b in itertools.count(self.start + wid, n):
            yield render_host_batch(self.source(b), self.source.data, self.source.stream.global_views)


# ---------------------------------------------------------------- DALI back-end


class _DaliFeed:
    """DALI external source: batch b, b+1, ... as JPEG bytes and per-view parameter vectors."""

    def __init__(self, source: BatchSource, start: int):
        self.source, self.b = source, start
        self.produced: collections.deque = collections.deque()

    def __call__(self):
        hb = self.source(self.b)
        self.b += 1
        self.produced.append(hb)
        views = self.source.stream.global_views
        jpegs = [np.frombuffer(f, np.uint8) for frames in hb.jpegs for f in frames]
        params = np.concatenate([view_params(p, views) for p in hb.params])  # [B*T, n_views, 12]
        return (jpegs, *[list(params[:, j]) for j in range(params.shape[1])])


class Loader:
    """Iterator of `Batch` starting at batch `start` (the checkpoint's step)."""

    def __init__(self, source: BatchSource, start: int, device: torch.device, backend: str = "torch",
                 workers: int = 0):
        d, stream = source.data, source.stream
        self.device, self.backend, self.batch_size, self.local_size = device, backend, stream.batch_size, d.local_size
        self.t, self.v, self.m = d.clip_frames, stream.global_views, d.local_crops
        if backend == "torch":
            self._it = iter(torch.utils.data.DataLoader(_TorchBatches(source, start), batch_size=None,
                                                        num_workers=workers, pin_memory=device.type == "cuda",
                                                        persistent_workers=workers > 0,
                                                        prefetch_factor=2 if workers > 0 else None))
        elif backend == "dali":
            from dora.data.views_dali import build_pipeline

            self.feed = _DaliFeed(source, start)
            n_views = self.v + self.m
            self.pipe = build_pipeline(self.feed, stream.batch_size * self.t, n_views, self.v,
                                       d.global_size, d.local_size,
                                       device.index if device.type == "cuda" else None,
                                       num_threads=max(2, workers), seed=stream.seed)
            self.pipe.build()
        else:
            raise ValueError(f"unknown loader backend {backend!r}")

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self.backend == "torch":
            out = next(self._it)
            return Batch(out["globals"].to(self.device, non_blocking=True),
                         out["locals"].to(self.device, non_blocking=True), out["positions"], out["bad"],
                         out["errors"])
        outs = self.pipe.run()
        hb = self.feed.produced.popleft()
        views = [dali_to_torch(o, self.device) for o in outs]
        b, t = self.batch_size, self.t
        g = torch.stack(views[:self.v], 1).reshape(b, t, self.v, *views[0].shape[1:])
        if self.m:
            lo = torch.stack(views[self.v:], 1).reshape(b, t, self.m, *views[self.v].shape[1:])
        else:
            lo = g.new_zeros(b, t, 0, 3, self.local_size, self.local_size)
        return Batch(g, lo, [c.position for c in hb.clips], hb.bad, hb.errors)


def dali_to_torch(tensor_list, device: torch.device) -> torch.Tensor:
    """A dense DALI TensorList (CPU or GPU) as a torch tensor on `device`, without a host round trip on GPU."""
    if hasattr(tensor_list, "as_tensor"):
        tensor_list = tensor_list.as_tensor()
    if device.type == "cuda":
        from nvidia.dali.plugin.pytorch import feed_ndarray

        out = torch.empty(tensor_list.shape(), dtype=torch.float32, device=device)
        feed_ndarray(tensor_list, out, cuda_stream=torch.cuda.current_stream(device))
        return out
    return torch.from_numpy(np.array(tensor_list))
