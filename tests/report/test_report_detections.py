"""The detections a run scored: written beside its report, promoted beside the baseline, and
re-scored for the paired bootstrap CI of ΔmAP against the baseline. Real COCO ground truth
(tests/eval/data: 100 val2014 images) and real evaluators."""

import contextlib
import dataclasses
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from report_builders import make_env, make_row

from bench import atomic
from bench.errors import InputDataError
from bench.eval.bootstrap import delta_map_ci, evaluate_for_bootstrap, match_table
from bench.eval.coco_eval import RESULT_COLUMNS, evaluate_detailed
from bench.report.baseline import load_baseline, promote_run
from bench.report.detections import DETECTIONS_NAME, BaselineDetections, detections_file
from bench.report.display import signed
from bench.report.frame import rows_to_frame
from bench.report.gate import GateConfig
from bench.report.judge import Judge
from bench.report.render_markdown import render_markdown
from bench.report.render_rich import render_text
from bench.report.rows import BASELINE_CI_KEY, ResultRow
from bench.report.runs import Run, load_run
from bench.report.writer import write_run

DATA = Path(__file__).parents[1] / "eval" / "data"


@pytest.fixture(scope="module")
def coco():
    """Ground truth, its image ids, and two detection sets as results arrays: pycocotools'
    fake results (the baseline's) and the same boxes jittered (this run's)."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(DATA / "instances_val2014_100_bbox.json"))
    entries = json.loads((DATA / "instances_val2014_fakebbox100_results.json").read_text())
    base = np.array([[e["image_id"], *e["bbox"], e["score"], e["category_id"]]
                     for e in entries], dtype=np.float64)
    rng = np.random.default_rng(0)
    now = base.copy()
    now[:, 1:3] += rng.normal(0, 0.04, (len(now), 2)) * now[:, 3:5]  # shifted boxes
    now[:, 5] = np.clip(now[:, 5] + rng.normal(0, 0.05, len(now)), 0.0, 1.0).round(5)
    return gt, sorted(gt.getImgIds()), base, now


def scored(gt, ids, results, evaluator="faster"):
    """(mAP, MatchTable) from one evaluation, as the accuracy pass scores a variant."""
    metrics, evaluated = evaluate_detailed(gt, results, ids, evaluator=evaluator,
                                           per_image=True)
    return metrics["map"], match_table(evaluated)


def base_run(tmp_path, results, m, variant="int8-max", **kw) -> Path:
    """A run folder whose row scored `results` to mAP m, written as the suite writes one."""
    rows = [make_row(variant, map=m, eval_images=100, **kw)]
    return write_run(tmp_path / "results" / "runs" / "base", make_env(), rows, None, True,
                     detections={variant: results})


def judge_with(baseline_path, gt, ids, evaluator="faster", gate=None) -> Judge:
    baseline = load_baseline(baseline_path)
    rescore = lambda arr: evaluate_for_bootstrap(gt, arr, ids, evaluator=evaluator)  # noqa: E731
    return Judge(gate or GateConfig(), baseline, make_env(),
                 baseline_ci=BaselineDetections(baseline, rescore))


def map_note(row: ResultRow) -> str:
    return next(line for line in row.gate.lines if "baseline" in line and "mAP" in line)


def test_the_writer_writes_the_detections_and_lists_them(tmp_path, coco):
    _, _, base, now = coco
    run_dir = write_run(tmp_path / "runs" / "r1", make_env(), [make_row("fp32"),
                        make_row("int8-max")], None, True,
                        detections={"fp32": base, "int8-max": now})
    run = load_run(run_dir)
    path = run_dir / DETECTIONS_NAME
    assert DETECTIONS_NAME in run.files and not run.missing_files()
    assert run.detections == {"file": DETECTIONS_NAME, "columns": list(RESULT_COLUMNS),
                              "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                              "variants": {"fp32": len(base), "int8-max": len(now)}}
    with np.load(path, allow_pickle=False) as stored:
        assert stored.files == ["fp32", "int8-max"]
        np.testing.assert_array_equal(stored["int8-max"], now)
        assert stored["fp32"].dtype == np.float64 and stored["fp32"].shape == base.shape
    assert json.loads((run_dir / "report.json").read_text())["schema_version"] == 3
    with pytest.raises(InputDataError, match=r"shape \(3,\), expected \[n, 7\]"):
        write_run(tmp_path / "runs" / "r2", make_env(), [], None, True,
                  detections={"x": np.zeros(3)})


def test_promote_copies_the_sidecar_and_drops_the_one_it_replaces(tmp_path, coco):
    _, _, base, now = coco
    target = tmp_path / "results" / "baseline.json"
    first = promote_run(base_run(tmp_path, base, 0.5), target,
                        results_dir=tmp_path / "results")
    baseline = load_baseline(target)
    sidecar = detections_file(baseline)
    assert sidecar.parent == target.parent and sidecar.name.startswith("baseline.detections.")
    assert sidecar.read_bytes() == (tmp_path / "results/runs/base" / DETECTIONS_NAME).read_bytes()
    assert baseline.detections["sha256"] == hashlib.sha256(sidecar.read_bytes()).hexdigest()
    assert first.detections.startswith(f"detections: {sidecar.name} (1 variants)")

    other = write_run(tmp_path / "results" / "runs" / "next", make_env(),
                      [make_row("int8-max", map=0.49)], None, True, detections={"int8-max": now})
    promote_run(other, target, results_dir=tmp_path / "results")
    replaced = detections_file(load_baseline(target))
    assert replaced != sidecar and replaced.is_file() and not sidecar.exists()
    assert sorted(p.name for p in target.parent.glob("baseline.detections.*")) == [replaced.name]


def test_a_failed_promotion_keeps_the_old_baseline_and_its_sidecar(tmp_path, coco, monkeypatch):
    _, _, base, now = coco
    results, target = tmp_path / "results", tmp_path / "results" / "baseline.json"
    promote_run(base_run(tmp_path, base, 0.5), target, results_dir=results)
    before = {p.name: p.read_bytes() for p in results.iterdir() if p.is_file()}
    other = write_run(results / "runs" / "next", make_env(), [make_row("int8-max", map=0.49)],
                      None, True, detections={"int8-max": now})
    real_replace = atomic.os.replace

    def fail_on_the_baseline(src, dst):
        if str(dst).endswith("baseline.json"):
            raise OSError("read-only file system")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", fail_on_the_baseline)
    with pytest.raises(OSError):
        promote_run(other, target, results_dir=results)
    assert {p.name: p.read_bytes() for p in results.iterdir() if p.is_file()} == before


def test_promoting_a_run_without_detections_works_and_says_so(tmp_path, write_report_only,
                                                               results_dir):
    write_report_only("old", rows=[make_row("fp32")])
    done = promote_run("old", results_dir / "baseline.json", results_dir=results_dir)
    assert load_baseline(done.path).detections is None
    assert done.detections.startswith("no detections: old has no detections.npz")
    assert "no CI" in done.detections


def test_promoting_a_changed_detections_file_promotes_without_it(tmp_path, coco):
    _, _, base, _ = coco
    run_dir = base_run(tmp_path, base, 0.5)
    with (run_dir / DETECTIONS_NAME).open("ab") as handle:
        handle.write(b"\0")
    done = promote_run(run_dir, tmp_path / "baseline.json", results_dir=tmp_path / "results")
    assert "(changed since the run)" in done.detections
    assert load_baseline(done.path).detections is None
    assert not list(tmp_path.glob("baseline.detections.*"))


@pytest.mark.parametrize("evaluator", ["faster", "pycocotools"])
def test_a_judged_run_gets_the_paired_ci_of_its_change_against_the_baseline(tmp_path, coco,
                                                                           evaluator):
    gt, ids, base, now = coco
    base_map, _ = scored(gt, ids, base, evaluator)
    now_map, now_table = scored(gt, ids, now, evaluator)
    target = tmp_path / "results" / "baseline.json"
    promote_run(base_run(tmp_path, base, base_map), target, results_dir=tmp_path / "results")
    row = judge_with(target, gt, ids, evaluator).judge(
        make_row("int8-max", map=now_map, eval_images=100), None, now_table, now)

    by_hand = delta_map_ci(now_table, evaluate_for_bootstrap(gt, base, ids, evaluator=evaluator))
    delta = row.baseline_map_delta
    assert delta == pytest.approx(now_map - base_map, abs=1e-15) and delta < -0.01
    assert by_hand.estimate == pytest.approx(delta, abs=1e-12)
    assert (row.baseline_map_low, row.baseline_map_high) == (by_hand.low, by_hand.high)
    assert row.baseline_map_low < delta < row.baseline_map_high
    assert BASELINE_CI_KEY not in row.extra
    # printed beside the number: the gate's note, the table cells, the CSV
    assert map_note(row).endswith(f"(Δ {delta:+.4f}, 95 % CI {row.baseline_map_low:+.4f}…"
                                  f"{row.baseline_map_high:+.4f})")
    half = (row.baseline_map_high - row.baseline_map_low) / 2
    cell = f"{signed(delta)}±{half:.3f}".replace("±0.", "±.")
    run = Run(make_env(), (row,), True, "t", run_id="now")
    baseline = load_baseline(target)
    assert cell in render_text(run, baseline=baseline)
    assert f"| {cell} |" in render_markdown(run, baseline=baseline)
    frame = rows_to_frame([row])
    assert frame.loc[0, "baseline_map_low"] == row.baseline_map_low
    # the gate's rule stays the tolerance: a CI wholly below 0 fails nothing by itself
    assert row.baseline_map_high < 0 and row.gate.passed is False  # Δ −0.08 > 0.005
    loose = judge_with(target, gt, ids, evaluator, GateConfig(map_drop_abs=abs(delta) + 0.001))
    again = loose.judge(make_row("int8-max", map=now_map, eval_images=100), None, now_table)
    assert again.baseline_map_high < 0 and again.gate.passed is True
    assert (again.baseline_map_low, again.baseline_map_high) == (by_hand.low, by_hand.high)


def test_identical_detections_give_zero_with_a_zero_width_interval(tmp_path, coco):
    gt, ids, base, _ = coco
    base_map, table = scored(gt, ids, base)
    target = tmp_path / "results" / "baseline.json"
    promote_run(base_run(tmp_path, base, base_map), target, results_dir=tmp_path / "results")
    judge = judge_with(target, gt, ids)
    rescored = []
    rescore = judge.baseline_ci.rescore
    judge.baseline_ci.rescore = lambda arr: rescored.append(len(arr)) or rescore(arr)
    # given the array it scored, an unchanged variant's own evaluation is reused...
    same = judge.judge(make_row("int8-max", map=base_map), None, table, base.copy())
    assert rescored == []
    # ...and scoring the baseline's array again gives the same
    again = judge.judge(make_row("int8-max", map=base_map), None, table)
    assert rescored == [len(base)]
    for row in (same, again):
        assert (row.baseline_map_delta, row.baseline_map_low, row.baseline_map_high) == (0, 0, 0)
        assert map_note(row).endswith("(Δ +0.0000, 95 % CI +0.0000…+0.0000)")


def _v2_report(row: ResultRow) -> dict:
    """A report as schema 2 wrote it: no detections, rows without the baseline CI."""
    data = Run(make_env(), (row,), True, "2025-01-01T00:00:00", run_id="old").to_dict()
    data["schema_version"] = 2
    for key in ("baseline_map_low", "baseline_map_high"):
        del data["rows"][0][key]
    return data


def test_an_old_baseline_without_detections_gives_no_ci_and_says_why(tmp_path, coco):
    gt, ids, base, _ = coco
    base_map, table = scored(gt, ids, base)
    target = tmp_path / "baseline.json"
    target.write_text(json.dumps({**_v2_report(make_row("int8-max", map=base_map)),
                                  "promoted_from": "old"}))
    row = judge_with(target, gt, ids).judge(make_row("int8-max", map=base_map - 0.001), None,
                                            table)
    assert row.baseline_map_low is None and row.baseline_map_high is None
    assert map_note(row).endswith("(Δ -0.0010; no CI: baseline has no stored detections "
                                  "(promoted from a run without detections.npz))")
    text = render_text(Run(make_env(), (row,), True, "t"), baseline=load_baseline(target))
    assert "ΔmAP base of int8-max: no CI (baseline has no stored detections" in text
    assert "−0.001±" not in text and "−0.001" in text


def test_reports_of_the_previous_schema_still_load(tmp_path):
    row = make_row("int8-max", map=0.6, baseline_map_delta=-0.01)
    (tmp_path / "report.json").write_text(json.dumps(_v2_report(row)))
    run = load_run(tmp_path)
    assert run.rows == (row,) and run.detections is None
    assert run.to_dict()["schema_version"] == 3
    assert "int8-max" in render_text(run)


def test_no_ci_when_not_comparable_tampered_or_missing_the_variant(tmp_path, coco):
    gt, ids, base, now = coco
    base_map, _ = scored(gt, ids, base)
    now_map, now_table = scored(gt, ids, now)
    target = tmp_path / "results" / "baseline.json"
    promote_run(base_run(tmp_path, base, base_map), target, results_dir=tmp_path / "results")
    judge = judge_with(target, gt, ids)

    other = judge.judge(make_row("int8-max", map=now_map, eval_fingerprint="e2"), None, now_table)
    assert other.baseline_map_verdict == "not comparable" and other.baseline_map_low is None
    assert other.extra[BASELINE_CI_KEY] == "not comparable"
    assert any(n.startswith("mAP not comparable with the baseline") for n in other.gate.notes)

    unmatched = judge.judge(make_row("int8-mse", map=now_map), None, now_table)
    assert unmatched.baseline_map_low is None and BASELINE_CI_KEY not in unmatched.extra
    assert "no baseline row for int8-mse" in unmatched.gate.notes

    # a baseline row whose variant the sidecar lacks
    renamed = dataclasses.replace(load_baseline(target), rows=(make_row("fp16", map=base_map),))
    row = Judge(GateConfig(), renamed, make_env(),
                baseline_ci=BaselineDetections(renamed, judge.baseline_ci.rescore)).judge(
        make_row("fp16", map=now_map), None, now_table)
    assert row.extra[BASELINE_CI_KEY] == "baseline has no stored detections for fp16"

    sidecar = detections_file(load_baseline(target))
    sidecar.write_bytes(sidecar.read_bytes()[:-1])
    tampered = judge_with(target, gt, ids).judge(make_row("int8-max", map=now_map), None,
                                                 now_table)
    assert tampered.baseline_map_low is None
    assert "do not match the sha256 the baseline records" in map_note(tampered)


def test_a_detections_record_pointing_elsewhere_is_refused(tmp_path):
    data = Run(make_env(), (), True, "t").to_dict()
    for name in ("../detections.npz", "/etc/passwd", ".."):
        (tmp_path / "report.json").write_text(json.dumps(
            {**data, "detections": {"file": name, "sha256": "0" * 64}}))
        with pytest.raises(InputDataError, match="a name beside the report"):
            load_run(tmp_path)


def test_a_ci_that_cannot_be_computed_never_fails_the_row(tmp_path):
    def broken(row, base, matches, results):
        raise RuntimeError("evaluator crashed")

    baseline = Run(make_env(), (make_row("int8-max", map=0.6),), True, "t")
    row = Judge(GateConfig(), baseline, make_env(), baseline_ci=broken).judge(
        make_row("int8-max", map=0.6), None, object())
    assert row.ok and row.gate.passed is True and row.baseline_map_low is None
    assert map_note(row).endswith("(Δ +0.0000; no CI: could not be computed (RuntimeError: "
                                  "evaluator crashed))")
