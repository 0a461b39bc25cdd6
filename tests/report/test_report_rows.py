import json
import math

import pytest
from report_builders import lat, make_row

from bench.errors import InputDataError
from bench.report.rows import Gate, LatencyStats, ResultRow, derive_relative


@pytest.mark.parametrize("kw, match", [
    (dict(status="done"), "status = 'done'"),
    (dict(status="failed"), "failed row needs an error"),
    (dict(status="skipped"), "skipped row needs a reason"),
    (dict(status="ok", map=1.2), "map = 1.2 is out of range"),
    (dict(status="ok", map=-1.0), "map = -1.0"),  # COCOeval's -1 must become None
    (dict(status="ok", map50=math.nan), "map50 = nan"),
    (dict(status="ok", power_w=math.inf), "power_w = inf"),
    (dict(status="ok", throughput_ips=0.0), "throughput_ips = 0.0"),
    (dict(status="ok", delta_map_vs_fp32=-1.5), "delta_map_vs_fp32"),
    (dict(status="ok", artifact_bytes=-3), "artifact_bytes = -3"),
    (dict(status="ok", eval_images=2.5), "eval_images = 2.5"),
    (dict(status="ok", map=True), "map = True"),
    (dict(status="ok", model=3), "model = 3"),
    (dict(status="ok", extra={"x": object()}), "extra is not JSON-safe"),
    (dict(status="ok", latency_ms={"median": 1.0}), "expected keys"),
])
def test_invalid_rows_are_refused_with_the_field_named(kw, match):
    with pytest.raises(InputDataError, match=match):
        ResultRow(variant="int8-max", **kw)


def test_empty_variant_refused():
    with pytest.raises(InputDataError, match="variant"):
        ResultRow(variant="", status="ok")


def test_latency_order_is_checked():
    with pytest.raises(InputDataError, match="min <= median <= p90 <= p99"):
        LatencyStats(median=5.0, p90=4.0, p99=6.0, mean=5.0, min=1.0)


def test_row_is_frozen_and_latency_mapping_becomes_stats():
    row = make_row("fp32", latency_ms=lat(10.0))
    assert isinstance(row.latency_ms, LatencyStats)
    with pytest.raises(AttributeError):
        row.map = 0.1
    with pytest.raises(TypeError):
        row.extra["k"] = 1


def test_round_trip_through_json_is_exact():
    row = make_row("int8-entropy", map=0.5, map_small=None, e2e_latency_ms=lat(12.0),
                   power_w=3.5, energy_mj_per_inference=40.0, artifact="a/b.onnx",
                   artifact_bytes=123, eval_images=500, eval_ips=31.5,
                   gate=Gate(False, ("mAP low",), ("note",)), extra={"calib": {"bins": 2048}})
    data = json.loads(json.dumps(row.to_dict(), allow_nan=False))
    assert ResultRow.from_dict(data) == row
    assert data["latency_ms"]["p99"] == pytest.approx(13.0)
    assert data["gate"] == {"passed": False, "reasons": ["mAP low"], "notes": ["note"]}


def test_from_dict_refuses_unknown_and_missing_keys():
    with pytest.raises(InputDataError, match=r"unknown key\(s\) \['mAP'\]"):
        ResultRow.from_dict({"variant": "fp32", "status": "ok", "mAP": 0.5})
    with pytest.raises(InputDataError, match="missing key 'status'"):
        ResultRow.from_dict({"variant": "fp32"})


def test_derive_relative_from_same_group_fp32():
    rows = derive_relative([
        make_row("fp32", map=0.6, latency_ms=lat(20.0)),
        make_row("int8-max", map=0.55, latency_ms=lat(5.0)),
        make_row("fp32", map=0.4, latency_ms=lat(2.0), backend="tensorrt"),
        make_row("fp16", map=0.41, latency_ms=lat(1.0), backend="tensorrt"),
        make_row("int8-qat", status="skipped"),
    ])
    assert rows[0].delta_map_vs_fp32 == 0.0 and rows[0].speedup_vs_fp32 == 1.0
    assert rows[1].delta_map_vs_fp32 == pytest.approx(-0.05)
    assert rows[1].speedup_vs_fp32 == pytest.approx(4.0)
    assert rows[3].delta_map_vs_fp32 == pytest.approx(0.01)
    assert rows[3].speedup_vs_fp32 == pytest.approx(2.0)
    assert rows[4].delta_map_vs_fp32 is None and rows[4].speedup_vs_fp32 is None


@pytest.mark.parametrize("fp32", [None, make_row("fp32", status="failed")])
def test_derive_relative_without_ok_fp32_gives_none(fp32):
    stale = make_row("fp16", delta_map_vs_fp32=0.3, speedup_vs_fp32=9.0)
    rows = derive_relative([r for r in (fp32, stale) if r is not None])
    assert rows[-1].delta_map_vs_fp32 is None and rows[-1].speedup_vs_fp32 is None
