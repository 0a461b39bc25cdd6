"""The precision matrix: one test per variant.

Each test builds its variant (cached), runs the COCO accuracy pass, times engine.infer
with pytest-benchmark while power is sampled, and fails when the variant's gate fails:
its mAP floor against FP32 in this run, or a regression against results/baseline.json.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from bench.session import benchmark_extra_info


def pedantic_timer(benchmark) -> Callable[[Callable[[], object], int], list[float]]:
    """The session's timer backed by pytest-benchmark's public `pedantic`.

    Each call is timed here (perf_counter around the call, inside pedantic's target), so
    the harness's figures never read pytest-benchmark's internals. pytest-benchmark allows
    one pedantic run per test: the first block of rounds goes through it (its table and
    JSON show that block); later blocks of the same variant (the session interleaves
    blocks with fp32) are timed the same way without it.
    """
    used = False

    def timer(call: Callable[[], object], rounds: int) -> list[float]:
        nonlocal used
        seconds: list[float] = []

        def timed() -> None:
            start = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - start)

        if not used:
            used = True
            benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=0)
        while len(seconds) < rounds:  # later blocks, or a disabled pytest-benchmark
            timed()
        return seconds

    return timer


def test_variant(variant, bench_session, benchmark):
    benchmark.group = "precision matrix"
    prepared = bench_session.prepare(variant)
    if prepared.status == "skipped":
        pytest.skip(prepared.reason)
    if prepared.status == "failed":
        pytest.fail(f"{variant}: {prepared.reason}", pytrace=False)
    row = bench_session.measure(prepared, pedantic_timer(benchmark))
    benchmark.extra_info.update(benchmark_extra_info(row))
    if row.status == "failed":
        pytest.fail(f"{variant}: {row.error}", pytrace=False)
    if row.gate.passed is False:
        pytest.fail(f"{variant} gate: " + "; ".join(row.gate.reasons), pytrace=False)
