import json

import pytest
from report_builders import make_row, standard_rows

from bench import atomic
from bench.errors import InputDataError
from bench.report.baseline import load_baseline, promote


def ok_rows():
    return [r for r in standard_rows() if r.status != "failed"]


def test_promote_copies_the_run_and_loads_back(results_dir, write_report_only):
    write_report_only("good", rows=ok_rows())
    target = results_dir / "baseline.json"
    promote("good", target, results_dir=results_dir)
    baseline = load_baseline(target)
    assert baseline.rows == tuple(ok_rows())
    assert baseline.promoted_from == "good" and baseline.complete


def test_promote_refuses_a_partial_run_and_keeps_the_old_baseline(results_dir, write_report_only):
    write_report_only("good", rows=ok_rows())
    target = results_dir / "baseline.json"
    promote("good", target, results_dir=results_dir)
    before = target.read_bytes()
    write_report_only("partial", rows=ok_rows(), complete=False)
    with pytest.raises(InputDataError, match=r"partial run \(complete: false\)"):
        promote("partial", target, results_dir=results_dir)
    assert target.read_bytes() == before


def test_promote_refuses_failed_rows_unless_allowed(results_dir, write_report_only):
    write_report_only("mixed")
    target = results_dir / "baseline.json"
    with pytest.raises(InputDataError, match=r"failed rows \['int8-mse'\].*--allow-failed"):
        promote("mixed", target, results_dir=results_dir)
    assert not target.exists()
    promote("mixed", target, allow_failed=True, results_dir=results_dir)
    assert json.loads(target.read_text())["rows"][4]["status"] == "failed"


def test_promote_refuses_a_run_without_ok_rows(results_dir, write_report_only):
    write_report_only("none", rows=[make_row("fp32", status="skipped")])
    with pytest.raises(InputDataError, match="no ok rows"):
        promote("none", results_dir / "baseline.json", results_dir=results_dir)


def test_promote_failing_to_write_never_corrupts_baseline(results_dir, write_report_only,
                                                          monkeypatch):
    write_report_only("good", rows=ok_rows())
    target = results_dir / "baseline.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text('{"old": true}')

    def crash(_src, _dst):
        raise OSError("read-only file system")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError):
        promote("good", target, results_dir=results_dir)
    assert target.read_text() == '{"old": true}'
    assert not list(results_dir.glob(".baseline.json.*"))


def test_load_baseline_absent_is_none_and_corrupt_raises(tmp_path):
    assert load_baseline(tmp_path / "baseline.json") is None
    (tmp_path / "baseline.json").write_text("{")
    with pytest.raises(InputDataError, match="baseline.json: not valid JSON"):
        load_baseline(tmp_path / "baseline.json")
