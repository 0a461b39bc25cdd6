"""int8-auto: the fewest quantization groups left float so that INT8 meets a target mAP.

Starting from nothing kept float (no first conv, head or decode flag, no node globs: the
run's --keep-float is ignored), the builder:

1. calibrates every tensor the empty keep-float plan quantizes (one pass of its own);
2. ranks the plan's groups (bench.quant.placement.quant_groups) by the mAP gained when each
   alone is left float, on the first `AUTO_EVAL_IMAGES` evaluation images
   (bench.diagnose.sensitivity.rank_sensitivity, 1 + N evaluations);
3. leaves groups float in that order until mAP >= target × FP32's on those images, then
   re-quantizes each one that the target does not need (search_keep_float);
4. writes that plan's Q/DQ file through the artifact cache.

The target is the QAT floor (--floor-qat, 0.99 × FP32); the row's own accuracy pass on the
full evaluation set verifies it (its floor group is "qat"). The search images are the
first images of the evaluation set, so the verification is not on unseen images for those.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from bench.build import BuildContext
    from bench.cache import Artifact
    from bench.config import BenchConfig
    from bench.diagnose.sensitivity import Ranking
    from bench.quant.placement import QuantGroup
    from bench.variants import VariantSpec

AUTO_EVAL_IMAGES = 60  # evaluation images the ranking and the search measure on
NOTHING_FLOAT = {"first_conv": False, "head": False, "decode": False}


def auto_settings(ctx: BuildContext, eval_images: int) -> dict[str, Any]:
    """What the search depends on beyond the Q/DQ settings (part of the cache key)."""
    return {"search": "rank-float-greedy-prune", "start": "nothing float",
            "target": ctx.cfg.floor_qat, "eval_images": eval_images,
            "keep_float": []}


def search_images(ctx: BuildContext) -> int:
    return min(AUTO_EVAL_IMAGES, ctx.cfg.eval_count or AUTO_EVAL_IMAGES)


def build_auto(spec: VariantSpec, ctx: BuildContext) -> Artifact:
    """The int8-auto artifact (cached: the search runs once per model, calibration,
    evaluation subset and settings)."""
    from bench.build import quant_settings
    from bench.run import RunContext

    count = search_images(ctx)
    subset = RunContext(replace(ctx.cfg, eval_count=count, progress=False))
    parts = ctx.key_parts(spec.name, **quant_settings(ctx, spec.calibrator),
                          auto=auto_settings(ctx, count),
                          eval_subset=subset.evaluation_fingerprint().digest)
    parts["keep_float"] = []

    def build(out: Path) -> dict[str, Any]:
        return _search_and_write(spec, ctx, subset, out)

    return ctx.cache.get_or_build("int8", parts, ".onnx", build)


@dataclass(frozen=True)
class AutoPlan:
    """int8-auto's plan as int8-qat --qat-plan auto takes it.

    groups: the names of the groups int8-auto kept float (its meta's kept_float);
    nodes: the KeepFloat.nodes that leave exactly those groups float;
    sha256: the int8-auto artifact's hash (what the plan came from, for a cache key).
    """

    groups: tuple[str, ...]
    nodes: tuple[str, ...]
    sha256: str


def auto_plan(ctx: BuildContext, option: str = "qat_plan") -> AutoPlan:
    """Build (or take from the cache) the int8-auto artifact through the registry's builder
    and return the plan it found. A failure is a ConfigError naming `option` -- never a
    silent fall back to the --keep-float plan."""
    from bench.build import build_variant
    from bench.cache import file_sha256
    from bench.engines.factory import skip_reason
    from bench.errors import one_line
    from bench.quant.placement import keep_float_nodes
    from bench.variants import spec_of

    def refused(why: str) -> ConfigError:
        return ConfigError(f"option {option}: 'auto' takes int8-auto's plan, but int8-auto "
                           f"could not be built: {why}; expected a run where int8-auto "
                           f"builds, or --{option.replace('_', '-')} keep-float")

    reason = skip_reason(ctx.cfg, spec_of("int8-auto"))
    if reason:
        raise refused(reason)
    try:
        artifact = build_variant("int8-auto", ctx)
        names = artifact.meta["kept_float"]
        groups = _groups_named(ctx.model_path, names)
    except Exception as exc:  # an unavailable engine too: the int8-qat row fails, not skips
        raise refused(one_line(exc)) from exc
    return AutoPlan(tuple(names), keep_float_nodes(groups),
                    artifact.sha256 or file_sha256(artifact.path))


def _groups_named(model_path: Path, names: Sequence[str]) -> list[QuantGroup]:
    """The groups of the nothing-float plan (what int8-auto searched) with these names."""
    from bench.onnx_file import load_model
    from bench.quant.placement import KeepFloat, plan_quantization, quant_groups

    model = load_model(model_path)
    by_name = {g.name: g for g in quant_groups(
        model, plan_quantization(model, keep_float=KeepFloat(**NOTHING_FLOAT)))}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ModelError(f"int8-auto: kept-float group {unknown[0]!r} is not a group of the "
                         "model's nothing-float plan; expected the groups it searched")
    return [by_name[n] for n in names]


def _search_and_write(spec: VariantSpec, ctx: BuildContext, subset: Any,
                      out: Path) -> dict[str, Any]:
    model, amax, groups, evaluator = _setup(spec, ctx, subset)
    try:
        return _search(spec, ctx, subset, model, amax, groups, evaluator, out)
    finally:
        evaluator.close()


def _setup(spec: VariantSpec, ctx: BuildContext, subset: Any) -> tuple[Any, dict[str, float],
                                                                      tuple[QuantGroup, ...],
                                                                      _Evaluator]:
    """The nothing-float plan calibrated by spec's calibrator, its groups, an evaluator."""
    from bench.onnx_file import load_model
    from bench.quant.placement import KeepFloat, plan_quantization, quant_groups
    from bench.quant.ptq import Histograms

    cfg = ctx.cfg
    model = load_model(ctx.model_path)
    plan = plan_quantization(model, keep_float=KeepFloat(**NOTHING_FLOAT))
    amax = Histograms(ctx.model_path, ctx.calib_batches, total=cfg.calib_count,
                      progress=cfg.progress).amax(plan, spec.calibrator, cfg.percentile)
    groups = quant_groups(model, plan)
    return model, amax, groups, _Evaluator(spec, ctx, subset, model, amax)


def _rank(groups: tuple[QuantGroup, ...], evaluator: _Evaluator, *, progress: bool,
          alone: bool = False) -> tuple[Ranking, float]:
    """rank_sensitivity with a progress bar; the ranking and its seconds."""
    from bench.diagnose.sensitivity import rank_sensitivity
    from bench.progress import bar

    total = 1 + len(groups) + (1 + len(groups) if alone else 0)
    with bar(total=total, desc="sensitivity", unit="eval", enabled=progress) as ticks:
        start = time.perf_counter()
        ranking = rank_sensitivity(groups, evaluator, alone=alone,
                                   progress=lambda _label: ticks.update(1))
    return ranking, time.perf_counter() - start


def rank_variant(cfg: BenchConfig, variant: str, *, images: int = AUTO_EVAL_IMAGES,
                 alone: bool = False) -> tuple[Ranking, float, float]:
    """The sensitivity ranking of an INT8 variant's calibration from nothing kept float, on
    the first `images` evaluation images: (ranking, FP32 mAP there, seconds)."""
    from bench.run import RunContext
    from bench.variants import spec_of

    spec = spec_of(variant)
    if spec.artifact != "qdq" or spec.calibrator is None:
        raise ConfigError(f"variant {variant!r}: not a calibrated Q/DQ variant; expected "
                          "int8-<calibrator> or int8-auto")
    ctx = RunContext(cfg).build_context()
    subset = RunContext(replace(cfg, eval_count=min(images, cfg.eval_count or images),
                                progress=False))
    _, _, groups, evaluator = _setup(spec, ctx, subset)
    try:
        fp32_map = evaluator.fp32()
        ranking, seconds = _rank(groups, evaluator, progress=cfg.progress, alone=alone)
        return ranking, fp32_map, seconds
    finally:
        evaluator.close()


def _search(spec: VariantSpec, ctx: BuildContext, subset: Any, model: Any,
            amax: dict[str, float], groups: tuple[QuantGroup, ...], evaluator: _Evaluator,
            out: Path) -> dict[str, Any]:
    import onnx

    from bench.diagnose.sensitivity import search_keep_float

    cfg = ctx.cfg
    fp32_map = evaluator.fp32()
    target = cfg.floor_qat * fp32_map
    ranking, ranking_s = _rank(groups, evaluator, progress=cfg.progress)
    start = time.perf_counter()
    found = search_keep_float(ranking, evaluator, target)
    search_s = time.perf_counter() - start
    final = evaluator.plan(found.groups)
    onnx.save(_write(model, final, amax, cfg.profile), str(out))
    return {"method": spec.calibrator, "profile": cfg.profile, "amax": amax,
            "quantized_tensors": len(final.activation_tensors),
            "kept_float": list(found.names),
            "kept_float_conv_flops_pct": round(kept_flops_pct(model, found.groups,
                                                              subset.inputs().imgsz), 2),
            "search": {"target": round(target, 5), "met": found.met,
                       "fp32_map_subset": round(fp32_map, 5),
                       "int8_map_subset": round(ranking.map_int8, 5),
                       "auto_map_subset": round(found.map, 5),
                       "eval_images": search_images(ctx), "groups": len(groups),
                       "evaluations": ranking.evaluations + len(found.trials) + 1,
                       "ranking_s": round(ranking_s, 1), "search_s": round(search_s, 1),
                       "top": [{"group": r.group.name, "gain_float": round(r.gain_float, 5)}
                               for r in ranking.rows[:10]]}}


def _write(model: Any, plan: Any, amax: dict[str, float], profile: str) -> Any:
    from bench.quant.qdq import write_qdq

    missing = [t for t in plan.activation_tensors if t not in amax]
    if missing:
        raise ModelError(f"int8-auto: tensor {missing[0]!r} has no calibrated range; expected "
                         "every tensor of a sub-plan in the nothing-float plan")
    return write_qdq(model, plan, {t: amax[t] for t in plan.activation_tensors},
                     profile=profile)


class _Evaluator:
    """groups left float -> mAP on the search images (the Evaluate of sensitivity.py)."""

    def __init__(self, spec: VariantSpec, ctx: BuildContext, subset: Any, model: Any,
                 amax: dict[str, float]):
        self.spec, self.ctx, self.subset, self.model, self.amax = spec, ctx, subset, model, amax
        self.folder = Path(tempfile.mkdtemp(prefix="bench-int8-auto-"))
        self.fp32_map: float | None = None

    def plan(self, groups: Sequence[QuantGroup]) -> Any:
        from bench.quant.placement import KeepFloat, keep_float_nodes, plan_quantization

        keep = KeepFloat(**NOTHING_FLOAT, nodes=keep_float_nodes(list(groups)))
        return plan_quantization(self.model, keep_float=keep)

    def fp32(self) -> float:
        from bench.variants import spec_of

        self.fp32_map = self._map(spec_of("fp32"), self.ctx.model_path, "int8-auto fp32")
        return self.fp32_map

    def __call__(self, groups: Sequence[QuantGroup]) -> float:
        import onnx

        try:
            plan = self.plan(groups)
        except ModelError:  # every group float: nothing left to quantize
            return float(self.fp32_map if self.fp32_map is not None else self.fp32())
        path = self.folder / "candidate.onnx"
        onnx.save(_write(self.model, plan, self.amax, self.ctx.cfg.profile), str(path))
        try:
            return self._map(self.spec, path, f"int8-auto {len(groups)} float")
        finally:
            path.unlink(missing_ok=True)

    def _map(self, spec: VariantSpec, path: Path, label: str) -> float:
        from bench.engines.factory import make_engine

        cfg, inputs = self.subset.cfg, self.subset.inputs()
        engine = make_engine(cfg, spec, path, image_size=inputs.imgsz,
                             max_batch=max(cfg.batch, cfg.eval_batch, inputs.fixed_batch or 1))
        with engine:
            return float(self.subset.accuracy(engine, label).metrics["map"])

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def kept_flops_pct(model: Any, groups: Sequence[QuantGroup], imgsz: int) -> float:
    """% of the model's conv FLOPs in the convs that the kept-float groups leave float."""
    from bench.diagnose.ort_profile import conv_flops

    channels = _input_channels(model)
    flops = conv_flops(model, (1, channels, imgsz, imgsz))
    total = sum(flops.values())
    kept = {n for g in groups for n in g.nodes if n in flops}
    return 100.0 * sum(flops[n] for n in kept) / total if total else 0.0


def _input_channels(model: Any) -> int:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return dims[1].dim_value if len(dims) > 1 and dims[1].dim_value else 3

