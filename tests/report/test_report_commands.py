import argparse
import json

import pytest
from report_builders import lat, make_env, make_row, standard_rows

from bench.report.commands import add_report_commands


def bench(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="bench")
    add_report_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.handler(args)


def test_report_renders_latest_and_markdown(results_dir, write_standard_run, capsys):
    run_dir = write_standard_run("r1")
    assert bench("report", "--results", str(results_dir)) == 0
    out = capsys.readouterr().out
    assert "int8-max" in out and "r1" in out
    assert bench("report", "r1", "--markdown", "--results", str(results_dir)) == 0
    assert capsys.readouterr().out == (run_dir / "summary.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (("report", "missing-run"), "bench report: error: run 'missing-run': no such file"),
    (("compare", "a", "b"), "bench compare: error: run 'a'"),
    (("baseline", "promote", "nope"), "bench baseline promote: error: run 'nope'"),
])
def test_bad_input_is_one_line_without_traceback(results_dir, argv, message, capsys):
    assert bench(*argv, "--results", str(results_dir)) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


def test_report_on_corrupt_file_names_it(tmp_path, capsys):
    (tmp_path / "report.json").write_text('{"schema_version": 1}')
    assert bench("report", str(tmp_path / "report.json")) == 2
    assert "report.json: missing key 'environment'" in capsys.readouterr().err


def _blocks(latency_ms: float) -> dict:
    """Probe-normalised blocks as the measurer stores them (probe steady at 1 ms)."""
    wobble = [0.99, 1.01, 1.0, 0.995, 1.005]
    return {"blocks": {"variant_ms": [latency_ms * w for w in wobble], "probe_ms": [1.0] * 6,
                       "reference_ms": []}}


def test_compare_gates_b_against_a(results_dir, write_report_only, capsys):
    same = {"eval_fingerprint": "e1", "probe_ms": 1.0}
    ok = [make_row("fp32", map=0.612, latency_ms=lat(20.0), extra=_blocks(20.0), **same),
          make_row("fp16", map=0.61, **same)]
    write_report_only("a", rows=ok)
    slower = [make_row("fp32", map=0.612, latency_ms=lat(30.0), extra=_blocks(30.0), **same),
              *ok[1:]]
    write_report_only("b", rows=slower)
    assert bench("compare", "a", "b", "--results", str(results_dir)) == 1
    out = capsys.readouterr().out
    assert "latency comparable" in out
    assert "median latency +50 % vs baseline" in out and "regression" in out
    assert "+50.0 %" in out
    assert bench("compare", "a", "b", "--latency-tolerance", "0.6",
                 "--results", str(results_dir)) == 0


def test_compare_on_another_machine_ignores_latency(results_dir, write_report_only, capsys):
    ok = [r for r in standard_rows() if r.status == "ok"]
    write_report_only("a", rows=ok)
    write_report_only("b", rows=[make_row("fp32", map=0.612, latency_ms=lat(90.0))],
                       env=make_env(host={"cpu": "Intel Core i7"}))
    assert bench("compare", "a", "b", "--results", str(results_dir)) == 0
    out = capsys.readouterr().out
    assert "latency NOT comparable: host.cpu differs" in out


def test_baseline_promote_cli(results_dir, write_report_only, capsys):
    write_report_only("r1")
    assert bench("baseline", "promote", "latest", "--results", str(results_dir)) == 2
    assert "--allow-failed" in capsys.readouterr().err
    assert not (results_dir / "baseline.json").exists()
    target = results_dir / "custom.json"
    assert bench("baseline", "promote", "r1", "--allow-failed", "--to", str(target),
                 "--results", str(results_dir)) == 0
    assert json.loads(target.read_text())["promoted_from"] == "r1"
    out = capsys.readouterr().out
    assert "promoted r1 ->" in out
    assert "no detections: r1 has no detections.npz" in out  # said plainly, not refused


def test_compare_takes_run_paths_as_the_readme_writes_them(results_dir, write_report_only,
                                                           capsys, monkeypatch):
    ok = [make_row("fp32", map=0.612, latency_ms=lat(20.0))]
    write_report_only("a", rows=ok)
    write_report_only("b", rows=[make_row("fp32", map=0.600, latency_ms=lat(20.0))])
    monkeypatch.chdir(results_dir.parent)
    # runs/<id> under the results folder, the run dir itself, and an id all name a run
    assert bench("compare", "runs/a", str(results_dir / "runs" / "b"),
                 "--results", str(results_dir)) == 1
    assert "mAP 0.6000 < baseline 0.6120 − 0.005 = 0.6070" in capsys.readouterr().out
    # the suite's option name; the old one is still accepted
    assert bench("compare", "a", "b", "--map-tolerance", "0.02",
                 "--results", str(results_dir)) == 0
    assert bench("compare", "a", "b", "--max-map-drop", "0.02",
                 "--results", str(results_dir)) == 0


def test_report_text_is_summary_txt(results_dir, write_standard_run, capsys):
    run_dir = write_standard_run("r1")
    assert bench("report", "r1", "--text", "--results", str(results_dir)) == 0
    out = capsys.readouterr().out
    assert out == (run_dir / "summary.txt").read_text()
    assert "\x1b[" not in out and "int8-max" in out and max(map(len, out.splitlines())) <= 100
