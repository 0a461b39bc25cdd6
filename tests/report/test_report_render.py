import io

import pytest
from PIL import Image
from report_builders import lat, make_env, make_row, standard_rows
from rich.console import Console

from bench.report.frame import frame_columns, rows_to_frame
from bench.report.gate import GateConfig, gate_rows
from bench.report.render_markdown import render_markdown
from bench.report.render_plot import pareto_figure, pareto_front, pareto_points, write_pareto
from bench.report.render_rich import print_run
from bench.report.runs import Run


def judged_run(rows=None, complete=True) -> Run:
    rows = gate_rows(rows if rows is not None else standard_rows(), make_env(), None)
    return Run(make_env(power={"source": "none"}), tuple(rows), complete, "2025-01-01T00:00:00")


def test_frame_has_one_row_per_result_and_fixed_columns():
    frame = rows_to_frame(standard_rows())
    assert len(frame) == 5 and list(frame.columns) == frame_columns()
    assert frame.loc[2, "speedup_vs_fp32"] == pytest.approx(2.5)
    assert list(rows_to_frame([]).columns) == frame_columns()


def test_markdown_has_title_table_reasons_footnotes_and_environment():
    md = render_markdown(judged_run(), thresholds=GateConfig().describe())
    assert md.startswith("## Benchmark: yolov7-tiny · onnxruntime · cpu")
    assert "| variant | status | mAP | ΔmAP |" in md
    assert "| int8-max¹ | ok | 0.512 | −0.100 |" in md  # shares fp16's power note
    assert "**Gate: ❌ failed** for int8-max, int8-mse" in md
    assert "  - mAP 0.512 < floor 0.95 × fp32 0.612 = 0.581" in md
    assert "fp16¹" in md and "1. fp16, int8-max: no power figure (no power source)" in md
    assert "int8-qat skipped: TensorRT not installed" in md
    assert "ModelError: Q/DQ \\| \\[bad\\] scale" in md  # escaped, shown literally
    assert "<details><summary>Environment</summary>" in md and "| host.cpu | AMD EPYC 7B13 |" in md
    assert "Thresholds: floors: fp16 ≥ 0.99×fp32" in md


def test_markdown_warns_on_partial_run_and_table_rows_are_well_formed():
    md = render_markdown(judged_run(complete=False))
    assert "Partial run (complete: false)" in md
    table = [line for line in md.splitlines() if line.startswith("| ") and "ms" not in line
             and line.count("|") > 3 and "key" not in line]
    assert all(line.replace("\\|", "").count("|") == 15 for line in table)


def test_pareto_front_drops_dominated_points():
    points = pareto_points([make_row("fp32", map=0.6, latency_ms=lat(20.0)),
                            make_row("fp16", map=0.59, latency_ms=lat(10.0)),
                            make_row("int8-max", map=0.5, latency_ms=lat(12.0)),
                            make_row("int8-mse", map=0.55, latency_ms=lat(5.0))])
    assert [p.label for p in pareto_front(points)] == ["int8-mse", "fp16", "fp32"]


def test_pareto_figure_has_one_point_per_ok_variant_and_fp32_highlighted():
    fig = pareto_figure(standard_rows())
    ax = fig.axes[0]
    by_gid = {c.get_gid(): len(c.get_offsets()) for c in ax.collections}
    assert by_gid == {"variants": 2, "fp32": 1}
    assert sorted(t.get_text() for t in ax.texts) == ["fp16", "fp32", "int8-max"]
    assert ax.get_xlabel() == "median latency (ms)"


def test_pareto_png_is_a_valid_image(tmp_path):
    path = write_pareto(standard_rows(), tmp_path / "pareto.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] > 400 and image.size[1] > 300


def test_pareto_without_points_still_renders(tmp_path):
    path = write_pareto([make_row("fp32", status="skipped")], tmp_path / "p.png")
    assert path.stat().st_size > 1000


def test_rich_render_handles_failed_skipped_and_empty_power():
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None)
    rows = standard_rows() + [make_row("fp16", status="ok", power_w=None, power_reason=None,
                                       map=None, latency_ms=None, throughput_ips=None,
                                       backend="tensorrt")]
    print_run(judged_run(rows), console)
    out = buffer.getvalue()
    assert "int8-mse failed: ModelError: Q/DQ | [bad] scale" in out  # no markup eaten
    assert "int8-qat skipped: TensorRT not installed" in out
    assert "fp16: no power figure (no reason recorded)" in out
    assert "mAP 0.512 < floor 0.95 × fp32 0.612 = 0.581" in out
    assert "host.cpu" in out and "✗" in out and "—" in out


def test_paired_speedups_are_explained_in_the_notes():
    from bench.report.display import grouped_notes
    from bench.report.rows import PAIRED_KEY, derive_relative

    rows = derive_relative([
        make_row("fp32", latency_ms=lat(20.0)),
        make_row("int8-max", latency_ms=lat(8.0), extra={PAIRED_KEY: 16.0}),
        make_row("int8-mse", latency_ms=lat(8.0), extra={"fp32_paired_error": "OOM"}),
    ])
    assert [r.speedup_vs_fp32 for r in rows] == [1.0, 2.0, 2.5]  # 16/8 paired, 20/8 not
    notes, _ = grouped_notes(rows)
    assert any(n.startswith("speedup: against fp32 timed again") for n in notes)
    assert "speedup of int8-mse: against the fp32 row, not paired (OOM)" in notes
