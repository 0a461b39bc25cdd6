"""--diagnose on a real session: INT8 rows carry their ORT profile and per-tensor error, the
run folder holds the per-node tables, layers.csv and layers.png, summary.md the section."""

import csv
import json
from pathlib import Path

from bench.config import load_config
from bench.session import BenchSession


def _session(tmp_path: Path, model: Path, coco: Path, **options) -> BenchSession:
    cfg = load_config({"model": str(model), "coco": str(coco), "eval_count": 3,
                       "calib_count": 4, "bench_rounds": 3, "bench_warmup": 1,
                       "latency_blocks": 1, "progress": False, "power": "none",
                       "cache_dir": str(tmp_path / "cache"),
                       "results_dir": str(tmp_path / "results"),
                       "baseline": str(tmp_path / "baseline.json"), **options},
                      env={}, pyproject=None)
    return BenchSession(cfg)


def _run_all(session: BenchSession, variants: tuple[str, ...]) -> Path:
    for variant in variants:
        prepared = session.prepare(variant)
        assert prepared.status == "ok", prepared.reason
        session.measure(prepared)
    return session.finish(None, complete=True)


def test_diagnose_writes_profiles_layers_and_the_summary_section(tmp_path, tiny_detector,
                                                                 tiny_coco):
    session = _session(tmp_path, tiny_detector, tiny_coco, variants="fp32,int8-max,int8-mse",
                       diagnose="true", qdq_profile="cpu")
    run_dir = _run_all(session, ("fp32", "int8-max", "int8-mse"))
    report = json.loads((run_dir / "report.json").read_text())
    rows = {r["variant"]: r for r in report["rows"]}
    assert "diagnosis" not in rows["fp32"]["extra"]  # only INT8 rows are diagnosed
    for variant in ("int8-max", "int8-mse"):
        found = rows[variant]["extra"]["diagnosis"]
        assert "profile_error" not in found and "layers_error" not in found, found
        assert 50.0 < found["int8_pct"] <= 100.0  # cpu profile: QLinearConv kernels
        assert len(found["slowest"]) == 5 and len(found["worst_tensors"]) == 5
        sqnr = [t["sqnr_db"] for t in found["worst_tensors"]]
        assert sqnr == sorted(sqnr) and sqnr[0] <= found["median_sqnr_db"]
        table = list(csv.DictReader((run_dir / f"diagnosis/{variant}_profile.csv").open()))
        assert {"int8", "float"} <= {r["precision"] for r in table}
        assert f"diagnosis/{variant}_profile.csv" in report["files"]
    layers = list(csv.DictReader((run_dir / "layers.csv").open()))
    assert {r["method"] for r in layers} == {"int8-max", "int8-mse"}
    per_method = {m: [r for r in layers if r["method"] == m] for m in ("int8-max", "int8-mse")}
    assert len(per_method["int8-max"]) == rows["int8-max"]["extra"]["diagnosis"]["tensors"]
    assert (run_dir / "layers.png").stat().st_size > 1000
    assert {"layers.csv", "layers.png"} <= set(report["files"])
    summary = (run_dir / "summary.md").read_text()
    assert "<summary>Diagnosis (INT8 rows)</summary>" in summary
    worst = rows["int8-max"]["extra"]["diagnosis"]["worst_tensors"][0]
    assert f"{worst['sqnr_db']:.1f} dB" in summary and "int8 " in summary


def test_without_diagnose_nothing_is_profiled(tmp_path, tiny_detector, tiny_coco):
    session = _session(tmp_path, tiny_detector, tiny_coco, variants="int8-max")
    run_dir = _run_all(session, ("int8-max",))
    report = json.loads((run_dir / "report.json").read_text())
    assert "diagnosis" not in report["rows"][-1]["extra"]
    assert not (run_dir / "layers.csv").exists() and not (run_dir / "diagnosis").exists()
    assert "Diagnosis (INT8 rows)" not in (run_dir / "summary.md").read_text()
