"""int8-auto on a real session: the search runs through the real engine and accuracy pass,
the kept groups and their FLOP share are in the row, and the artifact is cached by the
search settings."""

import onnx
import pytest

from bench.config import load_config
from bench.quant.qdq import quantized_tensor_set
from bench.session import BenchSession
from bench.variants import default_variants, spec_of


def _session(tmp_path, model, coco, **options) -> BenchSession:
    cfg = load_config({"model": str(model), "coco": str(coco), "eval_count": 3,
                       "calib_count": 2, "bench_rounds": 2, "bench_warmup": 0,
                       "latency_blocks": 1, "progress": False, "power": "none",
                       "variants": "int8-auto", "cache_dir": str(tmp_path / "cache"),
                       "results_dir": str(tmp_path / "results"),
                       "baseline": str(tmp_path / "baseline.json"), **options},
                      env={}, pyproject=None)
    return BenchSession(cfg)


def test_int8_auto_is_registered_off_the_default_matrix():
    spec = spec_of("int8-auto")
    assert (spec.artifact, spec.builder, spec.floor) == ("qdq", "auto", "qat")
    assert "int8-auto" not in default_variants()


def test_int8_auto_searches_records_its_plan_and_is_cached(tmp_path, tiny_detector, tiny_coco):
    session = _session(tmp_path, tiny_detector, tiny_coco)
    prepared = session.prepare("int8-auto")
    assert prepared.status == "ok", prepared.reason
    row = session.measure(prepared)
    meta = row.extra["artifact_meta"]
    search = meta["search"]
    assert search["met"] is True and search["auto_map_subset"] >= search["target"]
    assert search["eval_images"] == 3 and search["groups"] > 10
    # the float-only ranking: 1 + N evaluations, plus the search's trials and fp32's pass
    assert search["evaluations"] >= search["groups"] + 3
    assert 0.0 <= meta["kept_float_conv_flops_pct"] < 100.0
    assert isinstance(meta["kept_float"], list) and len(search["top"]) == 10
    # nothing kept float to start with: the first conv's input (the image) is quantized
    # unless the search left the first conv float
    quantized = quantized_tensor_set(onnx.load(row.artifact), activations_only=True)
    first_conv_float = any(name.startswith("/model.0/") for name in meta["kept_float"])
    assert ("images" in quantized) != first_conv_float
    assert meta["quantized_tensors"] == len(quantized)

    again = _session(tmp_path, tiny_detector, tiny_coco).prepare("int8-auto")
    again.close()
    assert again.artifact.cached and again.artifact.path == prepared.artifact.path
    other = _session(tmp_path, tiny_detector, tiny_coco, floor_qat=0.5).prepare("int8-auto")
    other.close()
    assert not other.artifact.cached  # the target is part of the key


def test_kept_flops_share_counts_the_kept_convs():
    pytest.importorskip("onnxruntime")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quant"))
    from yolo_like import build_yolo_like

    from bench.diagnose.auto import NOTHING_FLOAT, kept_flops_pct
    from bench.diagnose.ort_profile import conv_flops
    from bench.quant.placement import KeepFloat, plan_quantization, quant_groups

    model = build_yolo_like()
    groups = quant_groups(model, plan_quantization(model, keep_float=KeepFloat(**NOTHING_FLOAT)))
    convs = [g for g in groups if g.kind == "conv"]
    flops = conv_flops(model, (1, 3, 32, 32))
    assert kept_flops_pct(model, [], 32) == 0.0
    expected = 100.0 * flops[convs[0].name] / sum(flops.values())
    assert kept_flops_pct(model, [convs[0]], 32) == pytest.approx(expected)
    assert kept_flops_pct(model, convs, 32) == pytest.approx(100.0)
