"""PowerReading: validated when created, figures per inference from the same window."""

from __future__ import annotations

import pytest

from bench.power.base import PowerReading
from bench.power.none import NoneSampler
from bench.power.rapl import RaplSampler


def test_energy_per_inference_and_inferences_per_joule():
    reading = PowerReading(source="rapl", mean_w=20.0, energy_j=10.0, window_s=0.5)
    assert reading.energy_per_inference_mj(200) == pytest.approx(50.0)
    assert reading.inferences_per_joule(200) == pytest.approx(20.0)
    assert reading.energy_per_inference_mj(0) is None


def test_empty_reading_folds_its_reason_onto_one_line():
    reading = PowerReading.empty("jtop", "not active.\nPlease run:\n  sudo jtop")
    assert reading.reason == "not active. Please run: sudo jtop"
    assert reading.is_empty and reading.energy_per_inference_mj(10) is None
    assert reading.inferences_per_joule(10) is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "needs a reason"),
        ({"reason": "two\nlines"}, "one line"),
        ({"mean_w": -1.0}, "mean_w must be >= 0"),
        ({"mean_w": 1.0, "energy_j": -0.5}, "energy_j must be >= 0"),
    ],
)
def test_invalid_readings_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        PowerReading(source="nvml", **fields)


def test_none_sampler_gives_an_empty_reading_with_its_reason():
    sampler = NoneSampler("power off\nby option")
    sampler.start()
    reading = sampler.stop()
    assert (reading.source, reading.mean_w, reading.reason) == ("none", None, "power off by option")
    assert NoneSampler.unavailable_reason() is None


def test_stop_without_start_is_an_empty_reading(tmp_path):
    reading = RaplSampler(root=tmp_path).stop()
    assert reading.reason == "rapl: stop() without start()"


def test_interval_must_be_positive():
    with pytest.raises(ValueError, match="interval must be > 0 s, got -1"):
        RaplSampler(interval_s=-1)
