"""summary.md: the run as GitHub-flavoured Markdown, ready to post as a PR comment."""

from __future__ import annotations

import re

from bench.report.display import (
    NUMERIC_HEADERS,
    display_frame,
    flatten_environment,
    grouped_notes,
    title_of,
)
from bench.report.rows import ResultRow
from bench.report.runs import Run

GATE_ICON = {True: "✅", False: "❌", None: "⏭️"}
SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|])")
HTML_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def md(text: object) -> str:
    """Free text shown literally (also inside a table cell): Markdown punctuation, pipes
    and what would open an HTML tag are escaped, newlines folded."""
    escaped = HTML_TAG_START.sub(r"\\<", MARKDOWN_SPECIAL.sub(r"\\\1", str(text)))
    return escaped.replace("\n", " ")


def _table_lines(header: list[str], body: list[list[str]], right: set[str]) -> list[str]:
    rule = ["---:" if h in right else "---" for h in header]
    lines = ["| " + " | ".join(md(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    return lines + ["| " + " | ".join(md(c) for c in row) + " |" for row in body]


def _numbered_notes(rows: list[ResultRow]) -> tuple[list[str], list[str]]:
    """The notes list and, per row, the superscript marks pointing into it."""
    notes, refs = grouped_notes(rows)
    marks = [",".join(str(i + 1) for i in mine) for mine in refs]
    return notes, [m.translate(SUPERSCRIPT).replace(",", "˒") for m in marks]


def results_table(rows: list[ResultRow], marks: list[str]) -> list[str]:
    frame = display_frame(rows)
    body = [[str(v) for v in rec] for rec in frame.itertuples(index=False)]
    for line, mark in zip(body, marks, strict=True):
        line[0] += mark
    return _table_lines(list(frame.columns), body, set(NUMERIC_HEADERS))


def verdict_line(rows: list[ResultRow]) -> str:
    failed = [r.variant for r in rows if r.gate.passed is False]
    judged = [r for r in rows if r.gate.passed is not None]
    if failed:
        return f"**Gate: ❌ failed** for {md(', '.join(failed))}"
    if not judged:
        return "**Gate: not evaluated**"
    return f"**Gate: ✅ passed** ({len(judged)} of {len(rows)} variants judged)"


def gate_section(rows: list[ResultRow]) -> list[str]:
    lines = ["### Gate verdicts", ""]
    for row in rows:
        lines.append(f"- {GATE_ICON[row.gate.passed]} **{md(row.variant)}**")
        lines += [f"  - {md(reason)}" for reason in row.gate.reasons]
        lines += [f"  - _{md(note)}_" for note in row.gate.notes]
    return lines


def environment_section(run: Run) -> list[str]:
    items = [("run", run.name), ("created", run.created), ("complete", str(run.complete))]
    items += flatten_environment(run.environment)
    table = _table_lines(["key", "value"], [[k, v] for k, v in items], set())
    return ["<details><summary>Environment</summary>", "", *table, "", "</details>"]


def render_markdown(run: Run, thresholds: str | None = None) -> str:
    """The whole summary; `thresholds` (GateConfig.describe()) is printed under the verdict."""
    rows = list(run.rows)
    notes, marks = _numbered_notes(rows)
    lines = [f"## Benchmark: {md(title_of(rows))}", ""]
    if not run.complete:
        lines += ["> [!WARNING]", "> Partial run (complete: false): not every variant ran.", ""]
    lines += [verdict_line(rows), ""]
    if thresholds:
        lines += [f"Thresholds: {md(thresholds)}", ""]
    lines += results_table(rows, marks) + [""]
    if any(r.gate.lines for r in rows):
        lines += gate_section(rows) + [""]
    if notes:
        lines += ["### Notes", ""] + [f"{i}. {md(n)}" for i, n in enumerate(notes, 1)] + [""]
    return "\n".join(lines + environment_section(run)) + "\n"
