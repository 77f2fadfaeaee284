"""Host side of the loader: batch b of a rank's clip stream as JPEG bytes plus augmentation parameters.

Batch b holds the clips at positions [b*B, (b+1)*B) of `ClipSampler`'s stream for this rank, so
step s always reads batch s: resuming is exact and any number of workers can build batches
independently. A clip whose frames cannot be read (short read from a damaged shard, bytes that are
not a complete JPEG) is replaced by the next readable clip of the same batch, and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dora.config import Config, DataCfg
from dora.data.augment import ClipParams, clip_rng, draw_clip
from dora.data.stream import ClipStream
from pipeline.dataset import Clip, ClipSampler, ClipSpec, Dataset
from pipeline.errors import InputError


@dataclass
class HostBatch:
    clips: list[Clip]
    jpegs: list[list[bytes]]  # [B][T]
    params: list[ClipParams]
    bad: int = 0  # clips replaced because their bytes were unreadable
    errors: list[str] = field(default_factory=list)


def substitutes(ok: list[bool], what: str) -> list[int]:
    """For each clip of a batch, the index of the clip to use: itself when usable, else the next usable
    clip of the batch (wrapping around). `what` names the batch in the error when none is usable."""
    good = [i for i, x in enumerate(ok) if x]
    if not good:
        raise InputError(f"every clip of {what} is unusable; run `dora-data verify` on the shard folders")
    return [i if ok[i] else next((g for g in good if g > i), good[0]) for i in range(len(ok))]


def looks_like_jpeg(data: bytes) -> bool:
    """Cheap completeness check: SOI at the start and EOI at the end (a truncated copy fails it)."""
    return len(data) > 4 and data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"


class BatchSource:
    """Builds HostBatch b for one rank; picklable, so DataLoader workers and DALI can call it."""

    def __init__(self, shard_dirs: list[str], data: DataCfg, stream: ClipStream, rank: int = 0, world: int = 1):
        self.shard_dirs, self.data, self.stream = list(map(str, shard_dirs)), data, stream
        self.rank, self.world = rank, world
        self._sampler: ClipSampler | None = None
        self._sizes: dict[tuple[int, str], tuple[int, int]] | None = None

    @classmethod
    def from_config(cls, shard_dirs: list[str], cfg: Config, rank: int = 0, world: int = 1) -> BatchSource:
        return cls(shard_dirs, cfg.data, ClipStream.from_config(cfg), rank, world)

    def __getstate__(self):
        return {**self.__dict__, "_sampler": None, "_sizes": None}

    @property
    def sampler(self) -> ClipSampler:
        if self._sampler is None:
            spec = ClipSpec(self.data.clip_frames, self.data.clip_stride_s, self.data.clip_within_shot)
            self._sampler = ClipSampler([Dataset(d) for d in self.shard_dirs], spec, self.stream.seed,
                                        self.rank, self.world)
            if len(self._sampler) < self.stream.batch_size:
                raise InputError(f"{', '.join(self.shard_dirs)}: only {len(self._sampler)} clips of "
                                 f"{spec.frames} frames {spec.stride_s}s apart for this rank, fewer than one batch "
                                 f"({self.stream.batch_size}); lower train.batch_size or data.clip_frames")
        return self._sampler

    def frame_size(self, clip: Clip) -> tuple[int, int]:
        if self._sizes is None:
            self._sizes = {(d, v["name"]): (int(v["size"][0]), int(v["size"][1]))
                           for d, ds in enumerate(self.sampler.datasets) for v in ds.videos}
        return self._sizes[clip.dataset, clip.video]

    def params(self, clip: Clip) -> ClipParams:
        """The clip's augmentation, fixed by (seed, rank, position)."""
        rng = clip_rng(self.stream.seed, self.rank, clip.position)
        return draw_clip(rng, self.frame_size(clip), self.data.clip_frames, self.stream.global_views,
                         self.data)

    def read(self, clip: Clip) -> list[bytes] | str:
        """The clip's JPEGs, or a one-line reason why they cannot be used."""
        try:
            frames = self.sampler.read(clip)
        except OSError as e:
            return f"{clip.video} t={clip.times[0]:.2f}s: {e}"
        for t, data in zip(clip.times, frames, strict=True):
            if not looks_like_jpeg(data):
                return f"{clip.video} t={t:.2f}s: stored frame is not a complete JPEG"
        return frames

    def __call__(self, b: int) -> HostBatch:
        size = self.stream.batch_size
        clips = [self.sampler.clip(p) for p in range(b * size, (b + 1) * size)]
        frames = [self.read(c) for c in clips]
        errors = [f for f in frames if isinstance(f, str)]
        idx = substitutes([not isinstance(f, str) for f in frames], f"batch {b} ({'; '.join(errors[:1])})")
        clips, frames = [clips[j] for j in idx], [frames[j] for j in idx]
        return HostBatch(clips, frames, [self.params(c) for c in clips], bad=len(errors), errors=errors)

    def clips_per_epoch(self) -> int:
        """Clips of one epoch for this rank, in the unit `train.epoch_unit` names:
        stored_frames: one clip per valid stored start;
        source_frames: one per source frame, i.e. each video's valid starts x fps_source / fps_stored
        (the official loader starts a clip at every frame of the 60 fps source). The stream stays
        uniform over the valid starts: an epoch is just that many draws from it."""
        s = self.sampler
        if self.stream.epoch_unit == "stored_frames":
            return len(s)
        ratio = np.array([float(v["fps_source"]) / float(v["fps_stored"]) for ds in s.datasets for v in ds.videos])
        starts = np.bincount(s.starts[:, 0].astype(np.int64), minlength=len(s.videos))
        return int(starts @ ratio) // self.world

    def steps_per_epoch(self) -> int:
        return max(1, self.clips_per_epoch() // self.stream.batch_size)
