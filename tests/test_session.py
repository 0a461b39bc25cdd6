"""The session end to end on real files: build, evaluate, time, gate, report."""

import json
from pathlib import Path

import pytest

from bench.config import load_config
from bench.session import BenchSession


def _session(tmp_path: Path, model: Path, coco: Path, **options) -> BenchSession:
    cfg = load_config({"model": str(model), "coco": str(coco), "eval_count": 4,
                       "calib_count": 4, "bench_rounds": 5, "bench_warmup": 1,
                       "progress": False, "power": "none", "cache_dir": str(tmp_path / "cache"),
                       "results_dir": str(tmp_path / "results"),
                       "baseline": str(tmp_path / "baseline.json"), **options},
                      env={}, pyproject=None)
    return BenchSession(cfg)


def _run(session: BenchSession, variant: str):
    prepared = session.prepare(variant)
    return session.measure(prepared) if prepared.status == "ok" else session.rows[variant]


def test_variants_build_evaluate_and_report(tmp_path, tiny_detector, tiny_coco):
    session = _session(tmp_path, tiny_detector, tiny_coco,
                       variants="fp32,int8-max,trt-minmax")
    rows = [_run(session, v) for v in ("fp32", "int8-max", "trt-minmax")]
    fp32, int8, trt = rows
    assert fp32.status == int8.status == "ok" and trt.status == "skipped"
    assert "needs --backend tensorrt" in trt.reason
    assert 0.0 <= int8.map <= 1.0 and int8.eval_images == 4
    assert int8.latency_ms.median > 0 and int8.delta_map_vs_fp32 == pytest.approx(
        int8.map - fp32.map)
    assert int8.power_source == "none" and int8.power_w is None and int8.power_reason
    assert int8.artifact_bytes > 0 and Path(int8.artifact).is_file()
    # each row is normalised by the probe of its precision, and says which
    assert fp32.extra["probe"]["kind"] == "fp32" and int8.extra["probe"]["kind"] == "int8"
    assert int8.extra["probe"]["profile"] == session.cfg.profile

    run_dir = session.finish(None, complete=True)
    report = json.loads((run_dir / "report.json").read_text())
    assert [r["variant"] for r in report["rows"]] == ["fp32", "int8-max", "trt-minmax"]
    assert report["environment"]["model_sha256"] and (run_dir / "pareto.png").is_file()
    assert (tmp_path / "results" / "latest" / "report.json").is_file()


def test_second_session_reuses_the_cached_artifact(tmp_path, tiny_detector, tiny_coco):
    first = _session(tmp_path, tiny_detector, tiny_coco, variants="int8-mse")
    built = first.prepare("int8-mse")
    built.close()
    again = _session(tmp_path, tiny_detector, tiny_coco, variants="int8-mse").prepare("int8-mse")
    again.close()
    assert not built.artifact.cached and again.artifact.cached
    assert again.artifact.path == built.artifact.path


def test_a_failing_variant_becomes_a_failed_row_and_others_go_on(tmp_path, tiny_detector,
                                                                 tiny_coco):
    session = _session(tmp_path, tiny_detector, tiny_coco, variants="fp32,int8-max",
                       keep_float="first_conv,head,decode,no-such-node*")
    failed = _run(session, "int8-max")
    assert failed.status == "failed" and "no-such-node" in failed.error
    assert _run(session, "fp32").status == "ok"


def test_bad_model_fails_every_variant_with_one_line(tmp_path, tiny_coco):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00not onnx")
    session = _session(tmp_path, bad, tiny_coco, variants="fp32,fp16")
    rows = [_run(session, v) for v in ("fp32", "fp16")]
    assert all(r.status == "failed" and "broken.onnx" in r.error for r in rows)
    assert all("\n" not in r.error for r in rows)


def test_class_count_mismatch_is_named(tmp_path, tiny_coco):
    torch = pytest.importorskip("torch")
    from bench.models.export import export_onnx
    from bench.models.yolov7 import build_model

    torch.manual_seed(0)
    model = export_onnx(build_model("yolov7-tiny", num_classes=3, width=0.25).eval(),
                        tmp_path / "three.onnx", 64)
    row = _run(_session(tmp_path, model, tiny_coco, variants="fp32"), "fp32")
    assert row.status == "failed" and "3" in row.error and "8" in row.error


def test_calibration_never_uses_evaluation_images(tmp_path, tiny_detector, tiny_coco):
    from bench.errors import InputDataError

    session = _session(tmp_path, tiny_detector, tiny_coco, calib=str(tiny_coco / "val"))
    with pytest.raises(InputDataError):
        session.run.inputs()


