"""bench.ahead: results in order, at most `ahead` prepared early, errors where taken."""

import threading
import time

import pytest

from bench.ahead import ordered_ahead


def test_results_come_in_order_whatever_finishes_first():
    def slow_evens(i):
        time.sleep(0.004 if i % 2 == 0 else 0.0)
        return i * i

    got = list(ordered_ahead(slow_evens, range(20), ahead=4, workers=3))
    assert got == [i * i for i in range(20)]
    assert list(ordered_ahead(slow_evens, [], ahead=4)) == []


def test_no_more_than_ahead_items_are_started_before_they_are_taken():
    started, lock = [], threading.Lock()

    def record(i):
        with lock:
            started.append(i)
        return i

    taken = ordered_ahead(record, range(100), ahead=5, workers=2)
    assert next(taken) == 0
    time.sleep(0.05)
    assert len(started) <= 6  # the five first, and one submitted when the first was taken
    taken.close()  # early close: the rest is cancelled, nothing hangs
    assert len(started) <= 6


def test_an_error_is_raised_where_its_result_is_taken():
    def fail_at_3(i):
        if i == 3:
            raise ValueError("item 3")
        return i

    got = []
    with pytest.raises(ValueError, match="item 3"):
        for value in ordered_ahead(fail_at_3, range(10), ahead=4):
            got.append(value)
    assert got == [0, 1, 2]
