"""int8-auto on a real session: the search runs through the real engine and accuracy pass,
the kept groups and their FLOP share are in the row, and the artifact is cached by the
search settings."""

import sys
from pathlib import Path

import onnx
import pytest

from bench.config import load_config
from bench.diagnose.auto import NOTHING_FLOAT, kept_flops_pct
from bench.diagnose.ort_profile import conv_flops
from bench.quant.placement import KeepFloat, plan_quantization, quant_groups
from bench.quant.qdq import quantized_tensor_set
from bench.session import BenchSession
from bench.variants import default_variants, spec_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quant"))
from yolo_like import FIRST_CONV, HEAD_CONVS, build_yolo_like  # noqa: E402


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


def test_int8_auto_searches_records_its_plan_and_is_cached(tmp_path, mini_detector, tiny_coco):
    model, classes = mini_detector
    session = _session(tmp_path, model, tiny_coco, class_map=str(classes))
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
    # nothing kept float to start with: the first conv and the head convs are quantized
    # unless the search left them float
    quantized = quantized_tensor_set(onnx.load(row.artifact))
    fp32 = build_yolo_like()
    groups = quant_groups(fp32, plan_quantization(fp32, keep_float=KeepFloat(**NOTHING_FLOAT)))
    assert len(groups) == search["groups"]
    kept = {n for g in groups if g.name in meta["kept_float"] for n in g.nodes}
    weights = {n.name: n.input[1] for n in fp32.graph.node if n.op_type == "Conv"}
    for conv in (FIRST_CONV, *HEAD_CONVS):
        assert (weights[conv] in quantized) == (conv not in kept), conv

    summary = (session.finish(None, complete=True) / "summary.md").read_text()
    assert "<summary>Diagnosis (INT8 rows)</summary>" in summary  # kept float, diagnosed or not
    assert "kept float: " in summary

    again = _session(tmp_path, model, tiny_coco, class_map=str(classes)).prepare("int8-auto")
    again.close()
    assert again.artifact.cached and again.artifact.path == prepared.artifact.path
    other = _session(tmp_path, model, tiny_coco, class_map=str(classes),
                     floor_qat=0.5).prepare("int8-auto")
    other.close()
    assert not other.artifact.cached  # the target is part of the key


def test_kept_flops_share_counts_the_kept_convs():
    model = build_yolo_like()
    groups = quant_groups(model, plan_quantization(model, keep_float=KeepFloat(**NOTHING_FLOAT)))
    convs = [g for g in groups if g.kind == "conv"]
    flops = conv_flops(model, (1, 3, 32, 32))
    assert kept_flops_pct(model, [], 32) == 0.0
    expected = 100.0 * flops[convs[0].name] / sum(flops.values())
    assert kept_flops_pct(model, [convs[0]], 32) == pytest.approx(expected)
    assert kept_flops_pct(model, convs, 32) == pytest.approx(100.0)


def test_bench_sensitivity_prints_the_ranked_groups(tmp_path, mini_detector, tiny_coco,
                                                    monkeypatch, capsys):
    from bench.cli import main

    model, classes = mini_detector
    for key, value in {"MODEL": model, "COCO": tiny_coco, "CLASS_MAP": classes,
                       "CACHE_DIR": tmp_path / "cache", "CALIB_COUNT": 2,
                       "PROGRESS": "false"}.items():
        monkeypatch.setenv(f"BENCH_{key}", str(value))
    monkeypatch.chdir(tmp_path)  # no pyproject.toml of the project
    plot = tmp_path / "ranking.png"
    assert main(["sensitivity", "int8-max", "--images", "2", "--top", "5",
                 "--plot", str(plot)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("int8-max: 26 groups, 27 evaluations on 2 images")
    ranked = out[2:7]
    assert [int(line.split()[0]) for line in ranked] == [1, 2, 3, 4, 5]
    gains = [float(line.split()[1]) for line in ranked]
    assert gains == sorted(gains, reverse=True)
    assert plot.stat().st_size > 1000
