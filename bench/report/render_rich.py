"""The results table in the terminal, with rich: environment header, table, gate verdicts."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from bench.report.display import (
    NUMERIC_HEADERS,
    display_frame,
    flatten_environment,
    grouped_notes,
    title_of,
)
from bench.report.rows import ResultRow
from bench.report.runs import Run

STATUS_STYLE = {"ok": "green", "failed": "bold red", "skipped": "yellow"}
GATE_STYLE = {"✓": "bold green", "✗": "bold red", "–": "dim"}


def results_table(rows: Iterable[ResultRow], title: str | None = None) -> Table:
    """One line per row; '—' where a figure is missing; gate ✓ / ✗ / – (not judged)."""
    rows = list(rows)
    frame = display_frame(rows)
    table = Table(title=title or title_of(rows), show_lines=False, header_style="bold")
    for header in frame.columns:
        table.add_column(header, justify="right" if header in NUMERIC_HEADERS else "left",
                         no_wrap=True)
    for record in frame.to_dict("records"):
        cells = [Text(str(record[h])) for h in frame.columns]
        cells[1].stylize(STATUS_STYLE.get(record["status"], ""))
        cells[-1].stylize(GATE_STYLE.get(record["gate"], ""))
        table.add_row(*cells)
    return table


def environment_header(run: Run) -> Table:
    """A two-column grid: run id, created, completeness, then the flattened environment."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("run", Text(run.name))
    grid.add_row("created", Text(run.created))
    grid.add_row("complete", Text("yes" if run.complete else "NO (partial run)",
                                  style="" if run.complete else "bold red"))
    for key, value in flatten_environment(run.environment):
        grid.add_row(key, Text(value))
    return grid


def gate_text(rows: Iterable[ResultRow]) -> Text:
    """Per row: its gate mark, then its failure reasons (red) and notes (dim)."""
    text = Text()
    for row in rows:
        mark = {True: "✓", False: "✗"}.get(row.gate.passed, "–")
        text.append(f"{mark} {row.variant}\n", style=GATE_STYLE[mark])
        for reason in row.gate.reasons:
            text.append(f"    {reason}\n", style="red" if row.gate.passed is False else "yellow")
        for note in row.gate.notes:
            text.append(f"    {note}\n", style="dim")
    return text


def notes_text(rows: Iterable[ResultRow]) -> Text:
    text = Text()
    for note in grouped_notes(rows)[0]:
        text.append(f"• {note}\n", style="dim")
    return text


def run_renderable(run: Run) -> Group:
    """Everything `bench report` shows for one run."""
    parts = [environment_header(run), results_table(run.rows)]
    if any(r.gate.lines for r in run.rows):
        parts += [Text("gate", style="bold"), gate_text(run.rows)]
    notes = notes_text(run.rows)
    if notes:
        parts += [Text("notes", style="bold"), notes]
    return Group(*parts)


def make_console(min_width: int = 150) -> Console:
    """A console for reports: when output is not a terminal (CI logs, pipes) rich would
    assume 80 columns and squeeze the 14-column table, so it gets more room."""
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, min_width)
    return console


def print_run(run: Run, console: Console | None = None) -> None:
    (console or make_console()).print(run_renderable(run))
