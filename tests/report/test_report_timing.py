"""The time split line under the terminal table."""

from report_builders import make_row

from bench.report.timing import phase_totals, time_split


def _row(variant, **phases):
    return make_row(variant, extra={"phases_s": phases})


def test_phases_are_summed_over_the_variants_and_the_rest_is_the_harness():
    rows = [_row("fp32", build=0.2, engine_open=0.1, accuracy_total=2.0, accuracy_evaluation=0.5,
                 latency=1.0),
            _row("int8-max", calibration=3.0, build=1.0, accuracy_total=1.5,
                 accuracy_evaluation=0.4, latency=1.2, delta_map_ci=0.3),
            make_row("int8-qat", status="skipped")]
    totals = phase_totals(rows)
    assert totals["accuracy_total"] == 3.5 and totals["latency"] == 2.2
    assert totals["accuracy_evaluation"] == 0.9
    line = time_split(rows, wall_s=12.0)
    assert line == ("time: 12.0 s — calibration 3.0 s, build 1.2 s, engine open 0.1 s, "
                    "accuracy 3.5 s (COCO evaluation 0.9 s), latency 2.2 s, ΔmAP CI 0.3 s, "
                    "harness 1.7 s")


def test_no_phases_no_line():
    assert time_split([make_row("fp32", status="skipped")], wall_s=3.0) is None
