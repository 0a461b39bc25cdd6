"""Activation amax from an |x| histogram: max, entropy (KL), percentile and MSE.

Conventions follow NVIDIA's pytorch-quantization (calib/histogram.py), the reference for
TensorRT's histogram calibration, so that the same histogram gives the same amax:
entropy and mse consider thresholds from bin `start_bin` upward; entropy returns the upper
edge of the last kept bin and copies bin 1's count into bin 0; mse returns a bin centre.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.errors import ConfigError
from bench.quant.histogram import AbsHistogram

# Candidate amax values evaluated at once by mse: bounds the (candidates x bins) matrix.
_MSE_BLOCK = 128


@dataclass(frozen=True)
class CalibSettings:
    """What a calibrator may use besides the histogram."""

    percentile: float = 99.99
    num_quant_levels: int = 128  # non-negative levels of the signed integer type
    start_bin: int = 128


# amax from an |x| histogram (never called with an all-zero histogram).
Calibrator = Callable[[AbsHistogram, CalibSettings], float]


def _amax_max(hist: AbsHistogram, settings: CalibSettings) -> float:
    return hist.amax_seen


# The registry: adding a calibrator is one function plus one line here; its variant
# (int8-<name>) then exists everywhere (bench.variants derives it).
CALIBRATORS: dict[str, Calibrator] = {
    "max": _amax_max,
    "entropy": lambda h, s: _amax_entropy(h, s.num_quant_levels, s.start_bin),
    "percentile": lambda h, s: _amax_percentile(h, s.percentile),
    "mse": lambda h, s: _amax_mse(h, s.num_quant_levels, s.start_bin),
}
METHODS = tuple(CALIBRATORS)  # the built-in ones, in report order


def compute_amax(
    hist: AbsHistogram,
    method: str,
    *,
    percentile: float = 99.99,
    num_quant_levels: int = 128,
    start_bin: int = 128,
) -> float:
    """The activation amax chosen by `method` from the histogram (0.0 if every value was 0).

    num_quant_levels is the number of non-negative levels of the signed integer type
    (128 for int8: entropy merges into 128 levels, mse rounds to 127 steps).
    """
    _check_options(method, percentile, num_quant_levels, start_bin)
    if hist.amax_seen == 0.0:
        return 0.0
    settings = CalibSettings(percentile, num_quant_levels, start_bin)
    return float(CALIBRATORS[method](hist, settings))


def _check_options(method: str, percentile: float, levels: int, start_bin: int) -> None:
    if method not in CALIBRATORS:
        raise ConfigError(f"calibration method: got {method!r}, "
                          f"expected one of {list(CALIBRATORS)}")
    if not 0.0 < percentile <= 100.0:
        raise ConfigError(f"calibration percentile: got {percentile}, expected 0 < p <= 100")
    if levels < 2:
        raise ConfigError(f"num_quant_levels: got {levels}, expected >= 2")
    if start_bin < 1:
        raise ConfigError(f"calibration start_bin: got {start_bin}, expected >= 1")


def _amax_percentile(hist: AbsHistogram, percentile: float) -> float:
    """|x| below which `percentile` % of the values lie, interpolated linearly inside its bin."""
    cumulative = np.cumsum(hist.counts, dtype=np.float64)
    target = percentile / 100.0 * cumulative[-1]
    k = min(int(np.searchsorted(cumulative, target, side="left")), hist.bins - 1)
    below = cumulative[k - 1] if k > 0 else 0.0
    fraction = (target - below) / hist.counts[k] if hist.counts[k] else 1.0
    # NVIDIA returns the bin's lower edge; interpolating is closer to the sample percentile.
    # The cap makes percentile=100 the exact max rather than the upper edge of its bin.
    return float(min((k + fraction) * hist.bin_width, hist.amax_seen))


def _amax_entropy(hist: AbsHistogram, levels: int, start_bin: int) -> float:
    """TensorRT's KL method: the threshold whose `levels`-level quantization of the clipped
    distribution P diverges least from P.

    For candidate i, P is counts[:i] with the clipped tail added to its last bin; Q merges
    counts[:i] into `levels` groups and spreads each group's mass evenly over the group's
    non-empty bins. KL(P||Q) comes from prefix sums per group (O(levels) per candidate)
    rather than by building P and Q. Ties go to the widest threshold, as NVIDIA does.
    """
    counts = hist.counts.astype(np.float64)
    counts[0] = counts[1]  # NVIDIA: the zero bin (ReLU, padding) would dominate P
    candidates = np.arange(min(start_bin, hist.bins), hist.bins + 1)
    divergence = _kl_per_candidate(counts, candidates, levels)
    finite = np.isfinite(divergence)
    if not finite.any():
        return hist.amax_seen
    best = np.flatnonzero(finite & (divergence <= divergence[finite].min() + 1e-12))[-1]
    return float(candidates[best]) * hist.bin_width


def _kl_per_candidate(counts: np.ndarray, candidates: np.ndarray, levels: int) -> np.ndarray:
    """KL(P||Q) for every candidate threshold i (in bins), see _amax_entropy."""
    total = counts.sum()
    mass, nonempty, mass_log_mass = _prefix_sums(counts)
    bounds = _group_bounds(candidates, levels)
    group_mass = np.diff(mass[bounds], axis=1)
    group_bins = np.diff(nonempty[bounds], axis=1)
    group_mlm = np.diff(mass_log_mass[bounds], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # sum over non-empty bins j < i of c_j log(c_j / q_j), with q_j = group mass / bins
        per_group = group_mlm - group_mass * np.log(group_mass / group_bins)
        inner = np.where(group_mass > 0, per_group, 0.0).sum(axis=1)
        last = candidates - 1
        q_last = _last_bin_q(counts, group_mass, group_bins, candidates)
        p_last = counts[last] + (total - mass[candidates])
        s = inner - _xlog(counts[last], q_last) + _xlog(p_last, q_last)
        return s / total + np.log(mass[candidates] / total)


def _prefix_sums(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prefix sums (with a leading 0) of c, of [c > 0] and of c log c."""
    with np.errstate(divide="ignore", invalid="ignore"):
        c_log_c = np.where(counts > 0, counts * np.log(counts), 0.0)
    sums = [np.concatenate(([0.0], np.cumsum(a))) for a in (counts, counts > 0, c_log_c)]
    return sums[0], sums[1], sums[2]


