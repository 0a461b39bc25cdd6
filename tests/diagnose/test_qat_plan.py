"""int8-qat --qat-plan auto: QAT trains on int8-auto's plan (its groups float, and
--keep-float's), built through the normal builder; the plan is in the QAT cache key, the
meta and the row, and a run where int8-auto cannot be built fails the QAT row by name."""

import sys
from pathlib import Path

import onnx
import pytest

from bench.build import BuildContext
from bench.cache import ArtifactCache
from bench.config import BenchConfig, load_config
from bench.diagnose.auto import NOTHING_FLOAT
from bench.errors import ConfigError, EngineUnavailable
from bench.quant.placement import KeepFloat, keep_float_nodes, plan_quantization, quant_groups
from bench.quant.qdq import quantized_tensor_set, write_qdq
from bench.session import BenchSession

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quant"))
from yolo_like import build_yolo_like  # noqa: E402

torch = pytest.importorskip("torch")


def _session(tmp_path, mini, coco, **options) -> BenchSession:
    model, classes = mini
    cfg = load_config({"model": str(model), "coco": str(coco), "class_map": str(classes),
                       "eval_count": 3, "calib_count": 2, "qat_iters": 2, "qat_images": 4,
                       "bench_rounds": 2, "bench_warmup": 0, "latency_blocks": 1,
                       "progress": False, "power": "none", "variants": "int8-auto,int8-qat",
                       "qat_plan": "auto", "cache_dir": str(tmp_path / "cache"),
                       "results_dir": str(tmp_path / "results"),
                       "baseline": str(tmp_path / "baseline.json"), **options},
                      env={}, pyproject=None)
    return BenchSession(cfg)


def _prepare(session: BenchSession, variant: str):
    prepared = session.prepare(variant)
    assert prepared.status == "ok", prepared.reason
    prepared.close()
    return prepared.artifact


def _tensors(plan) -> frozenset[str]:
    """The tensor set a plan's Q/DQ file carries (the amax values do not matter)."""
    fp32 = build_yolo_like()
    return quantized_tensor_set(write_qdq(fp32, plan, {t: 1.0 for t in plan.activation_tensors},
                                          profile="cpu"))


def _auto_nodes(names) -> tuple[str, ...]:
    fp32 = build_yolo_like()
    groups = quant_groups(fp32, plan_quantization(fp32, keep_float=KeepFloat(**NOTHING_FLOAT)))
    return keep_float_nodes([g for g in groups if g.name in names])


def test_qat_plan_is_validated_and_plumbed(tmp_path):
    assert load_config({}, env={}, pyproject=None).qat_plan == "keep-float"
    with pytest.raises(ConfigError, match="option qat_plan: got 'int8-auto'; "
                                          "expected one of keep-float, auto"):
        load_config({"qat_plan": "int8-auto"}, env={}, pyproject=None)
    assert load_config({}, env={"BENCH_QAT_PLAN": "auto"}, pyproject=None).qat_plan == "auto"
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.bench]\nqat-plan = "auto"\n')
    assert load_config({}, env={}, pyproject=pyproject).qat_plan == "auto"


def test_qat_trains_on_the_auto_groups_plus_keep_float(tmp_path, mini_detector, tiny_coco):
    session = _session(tmp_path, mini_detector, tiny_coco)
    prepared = session.prepare("int8-qat")  # int8-auto is built first, through its builder
    assert prepared.status == "ok", prepared.reason
    row = session.measure(prepared)
    auto = _prepare(_session(tmp_path, mini_detector, tiny_coco), "int8-auto")
    assert auto.cached  # the QAT build put it in the cache
    kept = auto.meta["kept_float"]
    assert kept, "the mini detector's search keeps at least one group float"

    meta = row.extra["artifact_meta"]
    assert (meta["plan"], meta["kept_float"], meta["auto_sha256"]) == ("auto", kept, auto.sha256)
    assert meta["keep_float"] == ["first_conv", "head", "decode"]
    fp32 = build_yolo_like()
    union = plan_quantization(fp32, keep_float=KeepFloat(nodes=_auto_nodes(kept)))
    qat_tensors = quantized_tensor_set(onnx.load(row.artifact))
    assert qat_tensors == _tensors(union)
    assert qat_tensors < _tensors(plan_quantization(fp32))  # more float than --keep-float

    summary = (session.finish(None, complete=True) / "summary.md").read_text()
    assert f"kept float: {', '.join(kept)} (int8-auto's plan, with --keep-float first\\_conv, " \
           "head, decode)" in summary

    # with nothing in --keep-float the QAT file carries exactly int8-auto's tensors
    alone = _prepare(_session(tmp_path, mini_detector, tiny_coco, keep_float=""), "int8-qat")
    assert alone.meta["kept_float"] == kept and alone.meta["keep_float"] == []
    assert quantized_tensor_set(onnx.load(alone.path)) == \
        quantized_tensor_set(onnx.load(auto.path))


