"""Energy from power samples: the integral over the window, never a moving average.

Samples arrive at irregular times (a busy board delays a tick), so every figure here is
weighted by time: trapezoids between samples, the first and last sample held to the
window's edges, and anything past the edges cut off, so that the energy covers exactly
the window the inferences were counted in.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence


def trapezoid_j(times: Sequence[float], watts: Sequence[float]) -> float:
    """Integral of power (W) over the samples' own span (s), in joules."""
    _check_series(times, watts)
    return sum(
        0.5 * (watts[i] + watts[i + 1]) * (times[i + 1] - times[i]) for i in range(len(times) - 1)
    )


def window_energy_j(times: Sequence[float], watts: Sequence[float], t0: float, t1: float) -> float:
    """Energy over [t0, t1] of the sampled power: linear between samples, the first and
    last sample held to the edges; samples outside the window are cut at its edges."""
    _check_series(times, watts)
    if not times:
        raise ValueError("window_energy_j needs at least one sample, got none")
    if t1 < t0:
        raise ValueError(f"window ends ({t1}) before it starts ({t0})")
    points = [t0, *(t for t in times if t0 < t < t1), t1]
    return trapezoid_j(points, [power_at(times, watts, t) for t in points])


def power_at(times: Sequence[float], watts: Sequence[float], t: float) -> float:
    """The sampled power at time t: linear between samples, held beyond the ends."""
    i = bisect.bisect_right(times, t)
    if i == 0:
        return watts[0]
    if i == len(times):
        return watts[-1]
    ta, tb = times[i - 1], times[i]
    return watts[i - 1] + (watts[i] - watts[i - 1]) * (t - ta) / (tb - ta)


def summarize_rails(
    times: Sequence[float], samples: Sequence[Mapping[str, float]], t0: float, t1: float
) -> dict[str, tuple[float, float]]:
    """Per rail (W samples keyed by rail name): (energy J, mean W) over [t0, t1].

    A rail missing from some samples is integrated over the samples that have it.
    """
    names = sorted({name for sample in samples for name in sample})
    window = t1 - t0
    out: dict[str, tuple[float, float]] = {}
    for name in names:
        ts = [t for t, s in zip(times, samples, strict=True) if name in s]
        ws = [s[name] for s in samples if name in s]
        energy = window_energy_j(ts, ws, t0, t1)
        out[name] = (energy, energy / window if window > 0 else ws[0])
    return out


def counter_delta(previous: int, current: int, max_range: int) -> tuple[int, bool]:
    """Increase of a wrapping energy counter between two reads: (delta, wrapped).

    A counter that went down wrapped once at max_range; the caller reads often enough
    that it cannot wrap twice between two reads.
    """
    if current >= previous:
        return current - previous, False
    if max_range <= 0:
        raise ValueError(f"counter went from {previous} to {current} with no max_range to unwrap")
    return current + max_range - previous, True


def median_interval_s(times: Sequence[float]) -> float | None:
    """The typical spacing of the samples (robust to one late tick), None for < 2 samples."""
    gaps = sorted(b - a for a, b in zip(times, times[1:], strict=False))
    return gaps[len(gaps) // 2] if gaps else None


def _check_series(times: Sequence[float], watts: Sequence[float]) -> None:
    if len(times) != len(watts):
        raise ValueError(f"{len(times)} sample times but {len(watts)} power values")
    if any(b < a for a, b in zip(times, times[1:], strict=False)):
        raise ValueError("sample times must not go backwards")