def test_speedup_is_paired_with_fp32_blocks_timed_beside_the_variant(
        tmp_path, tiny_detector, tiny_coco, monkeypatch):
    from bench.report.judge import BLOCKS_KEY
    from bench.report.rows import PAIRED_KEY

    session = _session(tmp_path, tiny_detector, tiny_coco, variants="fp32,int8-max",
                       bench_rounds=6, latency_blocks=3)
    fp32, int8 = (_run(session, v) for v in ("fp32", "int8-max"))
    assert fp32.extra[BLOCKS_KEY]["reference_ms"] == []  # fp32 itself is not paired
    blocks = int8.extra[BLOCKS_KEY]
    # R P | V V R P | V R P: the default --reference-every 2
    assert len(blocks["variant_ms"]) == 3 and len(blocks["reference_ms"]) == 3
    assert len(blocks["probe_ms"]) == 3 and int8.probe_ms > 0 and blocks["per_reference"] == 2
    assert int8.speedup_low <= int8.speedup_vs_fp32 <= int8.speedup_high
    assert int8.extra[PAIRED_KEY] > 0
    assert int8.latency_ms.ci_low <= int8.latency_ms.median <= int8.latency_ms.ci_high
    session.close()

    # Without a usable fp32 engine the speedup falls back to the fp32 row, and says why.
    broken = _session(tmp_path, tiny_detector, tiny_coco, variants="fp32,int8-max")
    fp32 = _run(broken, "fp32")
    real = broken.refs.open

    def no_second_fp32(variant, path):
        if variant == "fp32":
            raise RuntimeError("no memory for a second fp32 engine")
        return real(variant, path)

    monkeypatch.setattr(broken.refs, "open", no_second_fp32)
    int8 = _run(broken, "int8-max")
    assert int8.extra[BLOCKS_KEY]["reference_ms"] == []
    assert "no memory for a second fp32 engine" in int8.extra["fp32_unavailable"]
    assert int8.speedup_vs_fp32 == pytest.approx(fp32.latency_ms.median / int8.latency_ms.median)


def test_a_run_without_fp32_measures_it_as_the_reference_of_the_floors(
        tmp_path, tiny_detector, tiny_coco):
    session = _session(tmp_path, tiny_detector, tiny_coco, variants="int8-max")
    int8 = _run(session, "int8-max")
    assert "fp32" in session.rows and session.rows["fp32"].extra["run_as"].startswith(
        "measured as the reference")
    assert any("floor" in line for line in int8.gate.lines)
    assert not any("NOT CHECKED" in line for line in int8.gate.lines)
    session.close()


def test_nothing_measured_is_said(tmp_path, tiny_detector, tiny_coco):
    session = _session(tmp_path, tiny_detector, tiny_coco, variants="trt-minmax")
    _run(session, "trt-minmax")
    assert session.nothing_measured().startswith("nothing measured: every variant skipped")


def test_a_promoted_run_gives_the_next_run_a_baseline_ci(tmp_path, tiny_detector, tiny_coco):
    import numpy as np

    from bench.report.baseline import load_baseline, promote_run
    from bench.report.detections import DETECTIONS_NAME

    first = _session(tmp_path, tiny_detector, tiny_coco, variants="fp32")
    scored = _run(first, "fp32")
    run_dir = first.finish(None, complete=True)
    assert first._detections == {}  # written, then let go
    report = json.loads((run_dir / "report.json").read_text())
    assert DETECTIONS_NAME in report["files"]
    assert report["detections"]["variants"]["fp32"] > 0
    with np.load(run_dir / DETECTIONS_NAME) as stored:
        assert stored["fp32"].shape == (report["detections"]["variants"]["fp32"], 7)
    # judged before any baseline existed: nothing to pair with
    assert scored.baseline_map_low is None

    promote_run(run_dir, tmp_path / "baseline.json", results_dir=tmp_path / "results")
    assert load_baseline(tmp_path / "baseline.json").detections is not None
    again = _run(_session(tmp_path, tiny_detector, tiny_coco, variants="fp32"), "fp32")
    assert again.eval_fingerprint == scored.eval_fingerprint
    assert again.baseline_map_low <= again.baseline_map_delta <= again.baseline_map_high
    note = next(n for n in again.gate.notes if "baseline" in n and "mAP" in n)
    assert "95 % CI" in note, note
