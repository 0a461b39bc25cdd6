import json
import os
import re
from datetime import datetime, timezone

import pandas as pd
import pytest
from report_builders import make_env, standard_rows

from bench import atomic
from bench.atomic import atomic_symlink, atomic_write, atomic_write_text
from bench.errors import InputDataError
from bench.report.runs import load_run
from bench.report.writer import new_run_id, write_run

RUN_FILES = ["benchmark.json", "pareto.png", "report.csv", "report.json", "summary.md",
             "summary.txt"]


def test_new_run_id_is_utc_stamp_plus_random():
    now = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    first, second = new_run_id(now), new_run_id(now)
    assert re.fullmatch(r"20250304T050607Z-[0-9a-f]{6}", first)
    assert first != second


def test_write_run_writes_every_file_and_latest(results_dir, write_standard_run):
    run_dir = write_standard_run("r1")
    assert sorted(p.name for p in run_dir.iterdir()) == RUN_FILES
    data = json.loads((run_dir / "report.json").read_text())
    assert data["schema_version"] == 3 and data["complete"] is True
    assert set(data) >= {"environment", "created", "rows", "files"}
    assert sorted(data["files"]) == sorted(set(RUN_FILES) - {"report.json"})
    assert (results_dir / "latest").is_symlink()
    assert os.readlink(results_dir / "latest") == os.path.join("runs", "r1")
    assert load_run("latest", results_dir).rows == tuple(standard_rows())


def test_latest_moves_to_the_newest_run(results_dir, write_standard_run):
    write_standard_run("r1")
    write_standard_run("r2", complete=False)
    run = load_run("latest", results_dir)
    assert run.run_id == "r2" and run.complete is False


def test_csv_has_flat_columns(write_standard_run):
    frame = pd.read_csv(write_standard_run() / "report.csv")
    assert list(frame["variant"]) == ["fp32", "fp16", "int8-max", "int8-qat", "int8-mse"]
    assert frame.loc[0, "latency_median_ms"] == pytest.approx(20.0)
    assert frame.loc[0, "artifact_mb"] == pytest.approx(24.0)
    assert frame.loc[4, "status"] == "failed"


def test_write_outside_runs_layout_makes_no_latest(tmp_path):
    write_run(tmp_path / "somewhere" / "x", make_env(), standard_rows(), None, True)
    assert not (tmp_path / "latest").exists()
    assert not (tmp_path / "somewhere" / "x" / "benchmark.json").exists()


def test_atomic_write_keeps_old_file_when_writer_fails_midway(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old and valid")

    def half_then_crash(handle):
        handle.write(b"{\"schema_version\": 1, \"rows\": [")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old and valid"
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind


def test_write_run_failing_midway_keeps_previous_report(write_standard_run, monkeypatch):
    run_dir = write_standard_run("r1")
    before = (run_dir / "report.json").read_bytes()
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("report.json"):
            raise OSError("no space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_standard_run("r1", rows=standard_rows()[:1])
    assert (run_dir / "report.json").read_bytes() == before
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_symlink_fallback_writes_a_path_file(tmp_path, monkeypatch, write_report_only):
    write_report_only("r1")
    monkeypatch.setattr(atomic.os, "symlink", _refuse_symlink)
    link = atomic_symlink(tmp_path / "results" / "latest", "runs/r1")
    assert not link.is_symlink() and link.read_text().strip() == "runs/r1"
    assert load_run("latest", tmp_path / "results").run_id == "r1"


def _refuse_symlink(*_args):
    raise OSError("symlinks not permitted")


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ("[]", "expected a JSON object, got list"),
    ('{"schema_version": 1, "environment": {}, "complete": true, "created": "t"}',
     "missing key 'rows'"),
    ('{"schema_version": 4, "environment": {}, "complete": true, "created": "t", "rows": []}',
     "schema_version 4 not supported, expected 3 or older"),
    ('{"schema_version": 1, "environment": {}, "complete": "yes", "created": "t", "rows": []}',
     "'complete' is str, expected bool"),
    ('{"schema_version": 1, "environment": {}, "complete": true, "created": "t",'
     ' "rows": [{"variant": "fp32", "status": "ok", "map": 7}]}', r"rows\[0\].*map = 7"),
])
def test_load_run_names_the_file_and_the_problem(tmp_path, content, match):
    path = tmp_path / "report.json"
    path.write_text(content)
    with pytest.raises(InputDataError, match=match) as info:
        load_run(tmp_path, tmp_path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_load_run_by_id_path_and_missing(results_dir, write_report_only):
    run_dir = write_report_only("abc")
    assert load_run("abc", results_dir).run_id == "abc"
    assert load_run(run_dir / "report.json", results_dir).run_id == "abc"
    with pytest.raises(InputDataError, match="run 'nope': no such file or directory"):
        load_run("nope", results_dir)
    (run_dir / "report.json").unlink()
    with pytest.raises(InputDataError, match="report.json: missing"):
        load_run(run_dir, results_dir)


def test_load_latest_without_runs(tmp_path):
    with pytest.raises(InputDataError, match="no latest run"):
        load_run("latest", tmp_path)


def test_atomic_write_text_creates_parent(tmp_path):
    path = atomic_write_text(tmp_path / "a" / "b.txt", "hé")
    assert path.read_text(encoding="utf-8") == "hé"
