"""NVML: NVIDIA GPU board power, with the total-energy counter where the GPU has one.

Power samples (nvmlDeviceGetPowerUsage, mW) are integrated over the window; the
total-energy counter (nvmlDeviceGetTotalEnergyConsumption, mJ, Volta and newer) gives
the window's energy directly and is preferred, with the integral of the samples kept
beside it in meta so the two can be checked against each other. On Ampere and newer
(except GA100) the power reading is a 1 s average, which is another reason to prefer
the counter. nvidia-ml-py is imported lazily.
"""

from __future__ import annotations

from typing import Any

from bench.errors import EngineUnavailable
from bench.power.base import PowerOptions, PowerReading, one_line
from bench.power.integrate import median_interval_s, window_energy_j
from bench.power.polling import DEFAULT_INTERVAL_S, PollingSampler


def _import_pynvml() -> Any:
    try:
        import pynvml
    except ImportError as exc:
        raise EngineUnavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from exc
    return pynvml


class NvmlDevice:
    """The NVML queries the sampler needs, on one GPU. Opening it initialises NVML.

    pci_bus_id (e.g. '0000:01:00.0') picks the GPU by bus id instead of index: NVML
    numbers GPUs in PCI order, CUDA fastest first, so index N is not cuda:N in general.
    """

    def __init__(self, index: int = 0, pci_bus_id: str | None = None):
        self._nvml = _import_pynvml()
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as exc:
            hint = " (no NVIDIA driver here)" if "LibraryNotFound" in type(exc).__name__ else ""
            raise EngineUnavailable(f"{type(exc).__name__}: {exc}{hint}") from exc
        try:
            self._handle = self._open(index, pci_bus_id)
        except BaseException:
            self._nvml.nvmlShutdown()
            raise

    def _open(self, index: int, pci_bus_id: str | None) -> Any:
        if pci_bus_id:
            try:
                return self._nvml.nvmlDeviceGetHandleByPciBusId(pci_bus_id)
            except self._nvml.NVMLError as exc:
                raise EngineUnavailable(
                    f"no NVIDIA GPU at PCI bus id {pci_bus_id} ({exc})") from exc
        count = self._nvml.nvmlDeviceGetCount()
        if index >= count:
            raise EngineUnavailable(f"GPU index {index} not present ({count} NVIDIA GPUs)")
        return self._nvml.nvmlDeviceGetHandleByIndex(index)

    def power_w(self) -> float:
        return self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0

    def energy_j(self) -> float | None:
        """The total-energy counter in J, None where the GPU has none."""
        value = self._optional(self._nvml.nvmlDeviceGetTotalEnergyConsumption)
        return None if value is None else value / 1000.0

    def describe(self) -> dict[str, Any]:
        nvml = self._nvml
        limit_mw = self._optional(nvml.nvmlDeviceGetEnforcedPowerLimit)
        return {
            "gpu_name": _text(nvml.nvmlDeviceGetName(self._handle)),
            "driver_version": _text(nvml.nvmlSystemGetDriverVersion()),
            "sm_clock_mhz": self._optional(nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_SM),
            "mem_clock_mhz": self._optional(nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_MEM),
            "power_limit_w": None if limit_mw is None else limit_mw / 1000.0,
        }

    def close(self) -> None:
        self._nvml.nvmlShutdown()

    def _optional(self, query: Any, *args: Any) -> Any:
        try:
            return query(self._handle, *args)
        except self._nvml.NVMLError as exc:
            if exc.value == self._nvml.NVML_ERROR_NOT_SUPPORTED:
                return None
            raise


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlSampler(PollingSampler):
    """GPU board power from NVML; energy from the counter when the GPU has one.

    `device` is an already-open object with NvmlDevice's methods (power_w, energy_j,
    describe, close); by default GPU `device_index` is opened through nvidia-ml-py.
    """

    source = "nvml"

    def __init__(
        self, interval_s: float = DEFAULT_INTERVAL_S, device_index: int = 0, device: Any = None,
        *, pci_bus_id: str | None = None,
    ):
        super().__init__(interval_s)
        self.device_index = device_index
        self.pci_bus_id = pci_bus_id
        self._given = device

    @classmethod
    def from_options(cls, options: PowerOptions) -> NvmlSampler:
        index, bus_id = nvml_target(options)
        return cls(options.interval_s, device_index=index, pci_bus_id=bus_id)

    @classmethod
    def unavailable_reason(cls, options: PowerOptions | None = None) -> str | None:
        device_index, bus_id = nvml_target(options or PowerOptions())
        try:
            device = NvmlDevice(device_index, bus_id)
        except EngineUnavailable as exc:
            return f"nvml: {exc}"
        except Exception as exc:
            return one_line(f"nvml: {type(exc).__name__}: {exc}")
        try:
            device.power_w()
        except Exception as exc:
            return one_line(f"nvml: GPU {device_index} does not report power: {exc}")
        finally:
            device.close()
        return None

    def _open(self) -> None:
        self._device = (self._given if self._given is not None
                        else NvmlDevice(self.device_index, self.pci_bus_id))
        self._counters: list[float] = []
        self._has_counter = self._device.energy_j() is not None

    def _read(self) -> dict[str, float]:
        watts = self._device.power_w()
        if self._has_counter:
            self._counters.append(self._device.energy_j())
        return {"gpu": watts}

    def _close(self) -> None:
        if self._given is None:
            self._device.close()

    def _summarize(self, t0: float, t1: float) -> PowerReading:
        window = t1 - t0
        sampled_j = window_energy_j(self._times, [v["gpu"] for v in self._values], t0, t1)
        counter_j = self._counters[-1] - self._counters[0] if self._has_counter else None
        energy = counter_j if counter_j is not None else sampled_j
        return PowerReading(
            source=self.source,
            mean_w=energy / window if window > 0 else self._values[0]["gpu"],
            energy_j=energy,
            window_s=window,
            samples=len(self._times),
            interval_s=self.interval_s,
            rails={"gpu": sampled_j / window if window > 0 else self._values[0]["gpu"]},
            meta=self._meta(sampled_j, counter_j),
        )

    def _meta(self, sampled_j: float, counter_j: float | None) -> dict[str, Any]:
        meta = dict(self._device.describe())  # at the end of the window, i.e. under load
        meta.update(
            device_index=self.device_index,
            pci_bus_id=self.pci_bus_id,
            matched_by="pci_bus_id" if self.pci_bus_id else "index",
            energy_from="counter" if counter_j is not None else "samples",
            counter_energy_j=counter_j,
            sampled_energy_j=sampled_j,
            counter_vs_samples_pct=_relative_pct(counter_j, sampled_j),
            measured_interval_s=median_interval_s(self._times),
        )
        return meta


def _relative_pct(counter_j: float | None, sampled_j: float) -> float | None:
    if counter_j is None or counter_j <= 0:
        return None
    return 100.0 * (sampled_j - counter_j) / counter_j


def nvml_target(options: PowerOptions) -> tuple[int, str | None]:
    """(NVML index, PCI bus id or None): the explicit index if given, else the GPU that
    is options.cuda_device, found by its PCI bus id; GPU 0 when neither is known."""
    if options.nvml_device is not None:
        return options.nvml_device, None
    if options.cuda_device and str(options.cuda_device).startswith("cuda"):
        from bench.engines.cuda_buffers import cuda_pci_bus_id

        index = int(str(options.cuda_device).partition(":")[2] or 0)
        return 0, cuda_pci_bus_id(index)
    return 0, None
