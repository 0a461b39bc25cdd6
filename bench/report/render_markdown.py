"""summary.md: the run as GitHub-flavoured Markdown, ready to post as a PR comment.

Sized for a comment (~800 px): a headline with the verdict and its reason, one table of
the figures a reviewer acts on (mAP and latency with their change against fp32 and
against the baseline, the gate), and the rest folded in <details>: every figure, the
gate's checks, the notes and the environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from bench.report.display import (
    COLUMNS,
    Column,
    cells,
    environment_line,
    flatten_environment,
    grouped_notes,
    layout,
    layout_notes,
    title_of,
    verdict_summary,
)
from bench.report.gate import match_baseline_row
from bench.report.rows import ResultRow
from bench.report.runs import Run

GATE_ICON = {True: "✅", False: "❌", None: "⏭️"}
VERDICT_ICON = {"pass": "✅", "FAIL": "❌", "error": "💥", "skip": "⏭️"}
SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|<>#~])")
MENTION = re.compile(r"@(?=\w)")
ZWJ = "\u200d"
# The comment table: the columns a verdict rests on (the rest is under "All figures").
COMMENT_HEADERS = ("variant", "mAP", "ΔmAP\nfp32", "ΔmAP\nbase", "median\nms",
                   "speedup\nfp32", "latency\nbase", "size\nMB", "gate")
# "All figures", in tables narrow enough for a comment; a column in none of them (a new
# figure) joins the last one.
FIGURE_TABLES = (
    ("accuracy", ("variant", "mAP", "ΔmAP\nfp32", "ΔmAP\nbase", "AP50", "gate")),
    ("speed, power and size", ("variant", "median\nms", "p90\nms", "p99\nms", "img/s",
                               "speedup\nfp32", "latency\nbase", "W", "mJ/inf", "size\nMB")),
)


def md(text: object) -> str:
    """Free text shown literally (also inside a table cell): Markdown punctuation, pipes
    and angle brackets escaped, @mentions neutralised (a zero-width joiner after the @,
    so nobody is pinged), control characters dropped, newlines folded."""
    plain = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", str(text)).replace("\n", " ")
    return MENTION.sub("@" + ZWJ, MARKDOWN_SPECIAL.sub(r"\\\1", plain))


def _header(column: Column) -> str:
    return "<br>".join(md(part) for part in column.header.split("\n"))


def _table(columns: Sequence[Column], body: list[list[str]]) -> list[str]:
    rule = ["---:" if c.numeric else ":---" for c in columns]
    lines = ["| " + " | ".join(_header(c) for c in columns) + " |",
             "| " + " | ".join(rule) + " |"]
    return lines + ["| " + " | ".join(body_line) + " |" for body_line in body]


def _bases(rows: Sequence[ResultRow], baseline: Run | None) -> list[ResultRow | None]:
    if baseline is None:
        return [None] * len(rows)
    return [match_baseline_row(r, baseline.rows) for r in rows]


def results_table(rows: list[ResultRow], marks: list[str], columns: Sequence[Column],
                  bases: list[ResultRow | None]) -> list[str]:
    body = [[md(c) for c in line] for line in cells(rows, bases, columns)]
    gate_at = next((i for i, c in enumerate(columns) if c.header == "gate"), None)
    for line, mark in zip(body, marks, strict=True):
        line[0] += mark
        if gate_at is not None:
            word = line[gate_at]
            line[gate_at] = f"{VERDICT_ICON.get(word, '')} {word}".strip()
    return _table(columns, body)


def _numbered_notes(rows: list[ResultRow], extra: list[str],
                    environment: Mapping[str, Any] | None = None
                    ) -> tuple[list[str], list[str]]:
    """The notes list and, per row, the superscript marks pointing into it."""
    notes, refs = grouped_notes(rows, environment)
    marks = [",".join(str(i + 1) for i in mine) for mine in refs]
    return notes + extra, [m.translate(SUPERSCRIPT).replace(",", "˒") for m in marks]


def headline(rows: list[ResultRow]) -> str:
    """'### ❌ Gate failed: int8-max: median latency 8.96 ms > baseline 8.00 ms +10 % ...'."""
    passed, why = verdict_summary(rows)
    word = {True: "passed", False: "failed", None: "not evaluated"}[passed]
    return f"### {GATE_ICON[passed]} Gate {word}: {md(why)}"


def gate_section(rows: list[ResultRow]) -> list[str]:
    lines = [f"<details><summary>Gate checks ({len(rows)} variants)</summary>", ""]
    for row in rows:
        lines.append(f"- {GATE_ICON[row.gate.passed]} **{md(row.variant)}**")
        lines += [f"  - {md(reason)}" for reason in row.gate.reasons]
        lines += [f"  - _{md(note)}_" for note in row.gate.notes]
    return lines + ["", "</details>"]


def diagnosis_section(rows: list[ResultRow]) -> list[str]:
    """Per INT8 row diagnosed (--diagnose): int8 % of conv FLOPs and the worst tensors; per
    int8-auto row (and int8-qat --qat-plan auto): the groups it kept float. Nothing when no
    row has either."""
    lines: list[str] = []
    for row in rows:
        found = (row.extra or {}).get("diagnosis") or {}
        meta = (row.extra or {}).get("artifact_meta") or {}
        kept = meta.get("kept_float")
        if not found and kept is None:
            continue
        pct = found.get("int8_pct")
        lines.append(f"- **{md(row.variant)}**: int8 {pct:.1f} % of conv FLOPs, "
                     f"{found.get('float_time_pct', 0.0):.1f} % of the time in float ops"
                     if pct is not None else f"- **{md(row.variant)}**")
        worst = ", ".join(f"{md(t['tensor'])} {t['sqnr_db']:.1f} dB"
                          for t in found.get("worst_tensors", []))
        lines += [f"  - worst tensors (SQNR): {worst}"] if worst else []
        lines += [f"  - kept float: {md(', '.join(kept)) or 'nothing'}{_plan_note(meta)}"] \
            if kept is not None else []
        lines += [f"  - _{md(found[k])}_" for k in ("profile_error", "profile_note", "layers_error")
                  if k in found]
    if not lines:
        return []
    return ["<details><summary>Diagnosis (INT8 rows)</summary>", "", *lines, "", "</details>",
            ""]


def _plan_note(meta: dict) -> str:
    """' (int8-auto's plan, with --keep-float head)' for int8-qat --qat-plan auto."""
    if meta.get("plan") != "auto":
        return ""
    flags = ", ".join(meta.get("keep_float") or []) or "nothing"
    return md(f" (int8-auto's plan, with --keep-float {flags})")


