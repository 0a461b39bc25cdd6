"""Result rows as one flat pandas DataFrame: the table behind report.csv and the renderers."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import fields
from typing import Any

import pandas as pd

from bench.report.rows import LatencyStats, ResultRow

LATENCY_STATS = tuple(f.name for f in fields(LatencyStats))
LATENCY_PREFIX = {"latency_ms": "latency", "e2e_latency_ms": "e2e_latency"}


def _latency_columns(prefix: str, stats: LatencyStats | None) -> dict[str, float | None]:
    return {f"{prefix}_{s}_ms": (getattr(stats, s) if stats else None) for s in LATENCY_STATS}


def _flatten(row: ResultRow) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for f in fields(row):
        value = getattr(row, f.name)
        if f.name in LATENCY_PREFIX:
            flat.update(_latency_columns(LATENCY_PREFIX[f.name], value))
        elif f.name == "gate":
            flat.update(gate_passed=value.passed, gate_reasons=" | ".join(value.reasons),
                        gate_notes=" | ".join(value.notes),
                        gate_warnings=" | ".join(value.warnings))
        elif f.name == "extra":
            flat["extra"] = json.dumps(dict(value), sort_keys=True) if value else ""
        else:
            flat[f.name] = value
    size = row.artifact_bytes
    flat["artifact_mb"] = size / 1e6 if size is not None else None
    return flat


def frame_columns() -> list[str]:
    """The columns of rows_to_frame, in order (also for an empty run)."""
    return list(_flatten(ResultRow(variant="x", status="ok")))


def rows_to_frame(rows: Iterable[ResultRow]) -> pd.DataFrame:
    """One row per result, one column per flat field; missing figures are NaN/None."""
    records = [_flatten(r) for r in rows]
    return pd.DataFrame.from_records(records, columns=frame_columns())
