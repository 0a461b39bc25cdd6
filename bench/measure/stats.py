"""Statistics of latency: medians with confidence intervals, paired speedups, baseline verdicts.

How verdicts are made, and why they survive a machine whose speed drifts:

* A latency figure is the median of its timed calls, with the distribution-free
  order-statistic (binomial) confidence interval of the median: no assumption on the shape
  of the distribution, only that the calls are independent draws from one distribution.
* A comparison is only made between quantities measured close together in time. The
  measurer times alternating short blocks, reference, variant, reference, ...; each block
  gives one median. A variant block divided by the mean of its two neighbouring reference
  blocks cancels any drift that is slow next to one block triplet (a linear trend cancels
  exactly). The speedup against fp32 is the median of those paired ratios.
* Across runs (another day, a baseline) the reference is a fixed speed probe that does not
  change with the model under test (bench.measure.probe). The per-block probe-normalised
  latency (variant block median / each adjacent probe block median) is a property of the
  model on this kind of machine, not of how fast the machine happened to be that minute.
* A baseline verdict compares the median normalised latency now with the baseline's: the
  ratio of the two medians with a seeded percentile-bootstrap interval (each side resampled
  on its own, by whole blocks; the same inputs give the same verdict). *regression* when
  the whole interval lies above 1 + tolerance, *no change* when its upper end is at most
  1 + tolerance, *inconclusive* when it straddles 1 + tolerance, *not comparable* when the
  probe's own speed (its lower-quartile block) moved by more than a factor between the runs
  (another machine or power mode).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bench.errors import BenchError

MEDIAN_METHOD = "order-statistic"
RATIO_METHOD = "paired-ratio order-statistic"
BOOTSTRAP_METHOD = "bootstrap ratio of medians"

VerdictKind = Literal["regression", "no change", "inconclusive", "not comparable"]

# How far the probe's own speed may move between two runs before latency is "not
# comparable" (another machine or power mode). Not 1.5: the 2-core VM's slow mode alone
# moves a detector's lower-quartile block 1.6-1.7x, and the probe, a detector of the same
# precision, cancels it (self-test: 2 of 40 slowdown trials "not comparable" at 1.5).
PROBE_LIMIT = 2.0


class StatsError(BenchError):
    """Samples that no statistic can be computed from (empty, non-finite, mismatched)."""

    kind = "input"


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval.

    confidence is the coverage the interval really has: at least the one asked for, or,
    when there are too few samples for it, the (lower) coverage of the widest interval the
    samples allow (then method says so).
    """

    estimate: float
    low: float
    high: float
    confidence: float
    method: str
    n: int

    @property
    def rel_halfwidth(self) -> float:
        """Half the interval's width relative to the estimate (0.03 for ±3 %)."""
        if self.estimate == 0:
            return math.inf
        return (self.high - self.low) / 2.0 / abs(self.estimate)

    def fmt_ms(self, unit: Literal["s", "ms"] = "s") -> str:
        """Compact text such as "1.94 ms ±3 %"; unit is the unit the values are in."""
        scale = 1e3 if unit == "s" else 1.0
        return f"{_three_digits(self.estimate * scale)} ms ±{_percent(self.rel_halfwidth)} %"

    def fmt_ratio(self) -> str:
        """Compact text for a ratio such as a speedup: "1.95× (1.90–2.01)"."""
        return f"{self.estimate:.2f}× ({self.low:.2f}–{self.high:.2f})"

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "method": self.method,
            "n": self.n,
        }


@dataclass(frozen=True)
class Verdict:
    """The outcome of comparing latency now with a baseline's.

    kind: "regression" | "no change" | "inconclusive" | "not comparable".
    ratio: now / baseline of the median probe-normalised latency, with its interval
    (None when not comparable). tolerance: the relative slowdown allowed (0.10 = 10 %).
    probe_ratio: the probe's own median now / baseline, when given.
    """

    kind: VerdictKind
    ratio: Interval | None
    tolerance: float
    message: str
    probe_ratio: float | None = None

    @property
    def is_regression(self) -> bool:
        return self.kind == "regression"


