"""DoRA⋆ (appendix D): DoRA on an image folder, without tracking. Each image is a one-frame clip.

`ImageSource` has the interface of `dora.batches.BatchSource` (batch b of a rank's stream as JPEG
bytes plus augmentation parameters), so both loader back-ends (torch, DALI: it decodes the files'
JPEG bytes itself, nvJPEG on a GPU) and the whole trainer run unchanged. With T = 1, eq. 6 tracks
the objects on the same image (K̃_t = K̃ of X), the student sees X masked with each object (eq. 7)
and the losses are eqs. 8-9, as the appendix describes.

The folder is an ImageFolder (class sub-folders; labels are not used) or any tree of JPEG files
(.jpg/.jpeg, any case), read recursively. Epoch e is a permutation of all images seeded by
(seed, e); rank r of w takes every w-th entry, as `pipeline.clips.ClipSampler` does for clips.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dora.config import Config, ConfigError, DataCfg
from dora.data.augment import ClipParams, clip_rng, draw_clip
from dora.data.batches import HostBatch, looks_like_jpeg, substitutes
from dora.data.stream import ClipStream
from pipeline.dataset import Clip
from pipeline.errors import InputError

SUFFIXES = (".jpg", ".jpeg")
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def find_images(root: str | Path) -> list[str]:
    """Paths of all JPEG files under `root` relative to it, sorted; one-line InputError if there are none."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; give --images an ImageFolder or a folder of JPEG files")
    files = sorted(str(Path(d, f).relative_to(root)) for d, _, names in os.walk(root, followlinks=True)
                   for f in names if f.lower().endswith(SUFFIXES) and not f.startswith("."))
    if not files:
        raise InputError(f"{root}: no JPEG files (.jpg, .jpeg) in it or its sub-folders; give --images a folder "
                         "of JPEG images (e.g. ImageNet's train/)")
    return files


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header (SOFn), without decoding; ValueError if there is none."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no start-of-image marker)")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"corrupt JPEG header at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _SOF and i + 9 <= len(data):
            h, w = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            if w > 0 and h > 0:
                return w, h
            raise ValueError("JPEG frame header gives an empty image")
        if marker == 0xDA or length < 2:
            break
        i += 2 + length
    raise ValueError("no JPEG frame header")


class ImageSource:
    """HostBatch b of one rank's stream of one-image clips; picklable (DataLoader workers, DALI)."""

    def __init__(self, root: str | Path, data: DataCfg, stream: ClipStream, rank: int = 0, world: int = 1):
        if data.clip_frames != 1:
            raise ConfigError(f"--images trains DoRA⋆ on one-frame clips, but data.clip_frames={data.clip_frames}; "
                              "use --config configs/dora_star_vits16.yaml or data.clip_frames=1")
        self.root, self.data, self.stream, self.rank, self.world = Path(root), data, stream, rank, world
        self.files = find_images(self.root)
        self._orders: dict[int, np.ndarray] = {}
        if len(self) < stream.batch_size:
            raise InputError(f"{self.root}: {len(self.files)} JPEG files give {len(self)} images for this rank, "
                             f"fewer than one batch ({stream.batch_size}); add images or lower train.batch_size")

    @classmethod
    def from_config(cls, root: str | Path, cfg: Config, rank: int = 0, world: int = 1) -> ImageSource:
        return cls(root, cfg.data, ClipStream.from_config(cfg), rank, world)

    def __len__(self) -> int:
        """Images per epoch for this rank."""
        return len(self.files) // self.world

    def __getstate__(self):
        return {**self.__dict__, "_orders": {}}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders.clear()
            rng = np.random.Generator(np.random.PCG64([self.stream.seed, epoch]))
            self._orders[epoch] = rng.permutation(len(self.files))[self.rank::self.world][:len(self)]
        return self._orders[epoch]

    def clip(self, position: int) -> Clip:
        """The position-th one-image clip of this rank's stream."""
        epoch, i = divmod(position, len(self))
        idx = int(self._order(epoch)[i])
        return Clip(position=position, dataset=0, video=self.files[idx], shot=0, rows=(idx,), times=(0.0,),
                    frame_index=(0,))

    def read(self, clip: Clip) -> tuple[bytes, tuple[int, int]] | str:
        """The image's JPEG bytes and (width, height), or a one-line reason why it cannot be used."""
        path = self.root / clip.video
        try:
            data = path.read_bytes()
            size = jpeg_size(data)
        except (OSError, ValueError) as e:
            return f"{path}: {e}"
        if not looks_like_jpeg(data):
            return f"{path}: not a complete JPEG (no end-of-image marker)"
        return data, size

    def params(self, clip: Clip, size: tuple[int, int]) -> ClipParams:
        """The image's augmentation, fixed by (seed, rank, position); crops drawn in the image's
        pixels as DINO's RandomResizedCrop draws them (not on the image seen as a square)."""
        rng = clip_rng(self.stream.seed, self.rank, clip.position)
        return draw_clip(rng, size, 1, self.stream.global_views, self.data, pixels=True)

    def __call__(self, b: int) -> HostBatch:
        n = self.stream.batch_size
        clips = [self.clip(p) for p in range(b * n, (b + 1) * n)]
        got = [self.read(c) for c in clips]
        errors = [g for g in got if isinstance(g, str)]
        idx = substitutes([not isinstance(g, str) for g in got], f"image batch {b} ({'; '.join(errors[:1])})")
        clips, got = [clips[j] for j in idx], [got[j] for j in idx]
        params = [self.params(c, size) for c, (_, size) in zip(clips, got, strict=True)]
        return HostBatch(clips, [[data] for data, _ in got], params, bad=len(errors), errors=errors)

    def clips_per_epoch(self) -> int:
        """One one-frame clip per image of this rank's share (DoRA*: train.epoch_unit does not apply)."""
        return len(self)

    def steps_per_epoch(self) -> int:
        return max(1, self.clips_per_epoch() // self.stream.batch_size)
