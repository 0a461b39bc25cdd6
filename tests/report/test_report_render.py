import io

import pytest
from PIL import Image
from report_builders import lat, make_env, make_row, standard_rows
from rich.console import Console

from bench.report.frame import frame_columns, rows_to_frame
from bench.report.gate import GateConfig, gate_rows
from bench.report.render_markdown import render_markdown
from bench.report.render_plot import pareto_figure, pareto_front, pareto_points, write_pareto
from bench.report.render_rich import print_run, render_text
from bench.report.rows import derive_relative
from bench.report.runs import Run


def judged_run(rows=None, complete=True) -> Run:
    rows = gate_rows(rows if rows is not None else standard_rows(), make_env(), None)
    return Run(make_env(power={"source": "none"}), tuple(rows), complete, "2025-01-01T00:00:00")


def test_frame_has_one_row_per_result_and_fixed_columns():
    frame = rows_to_frame(standard_rows())
    assert len(frame) == 5 and list(frame.columns) == frame_columns()
    assert frame.loc[2, "speedup_vs_fp32"] == pytest.approx(2.5)
    assert list(rows_to_frame([]).columns) == frame_columns()


def test_markdown_headline_gives_verdict_and_reason_then_a_comment_sized_table():
    md = render_markdown(judged_run(), thresholds=GateConfig().describe())
    first = md.splitlines()[0]
    assert first.startswith("### ❌ Gate failed: int8-max: mAP 0.5120 \\< floor 0.95 × fp32")
    header = next(line for line in md.splitlines() if line.startswith("| variant"))
    assert header == ("| variant | mAP | ΔmAP<br>fp32 | median<br>ms | speedup<br>fp32 | "
                      "size<br>MB | gate |")  # no baseline, no power: those columns dropped
    assert "| int8-max¹ | 0.512 | −0.100 | 8.00 | 2.50× | — | ❌ FAIL |" in md
    assert "| int8-mse³ | — | — | — | — | — | 💥 error |" in md
    assert "1. fp16, int8-max: no power figure (no power source)" in md
    assert "int8-qat skipped: TensorRT not installed" in md
    assert "ModelError: Q/DQ \\| \\[bad\\] scale" in md  # escaped, shown literally
    assert "not shown, no figure in any row: ΔmAP base, latency base" in md
    assert "Thresholds: floors: fp16 ≥ 0.99×fp32" in md and "Baseline: none." in md
    for summary in ("All figures", "Gate checks (5 variants)", "Environment"):
        assert f"<details><summary>{summary}</summary>" in md
    assert "| host.cpu | AMD EPYC 7B13 |" in md


def test_markdown_shows_the_change_against_the_baseline():
    base = judged_run([make_row("fp32", map=0.612, latency_ms=lat(20.0)),
                       make_row("int8-max", map=0.600, latency_ms=lat(8.0))])
    now = gate_rows(derive_relative([make_row("fp32", map=0.612, latency_ms=lat(20.0)),
                                     make_row("int8-max", map=0.590, latency_ms=lat(9.0))]),
                    make_env(), base)
    run = Run(make_env(), tuple(now), True, "2025-01-02T00:00:00", run_id="r2")
    md = render_markdown(run, baseline=base, baseline_source="results/baseline.json")
    assert "| int8-max¹ | 0.590 | −0.022 | 9.00 | 2.22× | −0.010 | +12.5 % ▲ | ❌ FAIL |" in md
    assert md.splitlines()[0] == ("### ❌ Gate failed: int8-max: mAP 0.5900 \\< baseline "
                                  "0.6000 − 0.005 = 0.5950 (Δ -0.0100; no CI: only the "
                                  "suite's run re-scores the baseline's detections)")
    assert "(results/baseline.json)" in md


def test_markdown_neutralises_mentions_and_html():
    rows = [make_row("fp32", model="@octocat <b>x</b>.onnx", error=None)]
    md = render_markdown(judged_run(rows))
    assert "@octocat" not in md and "@\u200doctocat" in md
    assert "<b>" not in md and "\\<b\\>" in md


def test_markdown_warns_on_partial_run_and_table_rows_are_well_formed():
    md = render_markdown(judged_run(complete=False))
    assert "Partial run (complete: false)" in md
    tables: dict[int, list[str]] = {}
    block = 0
    for line in md.splitlines():
        if line.startswith("| "):
            tables.setdefault(block, []).append(line.replace("\\|", ""))
        else:
            block += 1
    for lines in tables.values():
        assert len({line.count("|") for line in lines}) == 1, lines


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
    assert ax.get_xlabel().startswith("latency (ms): fp32's median / speedup (paired)")