def _three_digits(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, 2 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"


def _percent(fraction: float) -> str:
    if not math.isfinite(fraction):
        return "inf"
    pct = fraction * 100.0
    return f"{pct:.1f}" if pct < 1.0 else f"{pct:.0f}"


def _finite_array(samples: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size == 0:
        raise StatsError(f"{what}: no samples; expected at least one")
    bad = ~np.isfinite(x)
    if bad.any():
        raise StatsError(f"{what}: {int(bad.sum())} of {x.size} samples are not finite")
    return x


def _binomial_half_cdf(n: int) -> np.ndarray:
    """P(B <= k) for B ~ Binomial(n, 1/2), k = 0..n."""
    k = np.arange(n + 1)
    log_pmf = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                        for i in k]) - n * math.log(2.0)
    return np.cumsum(np.exp(log_pmf))


def median_ranks(n: int, confidence: float = 0.95) -> tuple[int, int, float]:
    """Ranks (1-based) l, u of the order statistics x(l) <= median <= x(u) and the exact
    coverage 1 - 2·P(B <= l - 1), B ~ Binomial(n, 1/2): the largest symmetric l with
    coverage >= confidence, or l = 1 (the sample range) when n is too small for it."""
    if not 0.0 < confidence < 1.0:
        raise StatsError(f"confidence {confidence!r}: expected a value in (0, 1)")
    cdf = _binomial_half_cdf(n)
    alpha = 1.0 - confidence
    # coverage(l) = 1 - 2·cdf[l-1]; largest l with cdf[l-1] <= alpha/2 (l <= (n+1)/2).
    ok = np.nonzero(cdf[: (n + 1) // 2] <= alpha / 2.0 + 1e-12)[0]
    low = int(ok[-1]) + 1 if ok.size else 1
    coverage = 1.0 - 2.0 * float(cdf[low - 1]) if ok.size else 1.0 - 2.0 * 0.5**n
    return low, n + 1 - low, max(coverage, 0.0)


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> Interval:
    """The median of samples with its distribution-free order-statistic CI.

    The interval is [x(l), x(u)] of the sorted samples, with l and u from the Binomial(n, 1/2)
    law of how many samples fall below the true median: exact for independent draws of any
    continuous distribution, nothing about its shape assumed. Fewer than 6 samples cannot
    reach 95 %: the interval is then the sample range and `confidence` its real coverage.
    """
    x = np.sort(_finite_array(samples, "median_ci"))
    n = x.size
    if n == 1:
        return Interval(float(x[0]), float(x[0]), float(x[0]), 0.0, MEDIAN_METHOD + " (n=1)", 1)
    low, high, coverage = median_ranks(n, confidence)
    method = MEDIAN_METHOD if coverage >= confidence else MEDIAN_METHOD + " (range: n too small)"
    return Interval(float(np.median(x)), float(x[low - 1]), float(x[high - 1]), coverage,
                    method, n)


def block_medians(blocks: Sequence[Sequence[float] | float], what: str) -> np.ndarray:
    """One median per block; a block is a sequence of timed calls (or already one figure)."""
    if len(blocks) == 0:
        raise StatsError(f"{what}: no blocks; expected at least one")
    return np.array([float(np.median(_finite_array(np.atleast_1d(b), f"{what} block {i}")))
                     for i, b in enumerate(blocks)])


def bracketing(reference: np.ndarray, n_variant: int, what: str, per_reference: int = 1,
               kind: str = "reference") -> tuple[np.ndarray, np.ndarray]:
    """For each of n_variant blocks timed in groups of per_reference between reference
    blocks (the order R0 V0 R1 V1 ... [Rn] for 1, R0 V0 V1 R1 V2 V3 ... [Rn] for 2), the
    reference block before its group and the one after; the last group, when no reference
    block follows it, takes the one before as both."""
    if per_reference < 1:
        raise StatsError(f"{what}: per_reference {per_reference!r}; expected >= 1")
    groups = -(-n_variant // per_reference)
    if len(reference) not in (groups, groups + 1):
        order = " ".join(["V"] * per_reference)
        raise StatsError(
            f"{what}: {len(reference)} {kind} blocks for {n_variant} variant blocks in"
            f" groups of {per_reference}; expected {groups} or {groups + 1}"
            f" (order R {order} R {order} ... [R])"
        )
    group = np.arange(n_variant) // per_reference
    following = np.append(reference[1:], reference[-1])
    return reference[group], following[group]


def neighbour_means(reference: np.ndarray, n_variant: int, what: str,
                    per_reference: int = 1) -> np.ndarray:
    """For each variant block, the mean of the reference blocks that bracket its group
    (bracketing); with per_reference 1, of the blocks just before and just after it."""
    before, after = bracketing(reference, n_variant, what, per_reference)
    return (before + after) / 2.0


def paired_ratios(variant_blocks: Sequence[Sequence[float] | float],
                  reference_blocks: Sequence[Sequence[float] | float],
                  per_reference: int = 1) -> np.ndarray:
    """reference / variant per variant block (its bracketing reference blocks averaged)."""
    variant = block_medians(variant_blocks, "variant")
    reference = neighbour_means(block_medians(reference_blocks, "reference"), len(variant),
                                "paired_ratio", per_reference)
    if np.any(variant <= 0) or np.any(reference <= 0):
        raise StatsError("paired_ratio: block medians must be > 0 (latencies)")
    return reference / variant


def paired_ratio(variant_blocks: Sequence[Sequence[float] | float],
                 reference_blocks: Sequence[Sequence[float] | float],
                 confidence: float = 0.95, per_reference: int = 1) -> Interval:
    """Speedup of the variant against the reference: the median of paired block ratios.

    Blocks are timed alternately, R0 V0 R1 V1 ... with an optional closing Rn (or with
    per_reference variant blocks between reference blocks: R0 V0 V1 R1 ...); each block is
    a sequence of timed calls (or one figure) and gives its median. Variant block i is
    paired with the mean of the reference blocks before and after its group (only the one
    before when none follows), and the ratio is reference / variant, so > 1 means the
    variant is faster. The interval is the order-statistic CI of the median of the ratios.

    Assumptions: each block is settled (no spin-up of the other session's threads inside it);
    the machine's speed changes slowly next to one R V R triplet (a linear trend cancels: in
    a group of two, the two blocks' errors are equal and opposite); the ratios of different
    triplets are independent draws of one distribution.
    """
    ratios = paired_ratios(variant_blocks, reference_blocks, per_reference)
    ci = median_ci(ratios, confidence)
    return Interval(ci.estimate, ci.low, ci.high, ci.confidence,
                    ci.method.replace(MEDIAN_METHOD, RATIO_METHOD), ci.n)


def normalised_latency(variant_blocks: Sequence[Sequence[float] | float],
                       probe_blocks: Sequence[Sequence[float] | float],
                       per_reference: int = 1) -> np.ndarray:
    """Per-block probe-normalised latency, [blocks, 2]: each variant block median divided
    by each of the two probe block medians that bracket its group of per_reference blocks
    (the one before, the one after; a last group with no probe after it uses the one before
    twice). These are the samples compare_to_baseline takes and a baseline stores the
    blocks of.

    Why each neighbour on its own and not their mean: the machine's speed jumps between
    modes (on the 2-core VM, 4.3 against 6.5 ms for the default detector, for a few blocks at
    a time). A variant block next to such a jump has one neighbour in its own mode and one
    in the other; their mean is off by half the jump, while one of the two separate ratios
    is right. The median over all of them is then right as long as jumps are rarer than
    blocks (measured on recorded blocks: 48 of 59 simulated 15 % slowdowns caught at 10
    blocks against 35 with the mean, no A/A false alarm with either).
    """
    variant = block_medians(variant_blocks, "variant")
    probe = block_medians(probe_blocks, "probe")
    before, after = bracketing(probe, len(variant), "normalised_latency", per_reference,
                               "probe")
    if np.any(variant <= 0) or np.any(probe <= 0):
        raise StatsError("normalised_latency: block medians must be > 0 (latencies)")
    return np.stack([variant / before, variant / after], axis=1)


def ratio_of_medians_ci(now: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray,
                        *, confidence: float = 0.95, n_boot: int = 4000,
                        seed: int = 0) -> Interval:
    """median(now) / median(baseline) with a seeded percentile-bootstrap CI.

    now, baseline: samples, or [blocks, k] arrays of k samples per block (as
    normalised_latency gives them): a resample draws whole blocks, so samples that share a
    block stay together and their dependence is not mistaken for information. Each side is
    resampled with replacement on its own (the two runs are independent); the medians are
    taken in log space so the interval is symmetric in "faster" and "slower". The same
    inputs and seed give the same interval.
    """
    a = np.log(_positive_blocks(now, "now"))
    b = np.log(_positive_blocks(baseline, "baseline"))
    rng = np.random.default_rng(seed)
    boot_a = np.median(a[rng.integers(0, len(a), size=(n_boot, len(a)))].reshape(n_boot, -1),
                       axis=1)
    boot_b = np.median(b[rng.integers(0, len(b), size=(n_boot, len(b)))].reshape(n_boot, -1),
                       axis=1)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boot_a - boot_b, [tail, 1.0 - tail])
    estimate = float(np.exp(np.median(a) - np.median(b)))
    return Interval(estimate, float(np.exp(lo)), float(np.exp(hi)), confidence,
                    BOOTSTRAP_METHOD, int(min(len(a), len(b))))


def _positive_blocks(samples: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    """samples as [blocks, k] (a flat sequence: one sample a block), all finite and > 0."""
    x = np.asarray(samples, dtype=np.float64)
    rows = x.reshape(len(x), -1) if x.ndim >= 1 and x.size else x.reshape(0, 1)
    _positive(rows.ravel(), what)
    return rows


def _positive(samples: Sequence[float], what: str) -> np.ndarray:
    x = _finite_array(samples, what)
    if np.any(x <= 0):
        raise StatsError(f"{what}: {int((x <= 0).sum())} samples are <= 0; expected latencies")
    return x


def _signed_pct(ratio: float) -> str:
    pct = (ratio - 1.0) * 100.0
    return f"{pct:+.0f}" if abs(pct) >= 1 else f"{pct:+.1f}"


def compare_to_baseline(now: Sequence[float], baseline: Sequence[float], *,
                        tolerance: float = 0.10, probe_now: float | None = None,
                        probe_baseline: float | None = None,
                        probe_limit: float = PROBE_LIMIT,
                        confidence: float = 0.95, n_boot: int = 4000,
                        seed: int = 0) -> Verdict:
    """Verdict on latency now against a baseline, from probe-normalised latency samples.

    now, baseline: per-block normalised latency (see normalised_latency) of this run and of the
    baseline run. probe_now, probe_baseline: the probe's own median latency in each run (any
    one unit); when both are given and one is more than probe_limit times the other, the verdict
    is "not comparable" (another machine or power mode: the normalisation no longer holds).
    The ratio is median(now) / median(baseline) with a bootstrap CI (ratio_of_medians_ci):
    "regression" when its low end > 1 + tolerance; "no change" when its high end <= 1 +
    tolerance; otherwise "inconclusive" (the message gives the interval's width).
    """
    if tolerance < 0:
        raise StatsError(f"tolerance {tolerance!r}: expected >= 0 (0.10 for 10 %)")
    probe_ratio = _probe_ratio(probe_now, probe_baseline)
    if probe_ratio is not None and max(probe_ratio, 1.0 / probe_ratio) > probe_limit:
        msg = (f"latency not comparable: the speed probe ran {probe_ratio:.2f}× the baseline's"
               f" time (limit {probe_limit:g}×): another machine or power mode?")
        return Verdict("not comparable", None, tolerance, msg, probe_ratio)
    ci = ratio_of_medians_ci(now, baseline, confidence=confidence, n_boot=n_boot, seed=seed)
    limit = 1.0 + tolerance
    figures = (f"median latency {_signed_pct(ci.estimate)} % vs baseline"
               f" (CI {_signed_pct(ci.low)}…{_signed_pct(ci.high)} %")
    if ci.low > limit:
        kind: VerdictKind = "regression"
        msg = f"{figures}, tolerance +{tolerance * 100:g} %): regression"
    elif ci.high <= limit:
        kind = "no change"
        msg = f"{figures}, within +{tolerance * 100:g} %)"
    else:
        kind = "inconclusive"
        width = (ci.high - ci.low) * 100.0
        msg = (f"{figures}, {width:.0f} points wide, straddles +{tolerance * 100:g} %):"
               " inconclusive")
    return Verdict(kind, ci, tolerance, msg, probe_ratio)


def _probe_ratio(probe_now: float | None, probe_baseline: float | None) -> float | None:
    if probe_now is None or probe_baseline is None:
        return None
    if not (probe_now > 0 and probe_baseline > 0):
        raise StatsError(f"probe medians {probe_now!r}, {probe_baseline!r}: expected > 0")
    return float(probe_now) / float(probe_baseline)
