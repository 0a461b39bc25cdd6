"""The engine interface, modelled on Polygraphy's runners.

The base class owns the lifecycle; a backend implements the underscored hooks:

- activate() checks that the runtime is available (unavailable_reason) and that the model
  file exists, then calls _activate(), which allocates (nothing on a device before it);
- infer() refuses unless active, then calls _infer(), which is synchronous (a GPU engine
  synchronises before returning, or timing lies);
- deactivate() calls _deactivate(), which frees.

Options are one frozen dataclass per engine (Engine.Options), never **kwargs, and every
engine is built from the run's config by its own from_config().
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bench.errors import BenchError, EngineUnavailable, ModelError

if TYPE_CHECKING:
    from bench.config import BenchConfig
    from bench.variants import VariantSpec

Batches = Callable[[], Iterable[np.ndarray]]


@dataclass(frozen=True)
class EngineOptions:
    """An engine without options of its own."""


class Engine(abc.ABC):
    """Runs one model artifact. Subclasses import their runtime lazily."""

    name: ClassVar[str] = "engine"
    Options: ClassVar[type] = EngineOptions
    # Idle seconds the latency pass waits before timing this engine after another ran:
    # long enough for a runtime's worker threads to stop spinning. Conservative by default;
    # an engine whose threads stop when a call returns sets 0.
    settle_pause_s: ClassVar[float] = 0.05

    def __init__(self, model_path: str | Path, *, device: str = "cpu",
                 options: Any = None):
        self.model_path = Path(model_path)
        self.device = device
        self.options = self.Options() if options is None else options
        if not isinstance(self.options, self.Options):
            raise TypeError(f"{type(self).__name__} options: expected {self.Options.__name__}, "
                            f"got {type(self.options).__name__}")
        self.active = False

    # -- what a backend implements ----------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def unavailable_reason(cls, device: str = "cpu") -> str | None:
        """None when this engine can run here, else a one-line reason to skip with."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, cfg: BenchConfig, spec: VariantSpec, artifact_path: Path, *,
                    calibration: Batches | None = None, calibration_id: str = "",
                    image_size: int | None = None, max_batch: int | None = None) -> Engine:
        """The engine for one variant's artifact under the run's config."""

    @classmethod
    def device_for(cls, cfg: BenchConfig) -> str:
        """The device this backend runs on under cfg (probed by skip_reason)."""
        return cfg.device

    @classmethod
    def skip_reason(cls, cfg: BenchConfig, spec: VariantSpec) -> str | None:
        """Why this backend cannot run spec (beyond the runtime being missing), or None."""
        return None

    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _deactivate(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple:
        """The model input's shape; symbolic dims are strings or None."""

    # -- optional hooks (no-ops here) -------------------------------------------------

    def reset_timings(self) -> None:
        """Forget per-call device times so far (between the accuracy and latency passes)."""
        return None

    def runtime_version(self) -> str | None:
        """The runtime's version (e.g. '1.20.1' for onnxruntime), None when it has none to say."""
        return None

    def device_name(self) -> str | None:
        """The accelerator's name (e.g. the GPU), None on the CPU or when unknown."""
        return None

    def infer_streams(self, streams: int | None = None) -> list[Callable]:
        """Infer callables that may run at the same time, for throughput work (the
        accuracy pass); streams None lets the engine choose. Each gives the same outputs
        as infer(). This engine runs one inference at a time: [self.infer]."""
        return [self.infer]

    def extra_info(self) -> dict[str, Any]:
        """Engine-specific figures for the report (e.g. GPU compute time)."""
        return {}

    # -- the lifecycle ------------------------------------------------------------------

    def activate(self) -> Engine:
        if self.active:
            return self
        reason = self.unavailable_reason(self.device)
        if reason:
            raise EngineUnavailable(reason)
        if not self.model_path.is_file():
            raise ModelError(f"model {self.model_path}: file not found")
        self._activate()
        self.active = True
        return self

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one NCHW float32 batch; return the outputs by name, in model order."""
        if not self.active:
            raise BenchError(f"{self.name} engine for {self.model_path.name}: infer() before "
                             "activate() (or after deactivate())")
        return self._infer(batch)

    def deactivate(self) -> None:
        if self.active:
            self.active = False
            self._deactivate()

    def __enter__(self) -> Engine:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()
