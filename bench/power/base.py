"""The power sampler interface and its immutable reading."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

DEFAULT_INTERVAL_S = 0.1
DEFAULT_POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True)
class PowerOptions:
    """What any power source may need; each reads the fields it knows.

    interval_s: sampling interval; rapl_root: the powercap tree RAPL reads;
    nvml_device: an NVML index, or None for the GPU that is cuda_device (matched by PCI
    bus id, since NVML enumerates by PCI order and CUDA fastest first), else GPU 0;
    cuda_device: the engine's device ("cuda", "cuda:1"), or None.
    """

    interval_s: float = DEFAULT_INTERVAL_S
    rapl_root: Path = DEFAULT_POWERCAP
    nvml_device: int | None = None
    cuda_device: str | None = None


@dataclass(frozen=True)
class PowerReading:
    """What one sampling window measured.

    Empty (mean_w None) with a reason when the source could not measure.
    energy_j is the integral of the sampled power over the window (trapezoids),
    or a hardware energy counter's difference where the source has one.
    """

    source: str
    mean_w: float | None = None
    energy_j: float | None = None
    window_s: float | None = None
    samples: int = 0
    interval_s: float | None = None
    rails: Mapping[str, float] = field(default_factory=dict)  # rail -> mean W
    meta: Mapping[str, Any] = field(default_factory=dict)  # power mode, clocks, board, ...
    reason: str | None = None

    def __post_init__(self) -> None:
        # read-only copies: a reading is a record, and the caller's dicts stay its own
        object.__setattr__(self, "rails", MappingProxyType(dict(self.rails)))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))
        if self.mean_w is None and not self.reason:
            raise ValueError("an empty PowerReading needs a reason")
        if self.reason and "\n" in self.reason:
            raise ValueError(f"PowerReading.reason must be one line, got {self.reason!r}")
        for name in ("mean_w", "energy_j", "window_s", "interval_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"PowerReading.{name} must be >= 0, got {value}")

    @classmethod
    def empty(cls, source: str, reason: str, **fields: Any) -> PowerReading:
        """A reading with no figures; the reason is folded onto one line."""
        return cls(source=source, reason=one_line(reason), **fields)

    @property
    def is_empty(self) -> bool:
        return self.mean_w is None

    def energy_per_inference_mj(self, inferences: int) -> float | None:
        if self.energy_j is None or inferences <= 0:
            return None
        return 1000.0 * self.energy_j / inferences

    def inferences_per_joule(self, inferences: int) -> float | None:
        if not self.energy_j or inferences <= 0:
            return None
        return inferences / self.energy_j


def one_line(text: str) -> str:
    """Collapse a multi-line message (jtop's, NVML's) into one line."""
    return " ".join(str(text).split())


class Sampler(abc.ABC):
    """Samples power in a background thread between start() and stop()."""

    source: str = "none"

    @classmethod
    @abc.abstractmethod
    def unavailable_reason(cls, options: PowerOptions | None = None) -> str | None:
        """None when this source can be read here (under options), else why not."""

    @classmethod
    def from_options(cls, options: PowerOptions) -> Sampler:
        """The sampler for options (a source with an interval overrides this)."""
        return cls()

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> PowerReading: ...

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:  # noqa: B027 - deliberately a no-op
        # stop() is called explicitly to get the reading; the context only marks the window.
        pass
