"""Builders of result rows and environments shared by the report tests."""

from __future__ import annotations

from bench.report.rows import ResultRow, derive_relative

COMMON = {"model": "yolov7-tiny", "backend": "onnxruntime", "device": "cpu"}


def lat(median: float) -> dict[str, float]:
    return {"median": median, "p90": median * 1.1, "p99": median * 1.3,
            "mean": median * 1.05, "min": median * 0.9}


def blocks(median: float) -> dict:
    """What the measurer stores: variant blocks beside a steady 1 ms speed probe."""
    return {"blocks": {"variant_ms": [median] * 5, "probe_ms": [1.0] * 6, "reference_ms": []}}


def make_row(variant: str, status: str = "ok", **kw) -> ResultRow:
    """A row as the session writes it: ok rows carry an evaluation fingerprint, the probe
    median and latency blocks (so mAP and latency compare with a baseline's)."""
    defaults = dict(COMMON)
    if status == "ok":
        defaults.update(map=0.6, map50=0.8, latency_ms=lat(10.0), throughput_ips=100.0,
                        eval_fingerprint="e1", probe_ms=1.0)
        median = kw.get("latency_ms", defaults["latency_ms"])
        if median is not None and "extra" not in kw:
            defaults["extra"] = blocks(median["median"])
    if status == "failed":
        defaults["error"] = "ModelError: boom"
    if status == "skipped":
        defaults["reason"] = "TensorRT not installed"
    defaults.update(kw)
    return ResultRow(variant=variant, status=status, **defaults)


def make_env(**over) -> dict:
    env = {"device": "cpu", "host": {"cpu": "AMD EPYC 7B13", "hostname": "ci-1"},
           "backend": "onnxruntime", "versions": {"onnxruntime": "1.32.0", "python": "3.11"}}
    env.update(over)
    return env


def standard_rows() -> list[ResultRow]:
    return derive_relative([
        make_row("fp32", map=0.612, latency_ms=lat(20.0), power_w=12.5,
                 energy_mj_per_inference=250.0, power_source="rapl", artifact_bytes=24_000_000),
        make_row("fp16", map=0.610, latency_ms=lat(18.0), power_reason="no power source"),
        make_row("int8-max", map=0.512, latency_ms=lat(8.0), power_reason="no power source"),
        make_row("int8-qat", status="skipped"),
        make_row("int8-mse", status="failed", error="ModelError: Q/DQ | [bad] scale"),
    ])
