import collections
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.measure.stats import (
    Interval,
    StatsError,
    bracketing,
    compare_to_baseline,
    median_ci,
    median_ranks,
    normalised_latency,
    paired_ratio,
    ratio_of_medians_ci,
)

sys.path.insert(0, str(Path(__file__).parent))
from drift_sim import simulate_run  # noqa: E402


def test_median_ranks_match_the_binomial_table():
    # n = 10: P(B <= 1) = 11/1024, so [x(2), x(9)] covers 1 - 22/1024.
    assert median_ranks(10) == (2, 9, pytest.approx(1 - 22 / 1024))
    # n = 100: the textbook 95 % ranks are 40 and 61.
    low, high, cov = median_ranks(100)
    assert (low, high) == (40, 61) and 0.95 <= cov < 0.97


def test_median_ci_too_few_samples_gives_the_range_with_its_real_coverage():
    ci = median_ci([3.0, 1.0, 2.0, 5.0, 4.0])
    assert (ci.low, ci.high, ci.estimate) == (1.0, 5.0, 3.0)
    assert ci.confidence == pytest.approx(1 - 2 / 32) and "n too small" in ci.method


def test_median_ci_covers_the_true_median_of_a_skewed_law():
    rng = np.random.default_rng(0)
    true_median = math.log(2.0)  # exponential(1)
    hits = [median_ci(rng.exponential(size=31)) for _ in range(2000)]
    coverage = np.mean([c.low <= true_median <= c.high for c in hits])
    assert coverage >= 0.94 and all(c.confidence >= 0.95 for c in hits)


def test_median_ci_rejects_non_finite_samples():
    with pytest.raises(StatsError, match="1 of 3 samples are not finite"):
        median_ci([1.0, float("nan"), 2.0])
    with pytest.raises(StatsError, match="no samples"):
        median_ci([])


def test_interval_formats_compactly():
    ci = Interval(1.94e-3, 1.88e-3, 2.00e-3, 0.95, "order-statistic", 50)
    assert ci.rel_halfwidth == pytest.approx(0.0309, abs=1e-3)
    assert ci.fmt_ms() == "1.94 ms ±3 %"
    assert Interval(12.3, 12.29, 12.31, 0.95, "x", 9).fmt_ms("ms") == "12.3 ms ±0.1 %"
    assert Interval(1.953, 1.901, 2.012, 0.95, "x", 9).fmt_ratio() == "1.95× (1.90–2.01)"


def test_paired_ratio_cancels_a_linear_drift_exactly():
    # The machine slows by 3 % per block; the variant is truly 2x faster than the reference.
    t = np.arange(21)
    speed = 1.0 + 0.03 * t
    reference = [np.full(5, 10.0 * s) for s in speed[0::2]]  # R at even slots, 11 blocks
    variant = [np.full(5, 5.0 * s) for s in speed[1::2]]  # V at odd slots, 10 blocks
    ci = paired_ratio(variant, reference)
    assert ci.estimate == pytest.approx(2.0) and ci.low == pytest.approx(2.0)
    assert ci.n == 10


def test_paired_ratio_shrugs_off_a_step_in_machine_speed():
    # The machine becomes 2x slower between two blocks: one triplet is disturbed, the median
    # of the ratios is not, where the ratio of pooled medians is.
    speed = np.where(np.arange(21) < 10, 1.0, 2.0)
    reference = [np.full(5, 10.0 * s) for s in speed[0::2]]
    variant = [np.full(5, 5.0 * s) for s in speed[1::2]]
    assert paired_ratio(variant, reference).estimate == pytest.approx(2.0)
    pooled = np.median(np.concatenate(reference)) / np.median(np.concatenate(variant))
    assert pooled > 2.5


def test_paired_ratio_without_a_closing_reference_block_uses_one_neighbour():
    ratios = paired_ratio([[2.0], [2.0]], [[4.0], [8.0]])  # R V R V
    # (4+8)/2/2 = 3 and 8/2 = 4: the median of the two.
    assert ratios.estimate == pytest.approx(3.5)
    with pytest.raises(StatsError, match="3 reference blocks for 1 variant blocks"):
        paired_ratio([[1.0]], [[1.0], [1.0], [1.0]])


def test_blocks_in_groups_share_the_reference_blocks_that_bracket_the_group():
    before, after = bracketing(np.array([1.0, 2.0, 3.0]), 5, "x", per_reference=2)
    assert before.tolist() == [1.0, 1.0, 2.0, 2.0, 3.0]  # R0 V0 V1 R1 V2 V3 R2 V4
    assert after.tolist() == [2.0, 2.0, 3.0, 3.0, 3.0]  # V4: no R3, the one before twice
    before, after = bracketing(np.array([1.0, 2.0, 3.0, 4.0]), 5, "x", per_reference=2)
    assert after.tolist() == [2.0, 2.0, 3.0, 3.0, 4.0]
    with pytest.raises(StatsError, match="2 probe blocks for 5 variant blocks in groups of 2"):
        bracketing(np.array([1.0, 2.0]), 5, "x", per_reference=2, kind="probe")
    norm = normalised_latency([6.0, 6.0, 6.0], [2.0, 3.0, 6.0], per_reference=2)
    assert norm.tolist() == [[3.0, 2.0], [3.0, 2.0], [2.0, 1.0]]