def _group_bounds(candidates: np.ndarray, levels: int) -> np.ndarray:
    """[candidate, g] = first bin of group g: bin j < i belongs to group floor(j * levels / i)."""
    g = np.arange(levels + 1, dtype=np.int64)
    return (g[None, :] * candidates[:, None] + levels - 1) // levels


def _last_bin_q(
    counts: np.ndarray, group_mass: np.ndarray, group_bins: np.ndarray, candidates: np.ndarray
) -> np.ndarray:
    """Q's (unnormalised) value in bin i - 1: its group's mean, or 0 if the bin is empty."""
    levels = group_mass.shape[1]
    rows = np.arange(candidates.size)
    g = ((candidates - 1) * levels) // candidates
    with np.errstate(divide="ignore", invalid="ignore"):
        q = group_mass[rows, g] / group_bins[rows, g]
    return np.where(counts[candidates - 1] > 0, q, 0.0)


def _xlog(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """p log(p / q), 0 where p == 0, inf where p > 0 and q == 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * np.log(p / q), 0.0)


def _amax_mse(hist: AbsHistogram, levels: int, start_bin: int) -> float:
    """The bin centre that, as amax, minimises the count-weighted squared error of
    fake-quantizing every bin centre (rounding to levels - 1 steps, clipping above amax)."""
    edges = hist.edges
    centres = (edges[:-1] + edges[1:]) / 2.0
    candidates = centres[min(start_bin, hist.bins - 1) :]
    weights = hist.counts.astype(np.float64)
    errors = np.concatenate(
        [
            _quant_error(centres, weights, candidates[k : k + _MSE_BLOCK], levels - 1)
            for k in range(0, candidates.size, _MSE_BLOCK)
        ]
    )
    return float(candidates[int(np.argmin(errors))])


def _quant_error(x: np.ndarray, weights: np.ndarray, amaxes: np.ndarray, steps: int) -> np.ndarray:
    """Weighted sum of squared fake-quantization error of x, for each amax."""
    scale = steps / amaxes[:, None]
    quantized = np.minimum(np.round(x[None, :] * scale), steps) / scale
    return ((quantized - x[None, :]) ** 2 * weights[None, :]).sum(axis=1)
