"""Work prepared a few items ahead of its consumer, in a thread pool, results in order.

For work that mostly runs outside the GIL (Pillow's decoding and resizing, zlib, large
numpy operations): the pool overlaps it with whatever the consumer does with each result,
and at most `ahead` results wait in memory.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Threads for such work: the cores, up to 4."""
    return min(4, os.cpu_count() or 1)


def ordered_ahead(fn: Callable[[T], R], items: Iterable[T], *, ahead: int = 8,
                  workers: int | None = None) -> Iterator[R]:
    """fn(item) for each item, in order, at most `ahead` computed before they are taken.
    An exception in fn is raised where its result is taken; closing the iterator early
    cancels what has not started."""
    with ThreadPoolExecutor(max_workers=max(1, workers or default_workers())) as pool:
        upcoming = iter(items)
        pending = deque(pool.submit(fn, item) for _, item in zip(range(max(1, ahead)), upcoming))
        try:
            while pending:
                result = pending.popleft().result()
                for item in upcoming:  # one more submitted for each one taken
                    pending.append(pool.submit(fn, item))
                    break
                yield result
        finally:
            for future in pending:
                future.cancel()
