"""The precision matrix: one test per variant.

Each test builds its variant (cached), runs the COCO accuracy pass, times engine.infer
with pytest-benchmark while power is sampled, and fails when the variant's gate fails:
its mAP floor against FP32 in this run, or a regression against results/baseline.json.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.session import benchmark_extra_info


def pedantic_timer(benchmark) -> Callable[[Callable[[], object], int, Callable[[], object]],
                                           None]:
    """The session's timer (bench.measure.measurer.Timer) on pytest-benchmark's public
    `pedantic`: `setup` runs untimed before each round (the session times its fp32 and
    speed-probe blocks there, interleaved), `target` is one timed call. The session times
    each call itself as well, so its figures never read pytest-benchmark's internals.
    A disabled pytest-benchmark runs the target once: the remaining rounds run here.
    """

    def timer(target: Callable[[], object], rounds: int, setup: Callable[[], object]) -> None:
        done = 0

        def counted() -> None:
            nonlocal done
            target()
            done += 1

        benchmark.pedantic(counted, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)
        while done < rounds:
            setup()
            counted()

    return timer


def test_variant(variant, bench_session, benchmark):
    benchmark.group = "precision matrix"
    prepared = bench_session.prepare(variant)
    if prepared.status == "skipped":
        pytest.skip(prepared.reason)
    if prepared.status == "failed" and bench_session.run.inputs_error is not None:
        # the model or dataset itself is unusable: say it once and stop the run
        pytest.exit(f"bench: {bench_session.run.inputs_error}",
                    returncode=pytest.ExitCode.TESTS_FAILED)
    if prepared.status == "failed":
        pytest.fail(f"{variant}: {prepared.reason}", pytrace=False)
    row = bench_session.measure(prepared, pedantic_timer(benchmark))
    benchmark.extra_info.update(benchmark_extra_info(row))
    if row.status == "failed":
        pytest.fail(f"{variant}: {row.error}", pytrace=False)
    if row.gate.passed is False:
        pytest.fail(f"{variant} gate: " + "; ".join(row.gate.reasons), pytrace=False)
