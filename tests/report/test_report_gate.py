from dataclasses import replace

import pytest
from report_builders import lat, make_env, make_row

from bench.errors import ConfigError
from bench.report.baseline import Comparability, comparability
from bench.report.gate import GateConfig, evaluate_gate, gate_passed, gate_rows
from bench.report.runs import Run

SAME = Comparability(True, "same machine")
FP32 = make_row("fp32", map=0.612)


def judge(row, base=None, comp=SAME, cfg=None, fp32=FP32):
    return evaluate_gate(row, fp32, base, comp, cfg or GateConfig())


@pytest.mark.parametrize("variant, floor", [
    ("fp16", 0.99), ("int8-max", 0.95), ("int8-entropy", 0.95), ("int8-percentile", 0.95),
    ("int8-mse", 0.95), ("trt-entropy2", 0.95), ("trt-minmax", 0.95), ("int8-qat", 0.99),
    ("fp32", None), ("torch", None),
])
def test_default_floors_follow_mlperf(variant, floor):
    assert GateConfig().floor_for(variant) == floor


@pytest.mark.parametrize("variant, ratio, passed", [
    ("fp16", 0.991, True), ("fp16", 0.985, False),
    ("int8-max", 0.951, True), ("int8-max", 0.94, False),
    ("int8-qat", 0.96, False), ("int8-qat", 0.995, True),
])
def test_floor_pass_and_fail_per_variant_kind(variant, ratio, passed):
    gate = judge(make_row(variant, map=0.612 * ratio))
    assert gate.passed is passed
    assert any("floor" in line and "× fp32 0.612" in line for line in gate.lines)


def test_floor_failure_prints_its_numbers():
    gate = judge(make_row("int8-max", map=0.512))
    assert gate.passed is False
    assert gate.reasons == ("mAP 0.5120 < floor 0.95 × fp32 0.6120 = 0.5814",)


def test_floors_are_configurable_by_name_and_prefix():
    cfg = GateConfig.from_mapping({"floors": {"int8-*": 0.5, "fp16": None, "int8-qat": 0.99}})
    assert cfg.floor_for("int8-max") == 0.5
    assert cfg.floor_for("int8-qat") == 0.99  # the exact name wins over a prefix
    assert cfg.floor_for("fp16") is None
    assert GateConfig.from_mapping({"floors": {"qat": 0.9}}).floor_for("int8-qat") == 0.9
    assert judge(make_row("int8-max", map=0.35), cfg=cfg).passed is True


@pytest.mark.parametrize("data, match", [
    ({"floors": {"fp16": 1.5}}, r"floors\['fp16'\] = 1.5"),
    ({"map_drop_abs": -0.1}, "map_drop_abs = -0.1"),
    ({"latency_growth": "10%"}, "latency_growth = '10%'"),
    ({"latency": 0.1}, r"unknown key\(s\) \['latency'\]"),
])
def test_bad_gate_config_is_refused(data, match):
    with pytest.raises(ConfigError, match=match):
        GateConfig.from_mapping(data)


def test_missing_fp32_leaves_floor_unchecked_with_a_visible_warning():
    gate = judge(make_row("int8-max", map=0.1), fp32=make_row("fp32", status="failed"))
    assert gate.passed is True
    assert any("NOT CHECKED: no ok fp32 row" in n for n in gate.warnings)
    assert gate.lines[0] == gate.warnings[0]  # shown before the notes


def test_baseline_map_regression_fails():
    gate = judge(make_row("fp16", map=0.605), base=make_row("fp16", map=0.611))
    assert gate.passed is False
    assert "mAP 0.6050 < baseline 0.6110 − 0.005 = 0.6060 (Δ -0.0060)" in gate.reasons


def test_baseline_map_within_tolerance_passes():
    gate = judge(make_row("fp16", map=0.607), base=make_row("fp16", map=0.611))
    assert gate.passed is True
    assert "mAP 0.6070 ≥ baseline 0.6110 − 0.005 = 0.6060 (Δ -0.0040)" in gate.notes


