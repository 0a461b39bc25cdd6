"""Variant builders: a VariantSpec's builder -> its ONNX artifact, cached by content.

Every variant is an ONNX file: the FP32 model as given, an FP16 conversion, or a Q/DQ
model (explicit quantization) whose activation ranges come from one calibrator. The same
Q/DQ file runs on ONNX Runtime and on TensorRT; the engine decides the rest (TensorRT's
FP16 builder flag, its own implicit calibrators for the trt-* variants).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import __version__
from bench.cache import Artifact, ArtifactCache
from bench.config import BenchConfig
from bench.model_hash import model_fingerprint
from bench.quant.ptq import Histograms, quant_plan
from bench.variants import VariantSpec, spec_of

CalibBatches = Callable[[], Iterator[np.ndarray]]


@dataclass
class BuildContext:
    """What every builder may use; calibration histograms are shared between PTQ methods.

    fixed_batch: the model's static batch dimension (None when it is dynamic); every
    batch fed to the model (calibration, QAT) has that size.
    """

    cfg: BenchConfig
    model_path: Path
    calib_batches: CalibBatches
    calib_id: str  # identifies the calibration images (contents + count + imgsz)
    cache: ArtifactCache
    qat_batches: CalibBatches | None = None
    qat_calib_id: str = ""  # identifies the QAT images (contents + count + batch)
    fixed_batch: int | None = None
    # calibrator -> mAP measured in this run; int8-qat's "best" init picks from it.
    ptq_maps: dict[str, float] = field(default_factory=dict)
    _histograms: Histograms | None = None

    def qat_init_method(self) -> str:
        """The PTQ calibration QAT starts from: as configured, or the best measured so far
        (mse when no PTQ variant has been measured in this run)."""
        if self.cfg.qat_init != "best":
            return self.cfg.qat_init
        return max(self.ptq_maps, key=self.ptq_maps.get) if self.ptq_maps else "mse"

    @property
    def model_sha(self) -> str:
        """The model's canonical fingerprint: graph and weights, not metadata, so a model
        re-saved with value_info (as ModelOpt does in place) keeps its artifacts."""
        return model_fingerprint(self.model_path)

    def key_parts(self, variant: str, **extra: Any) -> dict[str, Any]:
        return {"model": self.model_sha, "variant": variant, "bench": __version__,
                **tool_versions(), **extra}

    def quant_plan(self, float_nodes: tuple[str, ...] = ()) -> tuple[Any, Any]:
        """The FP32 model and its plan: --keep-float, plus float_nodes (node names or
        globs, e.g. int8-auto's groups for int8-qat --qat-plan auto) left float too."""
        return quant_plan(self.model_path, (*self.cfg.keep_float, *float_nodes))

    @property
    def calibration_seconds(self) -> float | None:
        """How long collecting the calibration histograms took (None: not collected)."""
        return self._histograms.seconds if self._histograms is not None else None

    def calibrate(self, plan: Any, method: str) -> dict[str, float]:
        """amax per planned activation tensor; the histograms are collected once per run
        (a plan with a tensor the run's histograms lack gets a collection of its own)."""
        if self._histograms is None:
            self._histograms = self._new_histograms()
        if not self._histograms.covers(plan):
            return self._new_histograms().amax(plan, method, self.cfg.percentile)
        return self._histograms.amax(plan, method, self.cfg.percentile)

    def _new_histograms(self) -> Histograms:
        return Histograms(self.model_path, self.calib_batches, total=self.cfg.calib_count,
                          progress=self.cfg.progress)


def build_variant(name: str, ctx: BuildContext) -> Artifact:
    """Build (or fetch from the cache) the ONNX artifact of one variant."""
    spec = spec_of(name)
    return BUILDERS[spec.builder](spec, ctx)


def _reference(spec: VariantSpec, ctx: BuildContext) -> Artifact:
    path = ctx.model_path
    return Artifact(path, path.stat().st_size, 0.0, True, {"source": "as given"})


def _fp16(spec: VariantSpec, ctx: BuildContext) -> Artifact:
    import onnx

    from bench.onnx_file import load_model
    from bench.quant.fp16 import block_ops_for, convert_to_fp16

    if ctx.cfg.backend == "tensorrt" and _trt_onnx_kind(spec) == "fp32":
        return _reference(spec, ctx)  # TensorRT < 11 builds FP16 from FP32 with a flag
    blocked = block_ops_for(ctx.cfg.backend, ctx.cfg.device)

    def build(out: Path) -> dict[str, Any]:
        onnx.save(convert_to_fp16(load_model(ctx.model_path), block_ops=blocked), str(out))
        return {"fp32_ops": sorted(blocked)}

    parts = ctx.key_parts(spec.name, fp32_ops=sorted(blocked))
    return ctx.cache.get_or_build("fp16", parts, ".onnx", build)


def _ptq(spec: VariantSpec, ctx: BuildContext) -> Artifact:
    import onnx

    parts = ctx.key_parts(spec.name, **quant_settings(ctx, spec.calibrator))

    def build(out: Path) -> dict[str, Any]:
        from bench.quant.qdq import write_qdq

        model, plan = ctx.quant_plan()
        amax = ctx.calibrate(plan, spec.calibrator)
        onnx.save(write_qdq(model, plan, amax, profile=ctx.cfg.profile), str(out))
        return {"method": spec.calibrator, "profile": ctx.cfg.profile,
                "quantized_tensors": len(plan.activation_tensors), "amax": amax}

    return ctx.cache.get_or_build("int8", parts, ".onnx", build)


def _auto(spec: VariantSpec, ctx: BuildContext) -> Artifact:
    from bench.diagnose.auto import build_auto

    return build_auto(spec, ctx)


def _qat(spec: VariantSpec, ctx: BuildContext) -> Artifact:
    from bench.quant.qat import build_qat_variant

    return build_qat_variant(spec, ctx)


# builder name (VariantSpec.builder) -> function; one line per way of making an artifact.
BUILDERS: dict[str, Callable[[VariantSpec, BuildContext], Artifact]] = {
    "reference": _reference,
    "fp16": _fp16,
    "ptq": _ptq,
    "qat": _qat,
    "auto": _auto,  # int8-auto: bench/diagnose/auto.py
}


def quant_settings(ctx: BuildContext, method: str | None) -> dict[str, Any]:
    from bench.quant.qdq import FORMAT_VERSION

    settings = {"method": method, "profile": ctx.cfg.profile, "calib": ctx.calib_id,
                "keep_float": list(ctx.cfg.keep_float), "qdq_format": FORMAT_VERSION}
    if method == "percentile":
        settings["percentile"] = ctx.cfg.percentile
    return settings


def _trt_onnx_kind(spec: VariantSpec) -> str:
    from bench.engines.trt import TrtEngine

    return TrtEngine.artifact_kind(spec.artifact, spec.calibrator)


def tool_versions() -> dict[str, str]:
    """Versions that change what a builder writes, read without importing the packages."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name, dists in (("onnx", ("onnx",)), ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
                        ("numpy", ("numpy",))):
        found[name] = "none"
        for dist in dists:
            try:
                found[name] = version(dist)
                break
            except PackageNotFoundError:
                continue
    return found
