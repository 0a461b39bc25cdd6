"""The text shown for each cell of the results table, shared by the rich and Markdown
renderers so that the terminal and the PR comment say the same thing."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd

from bench.report.frame import rows_to_frame
from bench.report.rows import PAIRED_KEY, ResultRow

EMPTY = "—"


def fmt_ms(value: float) -> str:
    """Milliseconds with about three significant digits."""
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _formatter(fmt: Callable[[float], str]) -> Callable[[object], str]:
    return lambda value: EMPTY if _missing(value) else fmt(value)


def _gate_mark(passed: object) -> str:
    return {True: "✓", False: "✗"}.get(passed if isinstance(passed, bool) else None, "–")


# (header, frame column, formatter); the order is the table's.
COLUMNS: tuple[tuple[str, str, Callable[[object], str]], ...] = (
    ("variant", "variant", str),
    ("status", "status", str),
    ("mAP", "map", _formatter(lambda v: f"{v:.3f}")),
    ("ΔmAP", "delta_map_vs_fp32", _formatter(lambda v: f"{v:+.3f}".replace("-", "−"))),
    ("AP50", "map50", _formatter(lambda v: f"{v:.3f}")),
    ("median ms", "latency_median_ms", _formatter(fmt_ms)),
    ("p90 ms", "latency_p90_ms", _formatter(fmt_ms)),
    ("p99 ms", "latency_p99_ms", _formatter(fmt_ms)),
    ("img/s", "throughput_ips", _formatter(lambda v: f"{v:.1f}")),
    ("speedup", "speedup_vs_fp32", _formatter(lambda v: f"{v:.2f}×")),
    ("W", "power_w", _formatter(lambda v: f"{v:.2f}")),
    ("mJ/inf", "energy_mj_per_inference", _formatter(lambda v: f"{v:.1f}")),
    ("size MB", "artifact_mb", _formatter(lambda v: f"{v:.2f}")),
    ("gate", "gate_passed", _gate_mark),
)
NUMERIC_HEADERS = frozenset(h for h, _, _ in COLUMNS[2:-1])


def display_frame(rows: Iterable[ResultRow]) -> pd.DataFrame:
    """The results table as display strings, one column per header of COLUMNS."""
    frame = rows_to_frame(rows).astype(object)
    shown = {header: [fmt(v) for v in frame[col]] for header, col, fmt in COLUMNS}
    return pd.DataFrame(shown, columns=[h for h, _, _ in COLUMNS])


def row_notes(row: ResultRow) -> list[str]:
    """What a reader needs beside the numbers: why skipped/failed, why no power figure."""
    notes = []
    if row.status == "failed":
        notes.append(f"{row.variant} failed: {row.error}")
    elif row.status == "skipped":
        notes.append(f"{row.variant} skipped: {row.reason}")
    elif row.power_w is None:
        notes.append(f"{row.variant}: {_no_power(row)}")
    return notes


def _no_power(row: ResultRow) -> str:
    return f"no power figure ({row.power_reason or 'no reason recorded'})"


def grouped_notes(rows: Iterable[ResultRow]) -> tuple[list[str], list[list[int]]]:
    """The notes of a run, rows with the same missing-power reason sharing one note.

    Returns the notes and, per row, the (0-based) indices of the notes it refers to.
    """
    rows = list(rows)
    notes: list[str] = []
    refs: list[list[int]] = []
    power: dict[str, list[str]] = {}
    for row in rows:
        if row.status == "ok" and row.power_w is None:
            power.setdefault(_no_power(row), []).append(row.variant)
    power_index: dict[str, int] = {}
    for row in rows:
        key = _no_power(row) if row.status == "ok" and row.power_w is None else None
        if key is None:
            mine = row_notes(row)
            refs.append(list(range(len(notes), len(notes) + len(mine))))
            notes += mine
            continue
        if key not in power_index:
            power_index[key] = len(notes)
            notes.append(f"{', '.join(power[key])}: {key}")
        refs.append([power_index[key]])
    # Run-level notes: how the speedups were taken.
    if any((r.extra or {}).get(PAIRED_KEY) for r in rows):
        notes.append("speedup: against fp32 timed again just before and after each variant "
                     "(a shared machine's speed drifts between variants)")
    unpaired = [r for r in rows if (r.extra or {}).get("fp32_paired_error")]
    if unpaired:
        names = ", ".join(r.variant for r in unpaired)
        notes.append(f"speedup of {names}: against the fp32 row, not paired "
                     f"({unpaired[0].extra['fp32_paired_error']})")
    return notes, refs


def title_of(rows: Iterable[ResultRow]) -> str:
    """'model · backend · device', joining distinct values where a run mixes them."""
    rows = list(rows)
    parts = []
    for name in ("model", "backend", "device"):
        values = sorted({getattr(r, name) for r in rows if getattr(r, name)})
        parts.append(", ".join(values) or f"unknown {name}")
    return " · ".join(parts)


def flatten_environment(env: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested environment dict -> [(dotted key, text)] for a two-column listing."""
    items: list[tuple[str, str]] = []
    for key, value in env.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            items += flatten_environment(value, name)
        else:
            items.append((name, str(value)))
    return items