def test_latency_not_compared_when_not_comparable():
    comp = Comparability(False, "host.cpu differs: 'Intel' vs baseline 'AMD'")
    gate = judge(make_row("fp32", map=0.612, latency_ms=lat(50.0)),
                 base=make_row("fp32", map=0.612, latency_ms=lat(10.0)), comp=comp)
    assert gate.passed is True
    assert "latency not comparable: host.cpu differs: 'Intel' vs baseline 'AMD'" in gate.notes


def test_failed_row_fails_and_skipped_row_is_not_judged():
    failed = judge(make_row("fp16", status="failed", error="build: out of memory"))
    skipped = judge(make_row("fp16", status="skipped", reason="no TensorRT"))
    assert failed.passed is False and failed.reasons == ("failed: build: out of memory",)
    assert skipped.passed is None and skipped.reasons == ("skipped: no TensorRT",)


def test_baseline_row_not_ok_is_not_compared():
    gate = judge(make_row("fp16", map=0.61), base=make_row("fp16", status="failed"))
    assert any("baseline row fp16 is failed" in n for n in gate.notes)


def test_comparability_names_every_difference():
    a = make_env()
    b = make_env(device="cuda:0", versions={"onnxruntime": "1.31.0"})
    comp = comparability(a, b)
    assert not comp.comparable
    assert "device differs: 'cuda:0' vs baseline 'cpu'" in comp.why
    assert "versions.onnxruntime differs: '1.31.0' vs baseline '1.32.0'" in comp.why
    assert comparability(a, make_env()).comparable


def test_comparability_requires_recorded_host_and_checks_power_mode():
    no_cpu = make_env(host={"hostname": "x"})
    assert "host.cpu recorded in one run only" in comparability(make_env(), no_cpu).why
    maxn = make_env(power={"mode": "MAXN"})
    assert "power.mode recorded in one run only" in comparability(make_env(), maxn).why
    assert comparability(maxn, make_env(power={"mode": "MAXN"})).comparable


def test_gate_rows_uses_run_fp32_and_baseline_environment():
    same = {"eval_fingerprint": "e"}
    base_rows = (make_row("fp32", map=0.612, latency_ms=lat(10.0), **same),
                 make_row("int8-max", map=0.60, latency_ms=lat(4.0), **same))
    baseline = Run(make_env(host={"cpu": "Intel Xeon"}), base_rows, True, "t0")
    rows = [make_row("fp32", map=0.612, latency_ms=lat(30.0), **same),
            make_row("int8-max", map=0.59, latency_ms=lat(9.0), **same)]
    judged = gate_rows(rows, make_env(), baseline)
    assert [r.gate.passed for r in judged] == [True, False]  # latency ignored: other CPU
    assert ("mAP 0.5900 < baseline 0.6000 − 0.005 = 0.5950 (Δ -0.0100; no CI: only the "
            "suite's run re-scores the baseline's detections)") in judged[1].gate.reasons
    notes = judged[0].gate.notes
    assert any(n.startswith("latency not comparable: host.cpu differs") for n in notes)
    assert not gate_passed(judged)
    # same machine: 30 ms against 10 ms, probe-normalised, is a regression
    same_machine = gate_rows(rows[:1], make_env(), Run(make_env(), base_rows, True, "t0"))
    assert same_machine[0].gate.passed is False
    assert "regression" in same_machine[0].gate.reasons[0]
    # without probe-normalised blocks on one side: never a raw-median verdict
    bare = [replace(rows[0], extra={})]
    unblocked = gate_rows(bare, make_env(), Run(make_env(), base_rows, True, "t0"))
    assert unblocked[0].gate.passed is True
    assert any("no probe-normalised blocks" in n for n in unblocked[0].gate.notes)
