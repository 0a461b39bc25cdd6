"""The precision matrix: one test per variant.

Each test builds its variant (cached), runs the COCO accuracy pass, times engine.infer
with pytest-benchmark while power is sampled, and fails when the variant's gate fails:
its mAP floor against FP32 in this run, or a regression against results/baseline.json.
"""

from __future__ import annotations

import pytest

from bench.session import benchmark_extra_info


def test_variant(variant, bench_session, benchmark, live_output):
    benchmark.group = "precision matrix"
    with live_output():
        prepared = bench_session.prepare(variant)
    if prepared.status == "skipped":
        pytest.skip(prepared.reason)
    if prepared.status == "failed":
        pytest.fail(f"{variant}: {prepared.reason}", pytrace=False)

    def timer(call, rounds):
        benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0)
        if benchmark.disabled or benchmark.stats is None:
            return bench_session_timings(call, rounds)
        return list(benchmark.stats.stats.data)

    with live_output():
        row = bench_session.measure(prepared, timer)
    benchmark.extra_info.update(benchmark_extra_info(row))
    if row.status == "failed":
        pytest.fail(f"{variant}: {row.error}", pytrace=False)
    assert row.gate.passed is not False, f"{variant} gate: " + "; ".join(row.gate.reasons)


def bench_session_timings(call, rounds):
    # pytest-benchmark disabled (--benchmark-disable, or xdist): time the calls ourselves.
    from bench.latency import time_calls

    return time_calls(call, rounds)
