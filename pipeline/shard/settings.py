"""Every option that changes shard bytes, in one record stored with the data (and checked on reruns)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields, replace

from pipeline.shard.cuts import CutSettings
from pipeline.shard.faces import FaceSettings


@dataclass(frozen=True)
class ShardSettings:
    """Options of `dora-data shard`. Two runs into one folder must agree on all of them."""

    fps: float = 10.0  # stored frames per second
    short_side: int = 720  # stored frames' short side (never upscaled)
    quality: int = 90  # JPEG quality
    blur_faces: bool = False
    faces: FaceSettings = field(default_factory=FaceSettings)
    cuts: CutSettings = field(default_factory=CutSettings)
    clip_frames: int = 8  # T of the sampling contract
    clip_stride_s: float = 1.0
    window_s: float = 40.0  # length of one sample (a window of consecutive frames in one shot)
    segment_s: float = 120.0  # length of one work unit of source video
    shard_bytes: int = 1_000_000_000
    seed: int = 0  # order in which windows of all videos are mixed into shards
    decode_device: str = "cpu"  # cpu | cuda (| auto until `resolved()`): where decoding runs; not compared

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> ShardSettings:
        d = dict(d)
        d["faces"] = FaceSettings(**d.get("faces", {}))
        d["cuts"] = CutSettings(**d.get("cuts", {}))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def differences(self, other: ShardSettings) -> list[str]:
        """Names of options (dotted for nested ones) whose values differ, ignoring where the work runs (the
        face provider, the decode device)."""
        a, b = self.to_json(), other.to_json()
        out = []
        for k in a:
            if isinstance(a[k], dict):
                out += [f"{k}.{kk}" for kk in a[k] if a[k][kk] != b[k][kk] and kk != "provider"]
            elif a[k] != b[k] and k != "decode_device":
                out.append(k)
        return out

    def resolved(self) -> ShardSettings:
        """These settings with where the work runs decided here, once, before any work: the face provider
        (when faces are blurred) and the decode device become cpu or cuda; `cuda` that cannot run here is one
        InputError line, `auto` says its choice (a `note:` line). The choice is recorded, never compared."""
        from pipeline.shard.faces import resolve_provider
        from pipeline.shard.parts import local_rank
        from pipeline.video import resolve_decode_device

        faces = replace(self.faces, provider=resolve_provider(self.faces.provider)) if self.blur_faces else self.faces
        return replace(self, faces=faces, decode_device=resolve_decode_device(self.decode_device,
                                                                                local_rank(os.environ)))

    @property
    def margin_s(self) -> float:
        """Source decoded before and after each unit: warms the cut detector, finds neighbour faces."""
        return max(1.0, 3.0 / self.fps, self.cuts.min_shot_s + 0.5)


@dataclass(frozen=True)
class WindowGeometry:
    """How a shot's stored frames are cut into samples (windows), in stored-frame counts.

    Window w of a shot holds frames [w*hop, w*hop + length). Consecutive windows overlap by the
    span of one clip plus slack, so every clip that starts in [w*hop, (w+1)*hop) lies inside
    window w: a streaming reader can draw any clip from a single sample, and storage grows only
    by length/hop (about 1.2 with the defaults), not by T.
    """

    length: int
    hop: int

    @classmethod
    def from_settings(cls, s: ShardSettings, fps_stored: float) -> WindowGeometry:
        span = math.ceil((s.clip_frames - 1) * s.clip_stride_s * fps_stored) + 2
        length = max(math.ceil(s.window_s * fps_stored), span + 1)
        return cls(length=length, hop=max(1, length - span))

    def windows(self, n: int) -> list[tuple[int, int]]:
        """[start, end) ranges of the windows over n frames; the last one ends at n."""
        if n <= self.length:
            return [(0, n)]
        out, w = [], 0
        while True:
            start = w * self.hop
            end = min(start + self.length, n)
            out.append((start, end))
            if end == n:
                return out
            w += 1
