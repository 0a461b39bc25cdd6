"""Pick the engine for a (backend, variant) pair, or say why the pair cannot run."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from bench.config import BenchConfig
from bench.engines.base import Engine
from bench.errors import EngineUnavailable
from bench.variants import VariantSpec


def engine_class(backend: str) -> type[Engine]:
    if backend == "onnxruntime":
        from bench.engines.ort import OrtEngine

        return OrtEngine
    if backend == "tensorrt":
        from bench.engines.trt import TrtEngine

        return TrtEngine
    from bench.engines.pytorch import TorchEngine

    return TorchEngine


def skip_reason(cfg: BenchConfig, spec: VariantSpec) -> str | None:
    """Why this variant does not run on this backend and machine, or None."""
    if "torch" in spec.needs and importlib.util.find_spec("torch") is None:
        return f"{spec.name} fine-tunes in PyTorch, which is not installed (pip install '.[torch]')"
    if spec.artifact == "trt-implicit" and cfg.backend != "tensorrt":
        return f"{spec.name} uses TensorRT's own calibrator; it needs --backend tensorrt"
    if cfg.backend == "torch" and spec.artifact not in ("fp32", "fp16"):
        return f"the torch reference engine runs fp32 and fp16 only, not {spec.name}"
    if cfg.backend == "torch" and spec.artifact == "fp16" and cfg.device == "cpu":
        return "fp16 on the torch CPU engine is not a deployment path; use --device cuda"
    device = "cuda" if cfg.backend == "tensorrt" else cfg.device
    reason = engine_class(cfg.backend).unavailable_reason(device)
    if reason is None and cfg.backend == "tensorrt":
        reason = engine_class("tensorrt").variant_unavailable_reason(spec.name)
    return reason


def make_engine(cfg: BenchConfig, spec: VariantSpec, artifact: Path,
                calibration: Callable[[], Iterable[np.ndarray]] | None = None,
                calibration_id: str = "") -> Engine:
    """calibration: batches for TensorRT's own implicit calibrators (trt-* variants only)."""
    if cfg.backend == "onnxruntime":
        return engine_class("onnxruntime")(artifact, device=cfg.device, threads=cfg.threads)
    if cfg.backend == "tensorrt":
        implicit = spec.artifact == "trt-implicit" and calibration is not None
        return engine_class("tensorrt")(
            artifact, device="cuda", variant=spec.name, batch=cfg.batch,
            cache_dir=Path(cfg.cache_dir) / "engines",
            calibration=list(calibration()) if implicit else None,
            calibration_id=calibration_id if implicit else "")
    if cfg.backend == "torch":
        precision = "fp16" if spec.artifact == "fp16" else "fp32"
        return engine_class("torch")(artifact, device=cfg.device, precision=precision)
    raise EngineUnavailable(f"backend {cfg.backend!r} unknown")
