"""Pick the engine for a (backend, variant) pair, or say why the pair cannot run.

The backend comes from the registry (bench.engines.registry); each engine class decides
its own options from the config (from_config) and its own variant limits (skip_reason).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from bench.engines.base import Batches, Engine
from bench.engines.registry import engine_class

if TYPE_CHECKING:
    from bench.config import BenchConfig
    from bench.variants import VariantSpec

__all__ = ["engine_class", "make_engine", "skip_reason"]


def skip_reason(cfg: BenchConfig, spec: VariantSpec) -> str | None:
    """Why this variant does not run on this backend and machine, or None."""
    if "torch" in spec.needs and importlib.util.find_spec("torch") is None:
        return f"{spec.name} fine-tunes in PyTorch, which is not installed (pip install '.[torch]')"
    implicit = "tensorrt" in spec.needs or spec.artifact == "trt-implicit"
    if implicit and cfg.backend != "tensorrt":
        return f"{spec.name} uses TensorRT's own calibrator; it needs --backend tensorrt"
    cls = engine_class(cfg.backend)
    reason = cls.skip_reason(cfg, spec)
    if reason is None:
        reason = cls.unavailable_reason(cls.device_for(cfg))
    return reason


def make_engine(cfg: BenchConfig, spec: VariantSpec, artifact_path: Path,
                calibration: Batches | None = None, calibration_id: str = "", *,
                image_size: int | None = None, max_batch: int | None = None) -> Engine:
    """The (inactive) engine for spec's artifact on cfg.backend.

    calibration: batches for TensorRT's own implicit calibrators (trt-implicit only);
    image_size: H and W where the model's are dynamic (the run's --imgsz);
    max_batch: the largest batch the engine must accept (max of --batch, --eval-batch).
    """
    return engine_class(cfg.backend).from_config(
        cfg, spec, Path(artifact_path), calibration=calibration, calibration_id=calibration_id,
        image_size=image_size, max_batch=max_batch)
