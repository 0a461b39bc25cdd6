"""Latency statistics from per-call timings, and the end-to-end measurement."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in milliseconds over `count` timed calls."""

    median: float
    p90: float
    p99: float
    mean: float
    min: float
    count: int

    @classmethod
    def from_seconds(cls, seconds: Sequence[float]) -> LatencyStats:
        if len(seconds) == 0:
            raise ValueError("no timings to summarise")
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        if not np.all(np.isfinite(ms)) or np.any(ms < 0):
            raise ValueError("timings must be finite and non-negative")
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(ms.mean()), float(ms.min()), len(ms))

    def as_dict(self) -> dict[str, float]:
        data = asdict(self)
        data.pop("count")
        return data


def time_calls(call: Callable[[], object], rounds: int) -> list[float]:
    """Wall time of each of `rounds` calls (perf_counter)."""
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        timings.append(time.perf_counter() - start)
    return timings
