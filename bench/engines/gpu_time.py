"""GPU compute time of an engine's calls, as measured by CUDA events, for extra_info."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def gpu_time_summary(times_ms: Sequence[float]) -> dict[str, float | int]:
    """Median/mean/min/max of per-call GPU times (ms); empty when nothing was timed.

    This is the device's own time between two events around the inference launch: it
    excludes host-device copies and Python overhead, so it sits below the wall-clock latency.
    """
    if not times_ms:
        return {}
    return {
        "gpu_compute_ms_median": statistics.median(times_ms),
        "gpu_compute_ms_mean": statistics.fmean(times_ms),
        "gpu_compute_ms_min": min(times_ms),
        "gpu_compute_ms_max": max(times_ms),
        "gpu_compute_calls": len(times_ms),
    }
