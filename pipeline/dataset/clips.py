"""The sampling contract: which clips exist, and the seeded order in which training draws them.

A clip is T stored frames, `stride_s` apart, inside one shot. Frame k of a clip that starts at
time t0 is the stored frame nearest to t0 + k*stride_s; the clip is valid when each of those
frames is in t0's shot (unless `within_shot` is False: the official loader ignores cuts) and within
half a stored-frame period of its target time. Every stored
frame that is followed by T-1 such frames starts exactly one clip, so an epoch (one clip per
valid start) covers each stored frame once as a start, as in the official code (there at 60 fps).

The trainer's loader and `dora-data clips` both draw through `ClipSampler`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.dataset.reader import Dataset


@dataclass(frozen=True)
class ClipSpec:
    frames: int = 8
    stride_s: float = 1.0
    within_shot: bool = True  # False: clips may cross shot cuts (the official loader ignores cuts)


def clip_rows(t: np.ndarray, shot: np.ndarray, fps_stored: float, spec: ClipSpec) -> np.ndarray:
    """Rows [n_valid, T] of all valid clips of one video, in order of their first frame."""
    n = len(t)
    if n == 0:
        return np.zeros((0, spec.frames), np.int64)
    tol = 0.5 / fps_stored + 1e-6
    rows = np.empty((n, spec.frames), np.int64)
    rows[:, 0] = np.arange(n)
    ok = np.ones(n, bool)
    for k in range(1, spec.frames):
        target = t + k * spec.stride_s
        hi = np.clip(np.searchsorted(t, target), 0, n - 1)
        lo = np.clip(hi - 1, 0, n - 1)
        pick = np.where(np.abs(t[hi] - target) < np.abs(t[lo] - target), hi, lo)
        ok &= ((shot[pick] == shot) | (not spec.within_shot)) & (np.abs(t[pick] - target) <= tol)
        rows[:, k] = pick
    return rows[ok]


@dataclass(frozen=True)
class Clip:
    position: int  # place in this rank's stream (epoch * len(sampler) + i)
    dataset: int  # which shard folder
    video: str
    shot: int
    rows: tuple[int, ...]  # rows of the video's frame table
    times: tuple[float, ...]  # source presentation times (s)
    frame_index: tuple[int, ...]  # frame numbers as decoded

    def to_json(self) -> dict:
        return {"video": self.video, "shot": self.shot, "times": list(self.times),
                "frame_index": list(self.frame_index), "position": self.position}


class ClipSampler:
    """Uniform over all valid starts of all videos of one or more shard folders.

    Epoch e is a permutation of all starts seeded by (seed, e); rank r of w takes every w-th entry
    of it, so ranks see disjoint clips and each rank's stream is fixed by (seed, rank, world).
    `clip(p)` gives the p-th clip of that stream, so a restart resumes at any position.
    """

    def __init__(self, datasets: list[Dataset], spec: ClipSpec = ClipSpec(), seed: int = 0, rank: int = 0,
                 world: int = 1):
        self.datasets, self.spec, self.seed, self.rank, self.world = datasets, spec, seed, rank, world
        parts, names = [], []
        for d, ds in enumerate(datasets):
            for v in ds.videos:
                tab = ds.table(v["name"])
                rows = clip_rows(tab.t, tab.shot, float(v["fps_stored"]), spec)
                parts.append(np.column_stack([np.full(len(rows), len(names)), rows]))
                names.append((d, v["name"]))
        self.videos = names
        self.starts = np.concatenate(parts) if parts else np.zeros((0, spec.frames + 1), np.int64)
        self.per_rank = len(self.starts) // world
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        """Clips per epoch for this rank."""
        return self.per_rank

    def _order(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.starts))
            self._perm = (epoch, perm[self.rank::self.world][: self.per_rank])
        return self._perm[1]

    def clip(self, position: int) -> Clip:
        if self.per_rank == 0:
            raise ValueError("no valid clips: every shot is shorter than one clip")
        epoch, i = divmod(position, self.per_rank)
        row = self.starts[self._order(epoch)[i]]
        d, video = self.videos[int(row[0])]
        tab = self.datasets[d].table(video)
        rows = row[1:]
        return Clip(position, d, video, int(tab.shot[rows[0]]), tuple(int(r) for r in rows),
                    tuple(float(x) for x in tab.t[rows]), tuple(int(x) for x in tab.index[rows]))

    def read(self, clip: Clip) -> list[bytes]:
        """The clip's JPEG bytes, one pread per frame."""
        ds = self.datasets[clip.dataset]
        return [ds.read_frame(clip.video, r) for r in clip.rows]
