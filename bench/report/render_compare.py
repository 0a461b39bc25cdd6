"""Two runs side by side (`bench compare A B`): per variant mAP and latency of each, the
deltas, and B's gate verdict with A as the baseline."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from bench.report.baseline import Comparability
from bench.report.display import EMPTY, fmt_ms
from bench.report.gate import match_baseline_row
from bench.report.render_rich import GATE_STYLE, gate_text
from bench.report.rows import ResultRow
from bench.report.runs import Run

HEADERS = ("variant", "backend", "mAP A", "mAP B", "ΔmAP", "median A ms", "median B ms",
           "Δ latency", "gate")


def _map(row: ResultRow | None) -> str:
    return f"{row.map:.3f}" if row is not None and row.map is not None else EMPTY


def _median(row: ResultRow | None) -> float | None:
    return row.latency_ms.median if row is not None and row.latency_ms is not None else None


def _deltas(a: ResultRow | None, b: ResultRow | None) -> tuple[str, str]:
    dmap = EMPTY
    if a is not None and b is not None and a.map is not None and b.map is not None:
        dmap = f"{b.map - a.map:+.3f}".replace("-", "−")
    ma, mb = _median(a), _median(b)
    dlat = f"{(mb / ma - 1) * 100:+.1f} %".replace("-", "−") if ma and mb else EMPTY
    return dmap, dlat


def compare_cells(a: ResultRow | None, b: ResultRow | None) -> list[str]:
    """One line of the comparison; either side may be missing."""
    some = b or a
    mark = {True: "✓", False: "✗"}.get(b.gate.passed if b else None, "–")
    ma, mb = _median(a), _median(b)
    dmap, dlat = _deltas(a, b)
    return [some.variant, some.backend or EMPTY, _map(a), _map(b), dmap,
            fmt_ms(ma) if ma else EMPTY, fmt_ms(mb) if mb else EMPTY, dlat, mark]


def pairs(a: Run, judged_b: list[ResultRow]) -> list[tuple[ResultRow | None, ResultRow | None]]:
    """(A row, B row) per variant: B's rows in order, then A's rows B does not have."""
    matched = [(match_baseline_row(b, a.rows), b) for b in judged_b]
    used = {id(x) for x, _ in matched if x is not None}
    return matched + [(x, None) for x in a.rows if id(x) not in used]


def compare_renderable(a: Run, b: Run, judged_b: list[ResultRow], comp: Comparability) -> Group:
    table = Table(title=f"A = {a.name}   B = {b.name}", header_style="bold")
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("variant", "backend") else "right")
    for row_a, row_b in pairs(a, judged_b):
        cells = [Text(c) for c in compare_cells(row_a, row_b)]
        cells[-1].stylize(GATE_STYLE.get(cells[-1].plain, ""))
        table.add_row(*cells)
    verdict = "comparable" if comp.comparable else "NOT comparable"
    header = Text(f"latency {verdict}: {comp.why}", style="green" if comp.comparable else "yellow")
    return Group(header, table, Text("gate of B with A as baseline", style="bold"),
                 gate_text(judged_b))
