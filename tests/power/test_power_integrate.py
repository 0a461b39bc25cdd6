"""Energy is the time-weighted integral of the samples over the window."""

from __future__ import annotations

import pytest

from bench.power.integrate import (
    counter_delta,
    median_interval_s,
    power_at,
    summarize_rails,
    trapezoid_j,
    window_energy_j,
)


def test_trapezoid_is_exact_for_a_ramp_on_irregular_times():
    times = [0.0, 0.1, 0.35, 0.4, 1.0]
    watts = [10.0 + 5.0 * t for t in times]  # 10 W rising 5 W/s
    assert trapezoid_j(times, watts) == pytest.approx(10.0 + 2.5)


def test_late_tick_is_weighted_by_its_duration_not_counted_once():
    # 1 W for 0.9 s then 11 W for 0.1 s: the mean of samples would say 6 W.
    times, watts = [0.0, 0.9, 0.9, 1.0], [1.0, 1.0, 11.0, 11.0]
    assert trapezoid_j(times, watts) == pytest.approx(0.9 + 1.1)


def test_window_holds_the_end_samples_out_to_the_edges():
    energy = window_energy_j([1.0, 2.0], [4.0, 6.0], t0=0.5, t1=3.0)
    assert energy == pytest.approx(4.0 * 0.5 + 5.0 * 1.0 + 6.0 * 1.0)


def test_window_cuts_samples_beyond_its_edges():
    times, watts = [0.0, 1.0, 2.0], [0.0, 10.0, 20.0]
    assert window_energy_j(times, watts, t0=0.5, t1=1.5) == pytest.approx(10.0)
    assert power_at(times, watts, 0.25) == pytest.approx(2.5)
    assert power_at(times, watts, 5.0) == 20.0


def test_one_sample_gives_power_times_window():
    assert window_energy_j([0.3], [7.0], t0=0.0, t1=2.0) == pytest.approx(14.0)


def test_rails_are_integrated_each_over_the_same_window():
    times = [0.0, 1.0, 2.0]
    samples = [{"tot": 4.0, "cpu": 1.0}, {"tot": 6.0, "cpu": 1.0}, {"tot": 8.0}]
    rails = summarize_rails(times, samples, t0=0.0, t1=2.0)
    assert rails["tot"] == (pytest.approx(12.0), pytest.approx(6.0))
    assert rails["cpu"] == (pytest.approx(2.0), pytest.approx(1.0))  # held after it vanished


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [(100, 250, (150, False)), (900, 50, (150, True)), (5, 5, (0, False))],
)
def test_counter_delta_unwraps_once(previous, current, expected):
    assert counter_delta(previous, current, max_range=1000) == expected


def test_counter_delta_without_range_refuses_to_guess():
    with pytest.raises(ValueError, match="no max_range"):
        counter_delta(10, 5, max_range=0)


def test_bad_series_are_refused():
    with pytest.raises(ValueError, match="backwards"):
        trapezoid_j([0.0, 2.0, 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="3 sample times but 2"):
        trapezoid_j([0.0, 1.0, 2.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="at least one sample"):
        window_energy_j([], [], 0.0, 1.0)


def test_median_interval_ignores_one_late_tick():
    assert median_interval_s([0.0, 0.1, 0.2, 0.9, 1.0]) == pytest.approx(0.1)
    assert median_interval_s([0.0]) is None
