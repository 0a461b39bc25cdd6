"""The variant registry: variant name -> how its artifact is built.

Every variant is an ONNX file: the FP32 model as given, an FP16 conversion, or a Q/DQ
model (explicit quantization) whose activation ranges come from one calibration method.
The same Q/DQ file runs on ONNX Runtime and on TensorRT; the engine decides the rest
(TensorRT's FP16 builder flag, its own implicit calibrators for the trt-* variants).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bench import __version__
from bench.cache import Artifact, ArtifactCache, file_sha256
from bench.config import KEEP_FLOAT_FLAGS, BenchConfig
from bench.errors import ConfigError, ModelError


@dataclass(frozen=True)
class VariantSpec:
    """name: the report's row label; kind: how it is built; method: its calibrator."""

    name: str
    kind: str  # reference | fp16 | ptq | qat | trt-implicit
    method: str | None = None


REGISTRY: dict[str, VariantSpec] = {
    spec.name: spec
    for spec in (
        VariantSpec("fp32", "reference"),
        VariantSpec("fp16", "fp16"),
        VariantSpec("int8-max", "ptq", "max"),
        VariantSpec("int8-entropy", "ptq", "entropy"),
        VariantSpec("int8-percentile", "ptq", "percentile"),
        VariantSpec("int8-mse", "ptq", "mse"),
        VariantSpec("int8-qat", "qat"),
        VariantSpec("trt-entropy2", "trt-implicit", "entropy2"),
        VariantSpec("trt-minmax", "trt-implicit", "minmax"),
    )
}


def spec_of(name: str) -> VariantSpec:
    if name not in REGISTRY:
        raise ConfigError(f"variant {name!r}: unknown; expected one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


CalibBatches = Callable[[], Iterator[np.ndarray]]


@dataclass
class BuildContext:
    """What every builder may use; calibration histograms are shared between PTQ methods."""

    cfg: BenchConfig
    model_path: Path
    calib_batches: CalibBatches
    calib_id: str  # identifies the calibration images (source + count + imgsz)
    cache: ArtifactCache
    qat_batches: CalibBatches | None = None
    # PTQ method -> mAP measured in this run; int8-qat's "best" init picks from it.
    ptq_maps: dict[str, float] = field(default_factory=dict)
    _histograms: dict[str, Any] | None = None

    def qat_init_method(self) -> str:
        """The PTQ calibration QAT starts from: as configured, or the best measured so far
        (mse when no PTQ variant has been measured in this run)."""
        if self.cfg.qat_init != "best":
            return self.cfg.qat_init
        return max(self.ptq_maps, key=self.ptq_maps.get) if self.ptq_maps else "mse"

    @property
    def model_sha(self) -> str:
        return file_sha256(self.model_path)

    def key_parts(self, variant: str, **extra: Any) -> dict[str, Any]:
        return {"model": self.model_sha, "variant": variant, "bench": __version__,
                "onnx": onnx.__version__, **_tool_versions(), **extra}


def build_variant(name: str, ctx: BuildContext) -> Artifact:
    """Build (or fetch from the cache) the ONNX artifact of one variant."""
    spec = spec_of(name)
    builder = _BUILDERS[spec.kind]
    return builder(spec, ctx)


def _reference(spec: VariantSpec, ctx: BuildContext) -> Artifact:
    path = ctx.model_path
    return Artifact(path, path.stat().st_size, 0.0, True, {"source": "as given"})


def _trt_implicit(spec: VariantSpec, ctx: BuildContext) -> Artifact:
    # TensorRT calibrates the FP32 network itself; the artifact is the FP32 ONNX.
    return _reference(spec, ctx)


def _fp16(spec: VariantSpec, ctx: BuildContext) -> Artifact:
    from bench.quant.fp16 import convert_to_fp16

    if ctx.cfg.backend == "tensorrt" and _trt_onnx_kind(spec.name) == "fp32":
        return _reference(spec, ctx)  # TensorRT < 11 builds FP16 from FP32 with a flag

    def build(out: Path) -> dict[str, Any]:
        onnx.save(convert_to_fp16(_load(ctx.model_path)), str(out))
        return {}

    return ctx.cache.get_or_build("fp16", ctx.key_parts(spec.name), ".onnx", build)


def _ptq(spec: VariantSpec, ctx: BuildContext) -> Artifact:
    parts = ctx.key_parts(spec.name, **_quant_settings(ctx, spec.method))

    def build(out: Path) -> dict[str, Any]:
        from bench.quant.qdq import write_qdq

        model, plan = quant_plan(ctx)
        amax = calibrate(ctx, plan, spec.method)
        onnx.save(write_qdq(model, plan, amax, profile=ctx.cfg.profile), str(out))
        return {"method": spec.method, "profile": ctx.cfg.profile,
                "quantized_tensors": len(plan.activation_tensors), "amax": amax}

    return ctx.cache.get_or_build("int8", parts, ".onnx", build)


def _qat(spec: VariantSpec, ctx: BuildContext) -> Artifact:
    from bench.quant.qat import build_qat_variant

    return build_qat_variant(spec, ctx)


_BUILDERS: dict[str, Callable[[VariantSpec, BuildContext], Artifact]] = {
    "reference": _reference,
    "fp16": _fp16,
    "ptq": _ptq,
    "qat": _qat,
    "trt-implicit": _trt_implicit,
}


def _quant_settings(ctx: BuildContext, method: str | None) -> dict[str, Any]:
    settings = {"method": method, "profile": ctx.cfg.profile, "calib": ctx.calib_id,
                "keep_float": list(ctx.cfg.keep_float)}
    if method == "percentile":
        settings["percentile"] = ctx.cfg.percentile
    return settings


def _load(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"model {path}: not a readable ONNX file ({exc})") from None


def quant_plan(ctx: BuildContext) -> tuple[onnx.ModelProto, Any]:
    """The FP32 model and its Q/DQ plan, with the configured kept-float set."""
    from bench.quant.placement import KeepFloat, plan_quantization

    model = _load(ctx.model_path)
    names = ctx.cfg.keep_float
    keep = KeepFloat(first_conv="first_conv" in names, head="head" in names,
                     decode="decode" in names,
                     nodes=tuple(n for n in names if n not in KEEP_FLOAT_FLAGS))
    return model, plan_quantization(model, keep_float=keep)


def calibrate(ctx: BuildContext, plan: Any, method: str) -> dict[str, float]:
    """amax per planned activation tensor; the histograms are collected once per run."""
    from bench.quant.calibrators import compute_amax

    histograms = collect_once(ctx, plan)
    return {name: float(compute_amax(hist, method, percentile=ctx.cfg.percentile))
            for name, hist in histograms.items()}


def collect_once(ctx: BuildContext, plan: Any) -> dict[str, Any]:
    from bench.quant.collect import collect_histograms

    if ctx._histograms is None:
        ctx._histograms = collect_histograms(
            ctx.model_path, list(plan.activation_tensors), ctx.calib_batches(),
            progress=ctx.cfg.progress, total=ctx.cfg.calib_count)
    return ctx._histograms


def _trt_onnx_kind(variant: str) -> str:
    from bench.engines.trt import TrtEngine

    return TrtEngine.artifact_kind(variant)


def _tool_versions() -> dict[str, str]:
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
