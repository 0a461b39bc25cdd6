"""Where a run's time went, in one line under the terminal table.

From the rows' phases_s (bench.report.assemble): each variant's build (a cache hit's
lookup), engine open, accuracy pass (with COCO evaluation, and the bootstrap's matching,
inside it), latency pass, --diagnose's work and the bootstrap of ΔmAP against fp32,
summed over the variants; the rest of the wall time is the harness's own (imports, the
report and its plot, the comparison with the baseline).
"""

from __future__ import annotations

from collections.abc import Iterable

from bench.report.rows import ResultRow

# (phases_s key, label), in the order they run
PARTS = (("calibration", "calibration"), ("build", "build"), ("engine_open", "engine open"),
         ("accuracy_total", "accuracy"), ("latency", "latency"), ("diagnosis", "diagnosis"),
         ("delta_map_ci", "ΔmAP CI"))


def phase_totals(rows: Iterable[ResultRow]) -> dict[str, float]:
    """Seconds per phase summed over the rows that recorded phases, plus
    accuracy_evaluation (part of accuracy_total)."""
    totals: dict[str, float] = {}
    for row in rows:
        phases = (row.extra or {}).get("phases_s") or {}
        for key in (*(k for k, _ in PARTS), "accuracy_evaluation"):
            value = phases.get(key)
            if isinstance(value, (int, float)):
                totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def time_split(rows: Iterable[ResultRow], wall_s: float | None = None) -> str | None:
    """"time: 27.1 s — accuracy 11.0 s (COCO evaluation 4.1 s), latency 8.4 s, ..., harness
    3.2 s"; None when no row recorded its phases."""
    totals = phase_totals(rows)
    if not totals:
        return None
    parts = []
    for key, label in PARTS:
        seconds = totals.get(key, 0.0)
        if seconds < 0.05:
            continue
        text = f"{label} {seconds:.1f} s"
        if key == "accuracy_total" and totals.get("accuracy_evaluation"):
            text += f" (COCO evaluation {totals['accuracy_evaluation']:.1f} s)"
        parts.append(text)
    measured = sum(totals.get(k, 0.0) for k, _ in PARTS)
    if wall_s is None:
        return "time: " + ", ".join(parts)
    rest = max(0.0, wall_s - measured)
    return f"time: {wall_s:.1f} s — " + ", ".join([*parts, f"harness {rest:.1f} s"])
