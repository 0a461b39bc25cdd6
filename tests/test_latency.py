import numpy as np
import pytest

from bench.latency import summarize, time_calls


def test_stats_match_numpy():
    seconds = np.linspace(0.001, 0.1, 100)
    stats = summarize(seconds)
    assert stats.median == pytest.approx(np.median(seconds) * 1000)
    assert stats.p99 == pytest.approx(np.percentile(seconds, 99) * 1000)
    assert stats.mean == pytest.approx(np.mean(seconds) * 1000)
    assert stats.min == pytest.approx(1.0)


def test_rejects_empty_and_nan():
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([0.1, float("nan")])


def test_time_calls_counts_rounds():
    calls = []
    timings = time_calls(lambda: calls.append(1), 7)
    assert len(timings) == 7 == len(calls) and all(t >= 0 for t in timings)
