"""The time grid of stored frames: slot k of a video sampled at fps is the time start_s + k/fps."""

from __future__ import annotations

import math


def stored_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) with the short side scaled to `short_side`, never upscaled, both even."""
    scale = min(1.0, short_side / min(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def slot(t: float, start_s: float, fps: float) -> int:
    """Index of the 1/fps time slot [start_s + k/fps, start_s + (k+1)/fps) that holds t (used by
    `analyze`'s frame sampling; `shard` stores the frame on screen at each slot time, see first_slot)."""
    return math.floor((t - start_s) * fps + 1e-6)


def first_slot(t: float, start_s: float, fps: float) -> int:
    """Index of the first 1/fps slot whose time start_s + k/fps is >= t: a frame shown from t is on
    screen at slots first_slot(t), first_slot(t) + 1, ... until the next frame's first slot."""
    return math.ceil((t - start_s) * fps - 1e-6)


def slot_time(k: int, start_s: float, fps: float) -> float:
    """Time of slot k (the same float in every unit and process), rounded to the nanosecond so that a
    slot that falls on a frame's or cut's time (pts * time_base) compares equal to it."""
    return round(start_s + k / fps, 9)
