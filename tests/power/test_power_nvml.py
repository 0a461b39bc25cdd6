"""The NVML sampler: the real nvidia-ml-py's reason here, and the sampling logic on a
small stand-in device (no NVIDIA GPU exists on this machine)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.power.auto import make_sampler
from bench.power.nvml import NvmlSampler

HAS_DRIVER = Path("/proc/driver/nvidia").exists()
BASE_W, SLOPE_W_PER_S = 100.0, 50.0

# jetson-stats' client calls distro.linux_distribution(), deprecated upstream, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:distro.linux_distribution:DeprecationWarning")


class RampGpu:
    """Power rising linearly in time; the energy counter is its exact integral (mJ->J)."""

    def __init__(self, has_counter: bool = True, fail_after_reads: int | None = None):
        self.t0 = time.monotonic()
        self.has_counter = has_counter
        self.reads_left = fail_after_reads
        self.closed = False

    def _t(self) -> float:
        return time.monotonic() - self.t0

    def power_w(self) -> float:
        if self.reads_left is not None:
            if self.reads_left == 0:
                raise RuntimeError("GPU is lost (Xid 79)")
            self.reads_left -= 1
        return BASE_W + SLOPE_W_PER_S * self._t()

    def energy_j(self) -> float | None:
        if not self.has_counter:
            return None
        t = self._t()
        return 5000.0 + BASE_W * t + 0.5 * SLOPE_W_PER_S * t * t  # counts since boot

    def describe(self) -> dict:
        return {
            "gpu_name": "Ramp GPU",
            "driver_version": "999.1",
            "sm_clock_mhz": 1980,
            "mem_clock_mhz": 2619,
            "power_limit_w": 700.0,
        }

    def close(self) -> None:
        self.closed = True


def _sample(device: RampGpu, seconds: float = 0.5):
    sampler = NvmlSampler(interval_s=0.02, device=device)
    sampler.start()
    time.sleep(seconds)
    return sampler.stop()


def test_energy_comes_from_the_counter_with_the_samples_beside_it():
    gpu = RampGpu()
    reading = _sample(gpu)
    end = time.monotonic() - gpu.t0
    expected_mean = BASE_W + SLOPE_W_PER_S * (end - reading.window_s / 2)
    assert reading.reason is None, reading.reason
    assert reading.meta["energy_from"] == "counter"
    assert reading.energy_j == reading.meta["counter_energy_j"]
    assert abs(reading.meta["counter_vs_samples_pct"]) < 5.0
    assert reading.mean_w == pytest.approx(expected_mean, rel=0.05)
    assert reading.energy_j == pytest.approx(reading.mean_w * reading.window_s)
    assert reading.rails["gpu"] == pytest.approx(reading.mean_w, rel=0.05)
    assert reading.samples >= 10
    assert reading.meta["gpu_name"] == "Ramp GPU"
    assert reading.meta["power_limit_w"] == 700.0
    assert not gpu.closed  # a device handed in belongs to the caller


def test_without_a_counter_energy_is_the_integral_of_the_samples():
    reading = _sample(RampGpu(has_counter=False))
    assert reading.meta["energy_from"] == "samples"
    assert reading.meta["counter_energy_j"] is None
    assert reading.energy_j == reading.meta["sampled_energy_j"]
    assert reading.energy_j == pytest.approx(reading.mean_w * reading.window_s)


def test_gpu_lost_mid_run_gives_an_empty_reading():
    reading = _sample(RampGpu(fail_after_reads=5), seconds=0.3)
    assert reading.mean_w is None
    assert reading.reason == ("nvml: failed after 5 samples: RuntimeError: GPU is lost (Xid 79)")


@pytest.mark.skipif(HAS_DRIVER, reason="an NVIDIA driver is present; see the test below")
def test_real_pynvml_says_why_in_one_line():
    import pynvml  # the real nvidia-ml-py: without a driver it cannot load libnvidia-ml

    reason = NvmlSampler.unavailable_reason()
    assert reason.startswith("nvml: NVMLError_LibraryNotFound: ")
    assert "no NVIDIA driver" in reason and "\n" not in reason
    assert isinstance(pynvml.NVMLError_LibraryNotFound("x"), pynvml.NVMLError)
    sampler = make_sampler("nvml")
    sampler.start()
    reading = sampler.stop()
    assert reading.mean_w is None
    assert reading.reason == "nvml: cannot start: " + reason.removeprefix("nvml: ")


@pytest.mark.skipif(not HAS_DRIVER, reason="needs an NVIDIA GPU and driver")
def test_real_gpu_counter_and_samples_agree():
    assert NvmlSampler.unavailable_reason() is None
    sampler = NvmlSampler(interval_s=0.05)
    sampler.start()
    time.sleep(2.0)
    reading = sampler.stop()
    assert reading.mean_w > 0 and reading.meta["gpu_name"]
    if reading.meta["energy_from"] == "counter":
        assert abs(reading.meta["counter_vs_samples_pct"]) < 5.0