def test_paired_ratio_in_groups_of_two_cancels_a_linear_drift_in_the_median():
    # R V V R V V ... R: the machine slows by 3 % per block, the variant truly 2x faster.
    # The group's first block errs one way, its second the other way by as much.
    slots = np.arange(31)
    speed = 1.0 + 0.03 * slots
    reference = [np.full(5, 10.0 * s) for s in speed[0::3]]  # 11 blocks
    variant = [np.full(5, 5.0 * s) for t, s in zip(slots, speed) if t % 3]  # 20 blocks
    ci = paired_ratio(variant, reference, per_reference=2)
    assert ci.estimate == pytest.approx(2.0, rel=2e-3) and ci.low < 2.0 < ci.high
    assert ci.n == 20


def test_normalised_latency_pairs_each_block_with_each_neighbour():
    norm = normalised_latency([[3.0, 3.0, 9.0]], [[1.0], [2.0]])
    assert norm.tolist() == [[pytest.approx(3.0), pytest.approx(1.5)]]
    # no probe block after the last variant block: the one before, twice
    assert normalised_latency([4.0, 6.0], [2.0, 3.0]).tolist() == [[2.0, 4 / 3], [2.0, 2.0]]
    with pytest.raises(StatsError, match="3 probe blocks for 1 variant blocks"):
        normalised_latency([1.0], [1.0, 1.0, 1.0])


def test_a_speed_jump_beside_a_block_does_not_move_the_verdict():
    # Probe and model both run 1.5x slower for a stretch of blocks (the VM's slow mode);
    # the blocks next to a jump have one neighbour in each mode. The model is unchanged.
    mode = np.array([1.0] * 4 + [1.5] * 4 + [1.0] * 3)  # 11 probe blocks, 10 variant blocks
    probe = 2.0 * mode
    model = 3.0 * np.array([1.0] * 4 + [1.5] * 4 + [1.0] * 2)
    base = normalised_latency(3.0 * np.ones(10), 2.0 * np.ones(11))
    v = compare_to_baseline(normalised_latency(model, probe), base, tolerance=0.05)
    assert v.ratio.estimate == pytest.approx(1.0)
    assert v.kind == "no change"


def test_compare_to_baseline_kinds_and_messages():
    base = np.exp(np.random.default_rng(1).normal(0, 0.02, 40))
    slower = base * 1.3
    v = compare_to_baseline(slower, base, tolerance=0.10)
    assert v.kind == "regression" and v.is_regression
    assert v.message.startswith("median latency +30 % vs baseline (CI +")
    assert compare_to_baseline(base, base).kind == "no change"
    wide = np.exp(np.random.default_rng(2).normal(0, 0.3, 8)) * 1.1
    v = compare_to_baseline(wide, base, tolerance=0.10)
    assert v.kind == "inconclusive" and "points wide" in v.message
    nc = compare_to_baseline(base, base, probe_now=2.1e-3, probe_baseline=1.0e-3)
    assert nc.kind == "not comparable" and nc.ratio is None and "2.10×" in nc.message
    # the VM's slow mode alone moves the probe 1.6-1.7x: still compared
    assert compare_to_baseline(base, base, probe_now=1.7e-3, probe_baseline=1.0e-3).kind \
        == "no change"


def test_compare_to_baseline_is_deterministic():
    rng = np.random.default_rng(3)
    a, b = rng.lognormal(0, 0.1, 20), rng.lognormal(0, 0.1, 20)
    assert compare_to_baseline(a, b) == compare_to_baseline(a, b)


def test_ratio_ci_is_symmetric_in_faster_and_slower():
    rng = np.random.default_rng(4)
    a, b = rng.lognormal(0, 0.1, 25), rng.lognormal(0, 0.1, 25)
    ab, ba = ratio_of_medians_ci(a, b, seed=7), ratio_of_medians_ci(b, a, seed=7)
    assert ab.estimate == pytest.approx(1 / ba.estimate)
    assert ab.low == pytest.approx(1 / ba.high, rel=0.02)


def _verdicts(slowdown: float, trials: int, seed: int, **sim) -> collections.Counter:
    rng = np.random.default_rng(seed)
    kinds: collections.Counter = collections.Counter()
    for t in range(trials):
        base, probe_base = simulate_run(rng, **sim)
        now, probe_now = simulate_run(rng, slowdown=slowdown, **sim)
        v = compare_to_baseline(now, base, tolerance=0.10, probe_now=probe_now,
                                probe_baseline=probe_base, seed=t)
        kinds[v.kind] += 1
    return kinds


def test_simulated_drift_false_alarms_and_detections():
    """The drifting machine of drift_sim: A/A runs (with a 2 % run-to-run model/probe offset
    the probe cannot cancel) almost never alarm; a true 10 % slowdown, the tolerance itself,
    is called a regression at most at the interval's one-sided 2.5 % (5 % allowed); a true
    20 % slowdown is found in >= 95 % of the comparable trials."""
    trials = 200
    aa = _verdicts(1.0, trials, seed=11, offset_sd=0.02)
    assert aa["regression"] <= 0.05 * trials
    assert aa["no change"] >= 0.8 * trials
    edge = _verdicts(1.10, trials, seed=12, offset_sd=0.0)
    assert edge["regression"] <= 0.05 * trials
    slow = _verdicts(1.20, trials, seed=13, offset_sd=0.01)
    comparable = trials - slow["not comparable"]
    assert comparable >= 0.9 * trials
    assert slow["regression"] >= 0.95 * comparable
