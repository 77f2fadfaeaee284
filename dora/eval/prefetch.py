"""Ordered, bounded read-ahead: decode the next inputs in threads while the model runs."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch(fn: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[R]:
    """fn(item) for each item, in order, computed by `workers` threads at most 2·workers items ahead."""
    ahead = 2 * max(1, workers)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        queue = deque(pool.submit(fn, it) for it in items[:ahead])
        for nxt in items[ahead:]:
            yield queue.popleft().result()
            queue.append(pool.submit(fn, nxt))
        while queue:
            yield queue.popleft().result()
