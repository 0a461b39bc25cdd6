"""Pick the engine for a (backend, variant) pair, or say why the pair cannot run."""

from __future__ import annotations

from pathlib import Path

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
    if spec.kind == "trt-implicit" and cfg.backend != "tensorrt":
        return f"{spec.name} uses TensorRT's own calibrator; it needs --backend tensorrt"
    if cfg.backend == "torch" and spec.kind not in ("reference", "fp16"):
        return f"the torch reference engine runs fp32 and fp16 only, not {spec.name}"
    if cfg.backend == "torch" and spec.kind == "fp16" and cfg.device == "cpu":
        return "fp16 on the torch CPU engine is not a deployment path; use --device cuda"
    device = "cuda" if cfg.backend == "tensorrt" else cfg.device
    return engine_class(cfg.backend).unavailable_reason(device)


def make_engine(cfg: BenchConfig, spec: VariantSpec, artifact: Path) -> Engine:
    if cfg.backend == "onnxruntime":
        return engine_class("onnxruntime")(artifact, device=cfg.device, threads=cfg.threads)
    if cfg.backend == "tensorrt":
        return engine_class("tensorrt")(artifact, device="cuda", variant=spec.name,
                                        cache_dir=cfg.cache_dir / "engines")
    if cfg.backend == "torch":
        precision = "fp16" if spec.kind == "fp16" else "fp32"
        return engine_class("torch")(artifact, device=cfg.device, precision=precision)
    raise EngineUnavailable(f"backend {cfg.backend!r} unknown")