def environment_section(run: Run) -> list[str]:
    items = [("run", run.name), ("created", run.created), ("complete", str(run.complete))]
    items += flatten_environment(run.environment)
    body = [[md(k), md(v)] for k, v in items]
    key_value = (Column("key", lambda r, b: None, str, numeric=False),
                 Column("value", lambda r, b: None, str, numeric=False))
    return ["<details><summary>Environment</summary>", "", *_table(key_value, body), "",
            "</details>"]


def figure_tables() -> list[tuple[str, list[Column]]]:
    """FIGURE_TABLES as columns; every column of COLUMNS appears in one of them."""
    placed = {h for _, headers in FIGURE_TABLES for h in headers}
    tables = [(name, [c for c in COLUMNS if c.header in headers])
              for name, headers in FIGURE_TABLES]
    tables[-1][1].extend(c for c in COLUMNS if c.header not in placed)
    return tables


def all_figures_section(rows: list[ResultRow], bases: list[ResultRow | None]) -> list[str]:
    lines = ["<details><summary>All figures</summary>", ""]
    marks = [""] * len(rows)
    for name, columns in figure_tables():
        shown = layout(rows, bases, None, columns=columns)
        lines += [f"**{name}**", "", *results_table(rows, marks, shown.columns, bases), ""]
    return lines + ["</details>"]


def baseline_line(baseline: Run | None, source: str | None) -> str:
    if baseline is None:
        return f"Baseline: none{f' (no {md(source)})' if source else ''}."
    where = f" ({md(source)})" if source else ""
    return f"Baseline: run {md(baseline.name)}{where}, created {md(baseline.created)}."


def render_markdown(run: Run, thresholds: str | None = None, *, baseline: Run | None = None,
                    baseline_source: str | None = None) -> str:
    """The whole summary. thresholds: GateConfig.describe(), shown under the table;
    baseline: the run the gate compared with (its rows fill the "base" columns);
    baseline_source: where it came from, or why there is none."""
    rows = list(run.rows)
    bases = _bases(rows, baseline)
    comment = [c for c in COLUMNS if c.header in COMMENT_HEADERS]
    shown = layout(rows, bases, None, columns=comment)
    notes, marks = _numbered_notes(rows, layout_notes(shown, None), run.environment)
    lines = [headline(rows), "",
             f"**{md(title_of(rows))}** · {md(environment_line(run.environment))}", ""]
    if not run.complete:
        lines += ["> [!WARNING]", "> Partial run (complete: false): not every variant ran.", ""]
    lines += results_table(rows, marks, shown.columns, bases) + [""]
    lines += [f"<sub>fp32: against this run's fp32 row · base: against the baseline. "
              f"{baseline_line(baseline, baseline_source)}"
              + (f" Thresholds: {md(thresholds)}" if thresholds else "") + "</sub>", ""]
    if notes:
        lines += [f"{i}. {md(n)}" for i, n in enumerate(notes, 1)] + [""]
    lines += all_figures_section(rows, bases) + [""]
    if any(r.gate.lines for r in rows):
        lines += gate_section(rows) + [""]
    lines += diagnosis_section(rows)
    return "\n".join(lines + environment_section(run)) + "\n"
