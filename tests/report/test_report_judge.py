"""The judge: paired speedups, like-for-like mAP, three-way latency verdicts, no silent ✓."""

import dataclasses

import numpy as np
from report_builders import make_env, make_row

from bench.report.gate import GateConfig
from bench.report.judge import BLOCKS_KEY, Judge, relative_to_fp32
from bench.report.runs import Run


def blocks(variant_ms, probe_ms, reference_ms=()):
    return {BLOCKS_KEY: {"variant_ms": list(variant_ms), "probe_ms": list(probe_ms),
                         "reference_ms": list(reference_ms)}}


def noisy(center, n, seed, spread=0.01):
    rng = np.random.default_rng(seed)
    return list(center * np.exp(rng.normal(0, spread, n)))


def timed_row(variant, latency, probe, seed, **kw):
    """A row whose blocks drift with the machine: both latency and probe scale together."""
    drift = np.exp(np.linspace(0, 0.4, 9))  # the machine slows by half over the pass
    v = np.array(noisy(latency, 8, seed)) * drift[:8]
    p = np.array(noisy(probe, 9, seed + 100)) * drift
    return make_row(variant, map=0.612, probe_ms=float(np.median(p)),
                    eval_fingerprint="e1", extra=blocks(v, p), **kw)


def judged(now, then, **gate):
    baseline = Run(make_env(), (then,), True, "t0", run_id="base-1")
    return Judge(GateConfig(**gate), baseline, make_env()).judge(now, None)


def test_speedup_is_the_median_of_paired_block_ratios():
    fp32 = make_row("fp32", map=0.6)
    ref = [10.0, 20.0, 10.0, 20.0, 10.0]  # the machine flips speed between blocks
    var = [7.5, 7.5, 7.5, 7.5]  # each variant block sits between a 10 and a 20 ms fp32 block
    row = make_row("int8-max", map=0.59, extra={BLOCKS_KEY: {"variant_ms": var,
                                                            "reference_ms": ref}})
    out = relative_to_fp32(row, fp32)
    assert out.speedup_vs_fp32 == 2.0  # (10+20)/2 / 7.5, not 10/7.5 from unpaired medians
    assert out.speedup_low <= 2.0 <= out.speedup_high
    assert abs(out.delta_map_vs_fp32 - (-0.01)) < 1e-12


def test_unchanged_model_on_a_drifting_machine_is_no_change():
    now = timed_row("fp32", 10.0, 1.0, seed=1)
    then = timed_row("fp32", 10.0, 1.0, seed=2)
    row = judged(now, then, latency_growth=0.05)
    assert row.baseline_latency_verdict == "no change"
    assert row.gate.passed is True


def test_a_twenty_percent_slowdown_is_a_regression_that_fails():
    now = timed_row("fp32", 12.0, 1.0, seed=3)
    then = timed_row("fp32", 10.0, 1.0, seed=4)
    row = judged(now, then, latency_growth=0.05)
    assert row.baseline_latency_verdict == "regression"
    assert row.gate.passed is False
    assert "vs baseline" in row.gate.reasons[0] and "regression" in row.gate.reasons[0]


def test_straddling_the_tolerance_is_inconclusive_and_passes_with_a_warning():
    now = make_row("fp32", map=0.612, probe_ms=1.0, eval_fingerprint="e1",
                   extra=blocks([10.0, 11.5, 10.2, 11.6], [1.0] * 5))
    then = make_row("fp32", map=0.612, probe_ms=1.0, eval_fingerprint="e1",
                    extra=blocks([10.0] * 4, [1.0] * 5))
    row = judged(now, then, latency_growth=0.05)
    assert row.baseline_latency_verdict == "inconclusive"
    assert row.gate.passed is True and "inconclusive" in row.gate.warnings[0]
    strict = Judge(GateConfig(latency_growth=0.05), Run(make_env(), (then,), True, "t0"),
                   make_env(), fail_inconclusive=True).judge(now, None)
    assert strict.gate.passed is False


def test_a_probe_that_moved_makes_latency_not_comparable():
    now = timed_row("fp32", 25.0, 2.5, seed=5)  # everything 2.5x as slow: another machine
    then = timed_row("fp32", 10.0, 1.0, seed=6)
    row = judged(now, then)
    assert row.baseline_latency_verdict == "not comparable"
    assert row.gate.passed is True


def test_map_against_a_different_evaluation_is_not_comparable_and_does_not_fail():
    now = make_row("fp32", map=0.55, eval_fingerprint="fifty", eval_images=50)
    then = make_row("fp32", map=0.64, eval_fingerprint="hundred", eval_images=100)
    row = judged(now, then)
    assert row.baseline_map_verdict == "not comparable"
    assert row.gate.passed is True
    assert any("50 images here, 100 in the baseline" in n for n in row.gate.notes)


def test_map_against_the_same_evaluation_is_compared():
    now = make_row("fp32", map=0.60, eval_fingerprint="same", eval_images=100)
    then = make_row("fp32", map=0.64, eval_fingerprint="same", eval_images=100)
    row = judged(now, then)
    assert row.gate.passed is False
    assert row.gate.reasons[0].startswith("mAP 0.6000 < baseline 0.6400 − 0.005 = 0.6350 "
                                          "(Δ -0.0400")


def test_rows_normalised_by_different_probes_are_not_compared():
    now = timed_row("int8-max", 2.0, 1.0, seed=1)
    then = timed_row("int8-max", 2.0, 1.0, seed=2)
    fp32_probe = {"kind": "fp32", "version": "3", "sha256": "a" * 64}
    int8_probe = {"kind": "int8", "version": "3", "profile": "cpu", "sha256": "b" * 64}
    now = dataclasses.replace(now, extra={**now.extra, "probe": int8_probe})
    then = dataclasses.replace(then, extra={**then.extra, "probe": fp32_probe})
    row = judged(now, then)
    assert row.baseline_latency_verdict == "not comparable"
    assert any("another speed probe (the int8 probe bbbbbbbbbbbb here, the fp32 probe "
               "aaaaaaaaaaaa in the baseline)" in n for n in row.gate.notes)
    assert row.gate.passed
    same = judged(now, dataclasses.replace(then, extra={**then.extra, "probe": int8_probe}))
    assert same.baseline_latency_verdict == "no change"
    assert "latency_not_comparable" not in same.extra
