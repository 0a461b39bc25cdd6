"""The results table in the terminal (rich) and as plain text (summary.txt).

The table fits the width it is given: columns with no figure in any row are left out,
then detail columns by priority (display.COLUMNS), each with one footnote, so that
mAP, latency and the verdict are never cut to "…". The environment is one line; the
full record is in report.json and shown with verbosity >= 1 (pytest -v).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from bench.report.display import (
    Layout,
    cells,
    environment_line,
    flatten_environment,
    grouped_notes,
    layout,
    layout_notes,
    safe_text,
    title_of,
    verdict_summary,
)
from bench.report.gate import match_baseline_row
from bench.report.rows import ResultRow
from bench.report.runs import Run

VERDICT_STYLE = {"pass": "bold green", "FAIL": "bold red", "error": "bold red",
                 "skip": "yellow"}
GATE_STYLE = {"✓": "bold green", "✗": "bold red", "–": "dim"}
GAP = 3  # between two columns: one space of padding each side and the divider
TEXT_WIDTH = 100  # summary.txt: what a code block in an ~800 px PR comment shows
LOG_WIDTH = 160   # a console that is not a terminal (CI log, pipe)


def baseline_rows(rows: Sequence[ResultRow], baseline: Run | None) -> list[ResultRow | None]:
    """Each row's baseline row (same model, variant, backend), or None."""
    if baseline is None:
        return [None] * len(rows)
    return [match_baseline_row(r, baseline.rows) for r in rows]


def table_layout(rows: Sequence[ResultRow], baseline: Run | None, width: int | None) -> Layout:
    return layout(rows, baseline_rows(rows, baseline), width, gap=GAP)


def results_table(rows: Sequence[ResultRow], title: str | None = None, *,
                  baseline: Run | None = None, width: int | None = None) -> Table:
    """One line per row, fitted to `width` (None: every non-empty column)."""
    rows = list(rows)
    shown = table_layout(rows, baseline, width)
    table = Table(title=Text(safe_text(title or title_of(rows)), style="bold"),
                  box=box.SIMPLE_HEAD, show_edge=False, header_style="bold", padding=(0, 1),
                  pad_edge=False)
    for column in shown.columns:
        table.add_column(column.header, justify="right" if column.numeric else "left",
                         no_wrap=True)
    for line in cells(rows, baseline_rows(rows, baseline), shown.columns):
        texts = [Text(c) for c in line]
        texts[-1].stylize(VERDICT_STYLE.get(line[-1], ""))
        table.add_row(*texts)
    return table


def environment_header(run: Run) -> Table:
    """The full record: run id, created, completeness, then the flattened environment."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")  # a hash or a path wraps rather than ending in "…"
    grid.add_row("run", Text(safe_text(run.name)))
    grid.add_row("created", Text(run.created))
    grid.add_row("complete", Text("yes" if run.complete else "NO (partial run)",
                                  style="" if run.complete else "bold red"))
    for key, value in flatten_environment(run.environment):
        grid.add_row(key, Text(safe_text(value)))
    return grid


def environment_summary(run: Run) -> Text:
    """The environment in one line, with the run id and whether it is complete."""
    text = Text(f"run {safe_text(run.name)} · ", style="dim")
    if not run.complete:
        text.append("PARTIAL RUN · ", style="bold red")
    text.append(safe_text(environment_line(run.environment)), style="dim")
    return text


def gate_text(rows: Sequence[ResultRow], notes: bool = True) -> Text:
    """Per row: its gate mark, then its failure reasons (red) and, with notes, the checks
    that passed or could not be made (dim). Without notes, only the ok rows whose gate
    failed appear."""
    text = Text()
    for row in rows:
        if not notes and (row.gate.passed is not False or not row.ok):
            continue  # a row that failed to run is in the notes already
        mark = {True: "✓", False: "✗"}.get(row.gate.passed, "–")
        text.append(f"{mark} {safe_text(row.variant)}\n", style=GATE_STYLE[mark])
        for reason in row.gate.reasons:
            style = "red" if row.gate.passed is False else "yellow"
            text.append(f"    {safe_text(reason)}\n", style=style)
        for note in row.gate.notes if notes else ():
            text.append(f"    {safe_text(note)}\n", style="dim")
    return text


def notes_text(rows: Sequence[ResultRow], shown: Layout | None = None,
               width: int | None = None, environment: Mapping[str, Any] | None = None) -> Text:
    text = Text()
    found = grouped_notes(rows, environment)[0] + (layout_notes(shown, width) if shown else [])
    for note in found:
        text.append(f"• {safe_text(note)}\n", style="dim")
    return text


def verdict_text(rows: Sequence[ResultRow]) -> Text:
    """'✗ gate failed — int8-max: mAP ... < floor ...' or '✓ gate passed — 6 of 7 judged'."""
    passed, why = verdict_summary(rows)
    if passed is False:
        return Text(f"✗ gate failed — {safe_text(why)}", style="bold red")
    if passed is None:
        return Text(f"– gate not evaluated — {why}", style="yellow")
    return Text(f"✓ gate passed — {why}", style="bold green")


def run_renderable(run: Run, *, baseline: Run | None = None, width: int | None = None,
                   verbosity: int = 0) -> Group:
    """Everything shown for one run: verbosity 1 adds the full environment and every gate
    note; -1 keeps the table and the verdict."""
    rows = list(run.rows)
    shown = table_layout(rows, baseline, width)
    parts: list[RenderableType] = []
    if verbosity >= 1:
        parts.append(environment_header(run))
    elif verbosity == 0:
        parts.append(environment_summary(run))
    parts.append(results_table(rows, baseline=baseline, width=width))
    if verbosity >= 0:
        gate = gate_text(rows, notes=verbosity >= 1)
        if gate:
            parts += [Text("gate", style="bold"), gate]
        notes = notes_text(rows, shown, width, run.environment)
        if notes:
            parts += [Text("notes", style="bold"), notes]
    parts.append(verdict_text(rows))
    return Group(*parts)


def make_console(min_width: int = LOG_WIDTH) -> Console:
    """A console for reports: when output is not a terminal (CI logs, pipes) rich would
    assume 80 columns, so it gets more room."""
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, min_width)
    return console


def print_run(run: Run, console: Console | None = None, *, baseline: Run | None = None,
              verbosity: int = 0) -> None:
    console = console or make_console()
    console.print(run_renderable(run, baseline=baseline, width=console.width,
                                 verbosity=verbosity))


def render_text(run: Run, width: int = TEXT_WIDTH, *, baseline: Run | None = None,
                verbosity: int = 0, color: bool = False) -> str:
    """The terminal report as a string: plain text (summary.txt) or with ANSI colours."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=color,
                      color_system="standard" if color else None, legacy_windows=False,
                      emoji=False, highlight=False, soft_wrap=False)
    print_run(run, console, baseline=baseline, verbosity=verbosity)
    text = buffer.getvalue()
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
