"""`pytest suites/ --benchmark-only` in a subprocess, as users run it, on tiny real inputs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _suite(tmp_path: Path, model: Path, coco: Path, *extra: str) -> subprocess.CompletedProcess:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "BENCH_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT),
           "TMPDIR": str(tmp_path / "tmp")}
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "suites"), "--benchmark-only",
           "-p", "no:cacheprovider", "--model", str(model), "--coco", str(coco),
           "--eval-count", "4", "--calib-count", "4", "--bench-rounds", "5",
           "--power", "none", "--results-dir", str(tmp_path / "results"),
           "--baseline", str(tmp_path / "baseline.json"), *extra]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)


def _report(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "results" / "latest" / "report.json").read_text())


def test_suite_writes_a_report_and_gates_against_the_baseline(tmp_path, tiny_detector,
                                                                tiny_coco):
    # --color=yes into a pipe: colours, but never a progress bar in a log
    first = _suite(tmp_path, tiny_detector, tiny_coco, "--variants", "fp32,int8-max,trt-minmax",
                   "--color=yes")
    assert first.returncode == 0, first.stdout[-2000:]
    assert "\r" not in first.stdout + first.stderr and "accuracy" not in first.stderr
    assert "\x1b[" in first.stdout  # the colours were on
    first.stdout = re.sub(r"\x1b\[[0-9;]*m", "", first.stdout)
    assert "2 passed, 1 skipped" in first.stdout and "int8-max" in first.stdout
    report = _report(tmp_path)
    assert report["complete"] and {r["status"] for r in report["rows"]} == {"ok", "skipped"}
    run_dir = (tmp_path / "results" / "latest").resolve()
    for name in ("report.json", "report.csv", "summary.md", "summary.txt", "pareto.png",
                 "benchmark.json"):
        assert (run_dir / name).is_file(), name
    # the JSON pytest-benchmark says it wrote is the run folder's, and it stays
    assert f"Wrote benchmark data in: {run_dir / 'benchmark.json'}" in first.stderr
    timings = json.loads((run_dir / "benchmark.json").read_text())["benchmarks"]
    assert {b["extra_info"]["variant"] for b in timings} == {"fp32", "int8-max"}
    assert all(len(b["stats"]["data"]) == 5 for b in timings)
    # no temporary file left behind (.ses is ONNX Runtime's own marker, not ours)
    assert [p.name for p in (tmp_path / "tmp").iterdir() if p.name != ".ses"] == []
    assert f"baseline: none ({tmp_path / 'baseline.json'} not found)" in first.stdout
    assert f"report: {run_dir}" in first.stdout

    # A baseline whose int8-max mAP is out of reach: the same run must now fail its gate.
    baseline = report
    for row in baseline["rows"]:
        if row["variant"] == "int8-max":
            row["map"] = 1.0
    (tmp_path / "baseline.json").write_text(json.dumps(baseline))
    # (a generous latency tolerance: this test is about mAP, not this machine's noise)
    second = _suite(tmp_path, tiny_detector, tiny_coco, "--variants", "fp32,int8-max",
                    "--latency-tolerance", "9", "-qq", "--benchmark-quiet")
    assert second.returncode == 1
    assert "int8-max gate: mAP" in second.stdout and "< baseline 1.000" in second.stdout
    bench_lines = [line for line in second.stdout.splitlines() if line.startswith("bench: ")]
    assert len(bench_lines) == 1 and "✗ gate failed — int8-max: mAP" in bench_lines[0]
    assert "Wrote benchmark data" not in second.stdout + second.stderr
    assert "variant " not in second.stdout
    gates = {r["variant"]: r["gate"]["passed"] for r in _report(tmp_path)["rows"]}
    assert gates == {"fp32": True, "int8-max": False}


def test_bad_option_is_a_one_line_usage_error(tmp_path, tiny_detector, tiny_coco):
    done = _suite(tmp_path, tiny_detector, tiny_coco, "--variants", "fp32,int4")
    assert done.returncode == 4
    assert "option variants: got 'int4'; expected one of" in done.stderr


FAILING_FINISH = '''
import pytest

@pytest.hookimpl(hookwrapper=True)
def pytest_sessionfinish(session):
    # what pytest-benchmark's finish raises for a benchmark interrupted before its first round
    raise ValueError("min() arg is an empty sequence")
    yield
'''


def test_a_plugin_failing_at_session_finish_still_leaves_a_partial_run(tmp_path, tiny_detector,
                                                                       tiny_coco):
    (tmp_path / "failing_finish.py").write_text(FAILING_FINISH)
    done = _suite(tmp_path, tiny_detector, tiny_coco, "--variants", "fp32",
                  "-p", "failing_finish")
    assert done.returncode != 0 and "min() arg is an empty sequence" in done.stdout + done.stderr
    runs = list((tmp_path / "results" / "runs").iterdir())
    assert len(runs) == 1, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((runs[0] / "report.json").read_text())
    assert report["complete"] is False and [r["variant"] for r in report["rows"]] == ["fp32"]
    assert f"bench: partial run written to {runs[0]} (complete: false)" in done.stderr
    promote = subprocess.run([sys.executable, "-m", "bench.cli", "baseline", "promote",
                              str(runs[0]), "--to", str(tmp_path / "b.json")], cwd=ROOT,
                             capture_output=True, text=True, env={**os.environ,
                                                                  "PYTHONPATH": str(ROOT)})
    assert promote.returncode != 0 and not (tmp_path / "b.json").exists()
