"""The power-source registry: one unavailable_reason(options) signature, a toy source
registered in one line, and NVML finding the engine's GPU by PCI bus id."""

from __future__ import annotations

import inspect
import sys
import time
import types
from pathlib import Path

import pytest

from bench.errors import ConfigError
from bench.power import registry
from bench.power.auto import make_sampler
from bench.power.base import PowerOptions, PowerReading, Sampler
from bench.power.nvml import NvmlSampler, nvml_target

sys.path.insert(0, str(Path(__file__).parents[1] / "engines"))  # the strict CUDA stand-in
import strict_cuda  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:distro.linux_distribution:DeprecationWarning")


class ToySampler(Sampler):
    source = "toy"

    def __init__(self, watts: float = 4.0):
        self.watts = watts

    @classmethod
    def unavailable_reason(cls, options: PowerOptions | None = None) -> str | None:
        return None

    @classmethod
    def from_options(cls, options: PowerOptions) -> ToySampler:
        return cls(watts=1.0 / options.interval_s)

    def start(self) -> None:
        pass

    def stop(self) -> PowerReading:
        return PowerReading(source=self.source, mean_w=self.watts, energy_j=self.watts,
                            window_s=1.0, samples=1)


@pytest.fixture
def toy_source(monkeypatch):
    monkeypatch.setattr(registry, "SOURCES", dict(registry.SOURCES))
    monkeypatch.setattr(registry, "AUTO_ORDER", list(registry.AUTO_ORDER))
    monkeypatch.setattr("bench.power.auto.AUTO_ORDER", registry.AUTO_ORDER)
    registry.register_source("toy", ToySampler, auto_before="jtop")


def test_a_toy_source_is_one_registry_line(toy_source):
    sampler = make_sampler("toy", interval_s=0.25)
    assert isinstance(sampler, ToySampler) and sampler.stop().mean_w == 4.0
    assert isinstance(make_sampler("auto"), ToySampler)  # first in auto's order
    with pytest.raises(ConfigError, match="expected one of auto, jtop, nvml, rapl, none, toy"):
        make_sampler("tegrastats")


def test_every_source_has_one_unavailable_reason_signature(tmp_path):
    for name in registry.SOURCES:
        cls = registry.sampler_class(name)
        params = list(inspect.signature(cls.unavailable_reason).parameters)
        assert params == ["options"], (name, params)
        reason = cls.unavailable_reason(PowerOptions(rapl_root=tmp_path / "none"))
        assert reason is None or (isinstance(reason, str) and "\n" not in reason)


def fake_pynvml(bus_ids: list[str]) -> types.ModuleType:
    """NVML numbers GPUs in PCI order; each GPU reports its bus id in its name here."""
    nvml = types.ModuleType("pynvml")

    class NVMLError(Exception):
        def __init__(self, value):
            super().__init__(f"NVML error {value}")
            self.value = value

    nvml.NVMLError, nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_NOT_FOUND = NVMLError, 3, 6
    nvml.NVML_CLOCK_SM, nvml.NVML_CLOCK_MEM = 1, 2
    ordered = sorted(bus_ids)
    nvml.nvmlInit = nvml.nvmlShutdown = lambda: None
    nvml.nvmlDeviceGetCount = lambda: len(ordered)
    nvml.nvmlDeviceGetHandleByIndex = lambda index: ordered[index]

    def by_bus_id(bus_id: str) -> str:
        domain, rest = bus_id.lower().split(":", 1)
        for known in ordered:
            if known.endswith(rest) and int(known.split(":")[0], 16) == int(domain, 16):
                return known
        raise NVMLError(nvml.NVML_ERROR_NOT_FOUND)

    nvml.nvmlDeviceGetHandleByPciBusId = by_bus_id
    nvml.nvmlDeviceGetPowerUsage = lambda handle: 50_000 + 1000 * ordered.index(handle)  # mW
    nvml.nvmlDeviceGetTotalEnergyConsumption = (  # mJ: constant power since t = 0
        lambda handle: int(nvml.nvmlDeviceGetPowerUsage(handle) * time.monotonic()))
    nvml.nvmlDeviceGetName = lambda handle: f"GPU at {handle}"
    nvml.nvmlSystemGetDriverVersion = lambda: "550.1"
    nvml.nvmlDeviceGetClockInfo = lambda handle, clock: 1000
    nvml.nvmlDeviceGetEnforcedPowerLimit = lambda handle: 300_000
    return nvml


def test_nvml_takes_the_engines_gpu_by_pci_bus_id(monkeypatch):
    # CUDA orders fastest first: cuda:0 sits at bus 3b, which is NVML's index 1.
    gpu = strict_cuda.FakeGpu(names=("fast", "slow"), pci_bus_ids=(0x3B, 0x1A))
    strict_cuda.install(monkeypatch, gpu, "pycuda")
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(["00000000:1a:00.0",
                                                            "00000000:3b:00.0"]))
    assert nvml_target(PowerOptions(cuda_device="cuda:0")) == (0, "0000:3b:00.0")
    assert nvml_target(PowerOptions(cuda_device="cuda:1")) == (0, "0000:1a:00.0")
    assert nvml_target(PowerOptions(nvml_device=1, cuda_device="cuda:1")) == (1, None)
    assert NvmlSampler.unavailable_reason(PowerOptions(cuda_device="cuda:0")) is None
    sampler = make_sampler("nvml", interval_s=0.02, cuda_device="cuda:0")
    sampler.start()
    time.sleep(0.15)  # a few sampling intervals, even on loaded cores (a window needs samples)
    reading = sampler.stop()
    assert reading.reason is None, reading.reason
    assert reading.meta["gpu_name"] == "GPU at 00000000:3b:00.0"
    assert reading.meta["matched_by"] == "pci_bus_id"
    assert reading.mean_w == pytest.approx(51.0, rel=0.05)  # NVML index 1's power
    by_index = make_sampler("nvml", interval_s=0.02)  # no engine device: NVML's GPU 0
    by_index.start()
    time.sleep(0.15)
    assert by_index.stop().meta["gpu_name"] == "GPU at 00000000:1a:00.0"
