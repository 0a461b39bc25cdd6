"""The latency pass's own bookkeeping: blocks, interleaving, the statistics of a row."""

import numpy as np
import pytest

from bench.measure.measurer import SETTLE_CALLS, Measurer, plain_timer, time_calls
from bench.power.none import NoneSampler
from bench.report.assemble import latency_stats


class Clock:
    """An engine whose calls take a set time (sleep), recording which engine ran when."""

    def __init__(self, name, seconds, log, settle_pause_s=0.0):
        self.name, self.seconds, self.log = name, seconds, log
        self.settle_pause_s = settle_pause_s

    def reset_timings(self):  # the Engine interface's hook; a clock has no GPU timings
        pass

    def infer(self, batch):
        self.log.append(self.name)
        import time

        time.sleep(self.seconds)
        return {}


def test_blocks_interleave_reference_and_probe_around_each_variant_block():
    log = []
    variant, ref, probe = Clock("v", 0.002, log), Clock("r", 0.004, log), Clock("p", 0.001, log)
    m = Measurer(rounds=9, blocks=3, warmup=0).measure(
        variant, np.zeros(1), reference=ref, probe=(probe, np.zeros(1)), sampler=NoneSampler())
    assert len(m.seconds) == 9
    assert len(m.blocks.variant_ms) == 3
    assert len(m.blocks.reference_ms) == len(m.blocks.probe_ms) == 4  # R0 P0 | V R P | ...
    timed_order = "".join(log)
    # every variant block is preceded by a reference and a probe block (settle calls included)
    assert timed_order.index("r") < timed_order.index("p") < timed_order.rindex("v")
    assert all(r >= 4.0 for r in m.blocks.reference_ms)  # 4 ms calls (sleeps only overrun)
    assert m.power_calls == 0  # no power source: no separate power window


def test_reference_every_two_blocks_times_two_variant_blocks_between_references():
    import re

    log = []
    variant, ref, probe = Clock("v", 0.001, log), Clock("r", 0.001, log), Clock("p", 0.001, log)
    m = Measurer(rounds=10, blocks=5, warmup=0, per_reference=2).measure(
        variant, np.zeros(1), reference=ref, probe=(probe, np.zeros(1)), sampler=NoneSampler())
    assert len(m.blocks.variant_ms) == 5 and m.blocks.per_reference == 2
    # R P | V V R P | V V R P | V R P: one reference and probe block per group and a last one
    assert len(m.blocks.reference_ms) == len(m.blocks.probe_ms) == 4
    runs = re.sub(r"(.)\1*", r"\1", "".join(log[1:]))  # after the timed warm call, squeezed
    assert runs == "rpvrpvrpvrp"
    assert m.blocks.to_dict()["per_reference"] == 2


def test_a_short_probe_spans_as_long_as_the_variant_block():
    log = []
    variant, probe = Clock("v", 0.01, log), Clock("p", 0.001, log)
    Measurer(rounds=5, blocks=1, warmup=0).measure(
        variant, np.zeros(1), reference=None, probe=(probe, np.zeros(1)), sampler=NoneSampler())
    # a 50 ms variant block: the probe blocks run well past their 5 calls (1 ms each)
    assert log.count("p") > 2 * (5 + SETTLE_CALLS)


def test_each_block_waits_the_pause_its_engine_declares():
    import time

    quick = [Clock(n, 0.0005, []) for n in "vrp"]
    paused = [Clock(n, 0.0005, [], settle_pause_s=0.02) for n in "vrp"]
    spent = []
    for v, r, p in (quick, paused):
        began = time.perf_counter()
        Measurer(rounds=6, blocks=3, warmup=0).measure(
            v, np.zeros(1), reference=r, probe=(p, np.zeros(1)), sampler=NoneSampler())
        spent.append(time.perf_counter() - began)
    # 3 variant blocks + 4 reference and 4 probe blocks, each after a 20 ms pause
    assert spent[1] - spent[0] >= 11 * 0.02 * 0.9


def test_plain_timer_runs_setup_before_each_round():
    seen = []
    plain_timer(lambda: seen.append("t"), 3, lambda: seen.append("s"))
    assert seen == ["s", "t"] * 3


def test_latency_stats_match_numpy_and_carry_the_median_ci():
    seconds = np.linspace(0.001, 0.1, 100)
    stats = latency_stats(seconds)
    assert stats.median == pytest.approx(np.median(seconds) * 1000)
    assert stats.p99 == pytest.approx(np.percentile(seconds, 99) * 1000)
    assert stats.ci_low < stats.median < stats.ci_high and stats.confidence >= 0.95
    with pytest.raises(ValueError):
        latency_stats([])
    with pytest.raises(ValueError):
        latency_stats([0.1, float("nan")])


def test_time_calls_counts_rounds():
    calls = []
    timings = time_calls(lambda: calls.append(1), 7)
    assert len(timings) == 7 == len(calls) and all(t >= 0 for t in timings)
