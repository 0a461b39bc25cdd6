"""The engine interface, modelled on Polygraphy's runners.

activate() allocates (nothing on a device before it), infer() is synchronous (a GPU
engine synchronises before returning, or timing lies), deactivate() frees.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class Engine(abc.ABC):
    """Runs one model artifact. Subclasses import their runtime lazily."""

    name: str = "engine"

    def __init__(self, model_path: str | Path, *, device: str = "cpu", **options: Any):
        self.model_path = Path(model_path)
        self.device = device
        self.options = options
        self.active = False

    @classmethod
    @abc.abstractmethod
    def unavailable_reason(cls, device: str = "cpu") -> str | None:
        """None when this engine can run here, else a one-line reason to skip with."""

    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _deactivate(self) -> None: ...

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one NCHW float32 batch; return the outputs by name, in model order."""

    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple:
        """The model input's shape; symbolic dims are strings or None."""

    def infer_streams(self, streams: int | None = None) -> list[Callable]:
        """Infer callables that may run at the same time, for throughput work (the
        accuracy pass); streams None lets the engine choose. Each gives the same outputs
        as infer(). This engine runs one inference at a time: [self.infer]."""
        return [self.infer]

    def extra_info(self) -> dict[str, Any]:
        """Engine-specific figures for the report (e.g. GPU compute time)."""
        return {}

    def activate(self) -> Engine:
        if not self.active:
            self._activate()
            self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def __enter__(self) -> Engine:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()