def test_pareto_places_variants_by_their_paired_speedup_with_error_bars():
    from bench.report.render_plot import pareto_points

    fp32 = make_row("fp32", map=0.612, latency_ms={"median": 20.0, "p90": 22.0, "p99": 25.0,
                                                   "mean": 21.0, "min": 19.0, "ci_low": 19.5,
                                                   "ci_high": 20.5})
    # the variant's own median (12 ms) was taken in a fast minute; paired, it is 1.25x
    int8 = make_row("int8-max", map=0.60, latency_ms=lat(12.0), speedup_vs_fp32=1.25,
                    speedup_low=1.2, speedup_high=1.3, delta_map_low=-0.02,
                    delta_map_high=-0.004)
    points = {p.label: p for p in pareto_points([fp32, int8])}
    assert points["int8-max"].latency_ms == 16.0  # 20 / 1.25: what the speedup column says
    assert points["int8-max"].latency_range == (20 / 1.3, 20 / 1.2)
    assert points["int8-max"].map_range == (0.612 - 0.02, 0.612 - 0.004)
    assert points["fp32"].latency_range == (19.5, 20.5)


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
    print_run(judged_run(rows), console, verbosity=1)
    out = buffer.getvalue()
    assert "int8-mse failed: ModelError: Q/DQ | [bad] scale" in out  # no markup eaten
    assert "int8-qat skipped: TensorRT not installed" in out
    assert "fp16: no power figure (no reason recorded)" in out
    assert "mAP 0.5120 < floor 0.95 × fp32 0.6120 = 0.5814" in out
    assert "host.cpu" in out and "FAIL" in out and "—" in out


@pytest.mark.parametrize("width", [80, 160])
def test_rich_table_fits_the_width_and_never_cuts_a_figure(width):
    rows = standard_rows() + [make_row("int8-percentile", map=0.6, latency_ms=lat(9.0))]
    text = render_text(judged_run(rows), width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width and "…" not in text
    row = next(line for line in lines if line.startswith("int8-percentile"))
    assert row.split()[:2] == ["int8-percentile", "0.600"] and row.split()[-1] == "pass"
    assert "9.00" in row  # the median
    assert lines[0].startswith("run ") and "host.cpu" not in text  # environment: one line
    if width == 80:
        assert "not shown at 80 columns: " in text and "p99 ms" in text
    else:
        assert "not shown at" not in text and "p99" in lines[2]
    assert "not shown, no figure in any row: ΔmAP base, latency base" in text
    assert "\n✗ gate failed — int8-max: mAP 0.5120 < floor" in text


def test_rich_title_and_names_are_not_markup_nor_control_codes():
    rows = [make_row("fp32", model="[bold red]X[/bold red]\x1b]0;pwned\x07.onnx")]
    text = render_text(judged_run(rows), 160)
    assert "[bold red]X[/bold red]\\x1b]0;pwned\\x07.onnx" in text
    assert "\x1b" not in text and "\x07" not in text


def test_quiet_verbosity_keeps_the_table_and_the_verdict():
    text = render_text(judged_run(), 120, verbosity=-1)
    assert "notes" not in text and "run " not in text.splitlines()[0]
    last = [line for line in text.rstrip().splitlines() if line.startswith("✗ gate failed")]
    assert "int8-max" in text and last and text.rstrip().endswith("scale")


def test_paired_speedups_are_explained_in_the_notes():
    from bench.report.display import grouped_notes
    from bench.report.rows import PAIRED_KEY, derive_relative

    rows = derive_relative([
        make_row("fp32", latency_ms=lat(20.0)),
        make_row("int8-max", latency_ms=lat(8.0), extra={PAIRED_KEY: 16.0}),
        make_row("int8-mse", latency_ms=lat(8.0), extra={"fp32_unavailable": "OOM"}),
    ])
    assert [r.speedup_vs_fp32 for r in rows] == [1.0, 2.0, 2.5]  # 16/8 paired, 20/8 not
    notes, _ = grouped_notes(rows)
    assert any(n.startswith("speedup: median of fp32 block / variant block") for n in notes)
    assert "speedup of int8-mse: against the fp32 row, not paired (OOM)" in notes


@pytest.mark.parametrize(("isa", "backend", "expected"), [
    (["avx2", "fma"], "onnxruntime", True),                  # the AVX2-only EPYC host
    (["avx2", "fma", "avx512f", "avx512_vnni"], "onnxruntime", False),
    (["asimd", "asimddp"], "onnxruntime", False),             # Arm with dotprod
    (["avx2", "fma"], "tensorrt", False),                     # not ORT's CPU kernels
    ([], "onnxruntime", False),                               # ISA unrecorded: no claim
])
def test_a_cpu_without_int8_dot_products_is_named_in_both_summaries(isa, backend, expected):
    rows = standard_rows()
    run = Run(environment=make_env(host={"cpu": "AMD EPYC", "isa": isa}, backend=backend),
              rows=tuple(rows), complete=True, created="2026-12-02T12:00:00Z")
    for text in (render_markdown(run), render_text(run, width=400)):
        found = [line for line in text.splitlines() if "no int8 dot-product" in line]
        assert bool(found) is expected
        if expected:  # the rows that ran, not the skipped or failed INT8 ones
            assert "int8-max:" in found[0] and "int8-qat" not in found[0]
            assert "avx2, fma" in found[0]


@pytest.mark.parametrize("fp32_map, expected", [(0.0002, True), (0.612, False)])
def test_a_near_zero_fp32_map_is_named_before_its_gates_are_read(fp32_map, expected):
    rows = derive_relative([
        make_row("fp32", map=fp32_map, latency_ms=lat(20.0)),
        make_row("fp16", map=fp32_map * 0.98, latency_ms=lat(18.0)),
    ])
    run = Run(environment=make_env(), rows=tuple(rows), complete=True,
              created="2026-12-02T12:00:00Z")
    for text in (render_markdown(run), render_text(run, width=400)):
        found = [line for line in text.splitlines() if "compare noise" in line]
        assert bool(found) is expected
        if expected:
            assert "mAP 0.0002" in text and "--class-map" in text
