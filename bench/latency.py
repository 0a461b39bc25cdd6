"""Latency statistics from per-call timings, and a plain timer for them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from bench.report.rows import LatencyStats


def summarize(seconds: Sequence[float]) -> LatencyStats:
    """Median, p90, p99, mean and min in milliseconds of per-call wall times in seconds."""
    if len(seconds) == 0:
        raise ValueError("no timings to summarise")
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if not np.all(np.isfinite(ms)) or np.any(ms < 0):
        raise ValueError("timings must be finite and non-negative")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyStats(median=float(p50), p90=float(p90), p99=float(p99),
                        mean=float(ms.mean()), min=float(ms.min()))


def time_calls(call: Callable[[], object], rounds: int) -> list[float]:
    """Wall time of each of `rounds` calls (perf_counter)."""
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        timings.append(time.perf_counter() - start)
    return timings