def test_the_auto_plan_is_part_of_the_qat_cache_key(tmp_path, mini_detector, tiny_coco):
    first = _prepare(_session(tmp_path, mini_detector, tiny_coco), "int8-qat")
    again = _prepare(_session(tmp_path, mini_detector, tiny_coco), "int8-qat")
    assert again.cached and again.path == first.path
    # a target of 0 needs nothing float: another int8-auto plan, so QAT trains again
    changed = _prepare(_session(tmp_path, mini_detector, tiny_coco, floor_qat=0.0), "int8-qat")
    assert first.meta["kept_float"] and changed.meta["kept_float"] == []
    assert not changed.cached and changed.path != first.path
    assert changed.meta["auto_sha256"] != first.meta["auto_sha256"]
    plain = _prepare(_session(tmp_path, mini_detector, tiny_coco, qat_plan="keep-float"),
                     "int8-qat")
    assert plain.path not in (first.path, changed.path)
    assert plain.meta["plan"] == "keep-float" and "kept_float" not in plain.meta
    assert quantized_tensor_set(onnx.load(plain.path)) == \
        _tensors(plan_quantization(build_yolo_like()))


def test_qat_fails_by_name_when_int8_auto_cannot_be_built(tmp_path, mini_detector, tiny_coco,
                                                          monkeypatch):
    import bench.build
    import bench.engines.factory as factory

    def no_int8(spec, ctx):
        raise EngineUnavailable("this backend has no INT8")

    monkeypatch.setitem(bench.build.BUILDERS, "auto", no_int8)
    session = _session(tmp_path, mini_detector, tiny_coco)
    failed = session.prepare("int8-qat")
    assert failed.status == "failed"  # not skipped, and not the --keep-float plan instead
    assert "option qat_plan" in failed.reason and "int8-auto" in failed.reason
    assert "this backend has no INT8" in failed.reason and "--qat-plan keep-float" in failed.reason
    assert not (tmp_path / "cache" / "qat").exists()

    monkeypatch.undo()
    skip = factory.skip_reason
    monkeypatch.setattr(factory, "skip_reason", lambda cfg, spec: "no INT8 kernels here"
                        if spec.name == "int8-auto" else skip(cfg, spec))
    failed = _session(tmp_path, mini_detector, tiny_coco).prepare("int8-qat")
    assert failed.status == "failed" and "option qat_plan" in failed.reason
    assert "no INT8 kernels here" in failed.reason


def test_a_plan_beyond_the_runs_histograms_gets_its_own(tmp_path, fp32_path, images):
    """QAT's plan may differ from the PTQ rows' plan whose histograms the run collected:
    a tensor those lack is calibrated by a collection of its own, not a KeyError."""
    ctx = BuildContext(BenchConfig(calib_count=3, progress=False), fp32_path,
                       lambda: iter([images]), "test", ArtifactCache(tmp_path))
    model = build_yolo_like()
    default = plan_quantization(model)
    nothing = plan_quantization(model, keep_float=KeepFloat(**NOTHING_FLOAT))
    assert set(default.activation_tensors) < set(nothing.activation_tensors)
    assert set(ctx.calibrate(default, "max")) == set(default.activation_tensors)
    assert set(nothing.activation_tensors) <= set(ctx.calibrate(nothing, "max"))
    assert set(ctx.calibrate(default, "max")) == set(default.activation_tensors)  # kept
