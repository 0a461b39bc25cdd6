"""What each cell of the results table says, shared by the terminal, summary.txt and
summary.md so that they all say the same thing.

COLUMNS is the one definition of the table: a column is a header, a getter on
(row, its baseline row), a formatter, and a priority that says which columns go first
when the width is short. Adding a figure (a CI, a COCO recall) is one Column line.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.report.rows import (
    BASELINE_CI_KEY,
    NOT_COMPARABLE,
    PAIRED_KEY,
    QAT_START_KEY,
    ResultRow,
)

EMPTY = "—"
MINUS = "−"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe_text(text: object) -> str:
    """A name or path as a terminal may show it: control characters (ESC, CR, BEL, ...)
    written as visible escapes so that they cannot move the cursor or retitle a window."""
    return CONTROL.sub(lambda m: ascii(m.group())[1:-1], str(text))


def fmt_ms(value: float) -> str:
    """Milliseconds with about three significant digits."""
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def signed(value: float, digits: int = 3) -> str:
    return f"{value:+.{digits}f}".replace("-", MINUS)


def percent(fraction: float) -> str:
    return f"{fraction * 100:+.1f} %".replace("-", MINUS)


Getter = Callable[[ResultRow, "ResultRow | None"], Any]


@dataclass(frozen=True)
class Column:
    """One column of the results table.

    header: may hold a line break: the second line says what a change is against
    ("fp32": this run's fp32 row; "base": the baseline's row) or the unit.
    priority: 0 is always shown; higher numbers are dropped first when the width is short.
    numeric: right-aligned.
    """

    header: str
    get: Getter
    fmt: Callable[[Any], str]
    priority: int = 0
    numeric: bool = True

    @property
    def name(self) -> str:
        """The header on one line."""
        return self.header.replace("\n", " ")

    def cell(self, row: ResultRow, base: ResultRow | None) -> str:
        value = self.get(row, base)
        return EMPTY if _missing(value) else self.fmt(value)


def _field(name: str) -> Getter:
    return lambda row, base: getattr(row, name, None)


def _latency(stat: str) -> Getter:
    return lambda row, base: getattr(row.latency_ms, stat) if row.latency_ms else None


def _vs_baseline_map(row: ResultRow, base: ResultRow | None) -> Any:
    if base is None or not row.ok or not base.ok or row.map is None or base.map is None:
        return None
    if row.baseline_map_verdict == "not comparable":
        return "n/c"  # another evaluation (images, size, thresholds): never compared
    return _with_ci(row.map - base.map, row.baseline_map_low, row.baseline_map_high)


# The latency verdict against the baseline in one mark beside the change.
VERDICT_MARKS = {"regression": "▲", "inconclusive": "?", "no change": "="}


def _vs_baseline_latency(row: ResultRow, base: ResultRow | None) -> Any:
    if base is None or not row.ok or not base.ok:
        return None
    if row.baseline_latency_verdict == "not comparable":
        return "n/c"
    if row.baseline_latency_ratio is None:
        return None
    mark = VERDICT_MARKS.get(row.baseline_latency_verdict or "", "")
    return f"{percent(row.baseline_latency_ratio - 1.0)} {mark}".rstrip()


def _with_pm(value: float, halfwidth: float | None, text: str) -> str:
    """A figure with its CI's relative half-width, e.g. "1.94 ±3%"."""
    if halfwidth is None or not math.isfinite(halfwidth):
        return text
    return f"{text} ±{halfwidth * 100:.0f}%"


def _median_cell(row: ResultRow, base: ResultRow | None) -> Any:
    lat = row.latency_ms
    return None if lat is None else _with_pm(lat.median, lat.ci_rel_halfwidth, fmt_ms(lat.median))


def _speedup_cell(row: ResultRow, base: ResultRow | None) -> Any:
    s = row.speedup_vs_fp32
    if s is None:
        return None
    half = ((row.speedup_high - row.speedup_low) / 2 / s
            if row.speedup_low is not None and row.speedup_high is not None else None)
    return _with_pm(s, half, f"{s:.2f}×")


def _with_ci(delta: float, low: float | None, high: float | None) -> str:
    """A ΔmAP with its CI's half-width, e.g. "−0.004±.003" (the CI itself: report.csv)."""
    if low is None or high is None:
        return signed(delta)
    return f"{signed(delta)}±{(high - low) / 2:.3f}".replace("±0.", "±.")


def _delta_cell(row: ResultRow, base: ResultRow | None) -> Any:
    d = row.delta_map_vs_fp32
    return None if d is None else _with_ci(d, row.delta_map_low, row.delta_map_high)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else signed(value)


def verdict(row: ResultRow) -> str:
    """One word per row: pass / FAIL (gate) / error (the row failed) / skip / — (not judged)."""
    if row.status == "failed":
        return "error"
    if row.status == "skipped":
        return "skip"
    return {True: "pass", False: "FAIL"}.get(row.gate.passed, EMPTY)


def _three(value: float) -> str:
    return f"{value:.3f}"


# The table, in display order. Priorities: 0 the figures a verdict rests on, 1-2 the
# changes, 3+ detail. Never empty on a CPU: latency, mAP. Often empty: power, baseline.
COLUMNS: tuple[Column, ...] = (
    Column("variant", lambda r, b: safe_text(r.variant), str, numeric=False),
    Column("mAP", _field("map"), _three),
    Column("ΔmAP\nfp32", _delta_cell, str, priority=1),
    Column("AP50", _field("map50"), _three, priority=6),
    Column("median\nms", _median_cell, str),
    Column("p90\nms", _latency("p90"), fmt_ms, priority=5),
    Column("p99\nms", _latency("p99"), fmt_ms, priority=7),
    Column("img/s", _field("throughput_ips"), lambda v: f"{v:.1f}", priority=6),
    Column("speedup\nfp32", _speedup_cell, str, priority=1),
    Column("ΔmAP\nbase", _vs_baseline_map, _text, priority=2),
    Column("latency\nbase", _vs_baseline_latency, str, priority=2),
    Column("W", _field("power_w"), lambda v: f"{v:.2f}", priority=3),
    Column("mJ/inf", _field("energy_mj_per_inference"), lambda v: f"{v:.1f}", priority=3),
    Column("int8\n%", lambda r, b: (r.extra or {}).get("diagnosis", {}).get("int8_pct"),
           lambda v: f"{v:.0f}", priority=4),
    Column("size\nMB", lambda r, b: r.artifact_bytes / 1e6 if r.artifact_bytes else None,
           lambda v: f"{v:.2f}", priority=4),
    Column("gate", lambda r, b: verdict(r), str, numeric=False),
)
NUMERIC_HEADERS = frozenset(c.name for c in COLUMNS if c.numeric)


@dataclass(frozen=True)
class Layout:
    """The columns shown, and why the others are not."""

    columns: tuple[Column, ...]
    empty: tuple[str, ...]     # headers with no figure in any row
    narrow: tuple[str, ...]    # headers left out for the width


def cells(rows: Sequence[ResultRow], bases: Sequence[ResultRow | None] | None,
          columns: Iterable[Column] = COLUMNS) -> list[list[str]]:
    """The display text of every cell, one list per row."""
    bases = list(bases) if bases is not None else [None] * len(rows)
    return [[c.cell(r, b) for c in columns] for r, b in zip(rows, bases, strict=True)]


def text_width(text: str) -> int:
    """Terminal cells a string takes (wide characters count two; the widest line)."""
    return max(sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)
               for line in text.split("\n"))


def layout(rows: Sequence[ResultRow], bases: Sequence[ResultRow | None] | None,
           width: int | None, gap: int = 3, columns: Sequence[Column] = COLUMNS) -> Layout:
    """Drop always-empty columns, then the highest priority numbers until the table fits
    `width` (None: no limit). `gap` is the space between two columns."""
    table = cells(rows, bases, columns)
    keep = [i for i, _ in enumerate(columns) if any(line[i] != EMPTY for line in table)]
    empty = tuple(c.name for i, c in enumerate(columns) if i not in keep)
    if not rows:
        keep = list(range(len(columns)))
        empty = ()
    widths = {i: max([text_width(columns[i].header)] + [text_width(x[i]) for x in table])
              for i in keep}
    narrow: list[str] = []

    def total() -> int:
        return sum(widths[i] for i in keep) + gap * (len(keep) - 1)

    while width is not None and total() > width:
        droppable = [i for i in keep if columns[i].priority > 0]
        if not droppable:
            break
        worst = max(droppable, key=lambda i: (columns[i].priority, i))
        keep.remove(worst)
        narrow.append(columns[worst].name)
    return Layout(tuple(columns[i] for i in keep), empty, tuple(reversed(narrow)))


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


def grouped_notes(rows: Iterable[ResultRow], environment: Mapping[str, Any] | None = None
                  ) -> tuple[list[str], list[list[int]]]:
    """The notes of a run, rows with the same missing-power reason sharing one note;
    environment (the report's) adds what the host itself explains.

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
    notes += run_notes(rows)
    notes += host_notes(rows, environment or {})
    return notes, refs


# CPU flags of int8 dot-product instructions, which ONNX Runtime's INT8 kernels need to
# beat FP32 (on a 2-core AVX2-only EPYC, 2026-12-02, the INT8 graphs ran at 0.88x of fp32).
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def host_notes(rows: Sequence[ResultRow], environment: Mapping[str, Any]) -> list[str]:
    """A note when INT8 rows ran on ONNX Runtime on a CPU that reports no int8
    dot-product instructions (read from the report's host.isa; none when unrecorded)."""
    isa = (environment.get("host") or {}).get("isa")
    int8 = [r.variant for r in rows if r.variant.startswith("int8") and r.ok]
    if (not isa or not int8 or environment.get("backend") != "onnxruntime"
            or not str(environment.get("device", "")).startswith("cpu")
            or any(flag in isa for flag in INT8_DOT_FLAGS)):
        return []
    return [f"{', '.join(int8)}: this CPU reports no int8 dot-product instructions"
            f" (isa: {', '.join(isa)}; none of {', '.join(INT8_DOT_FLAGS)}), so ONNX"
            " Runtime's INT8 kernels need not be faster than FP32 here, and INT8 mAP can"
            " differ from a host that has them"]


def run_notes(rows: Sequence[ResultRow]) -> list[str]:
    """Notes about the run as a whole: how the speedups were taken."""
    notes = []
    if any((r.extra or {}).get(PAIRED_KEY) for r in rows):
        notes.append("speedup: median of fp32 block / variant block, timed interleaved "
                     "(fp32 before and after each group of variant blocks) so the machine's "
                     "drift cancels; "
                     "± is the 95 % CI (latency: of the median)")
    notes += _baseline_ci_notes(rows)
    notes += _weak_reference_notes(rows)
    notes += [n for n in map(qat_start_note, rows) if n]
    unpaired = [r for r in rows if (r.extra or {}).get("fp32_unavailable")
                or (r.extra or {}).get("fp32_paired_error")]
    if unpaired:
        names = ", ".join(r.variant for r in unpaired)
        why = unpaired[0].extra.get("fp32_unavailable") or unpaired[0].extra["fp32_paired_error"]
        notes.append(f"speedup of {names}: against the fp32 row, not paired ({why})")
    return notes


# Below this fp32 mAP the floors (fractions of fp32's) compare noise: seen with random
# weights (0.0002), where fp16 and int8-qat "failed" against 0.99 x 0.0002.
WEAK_REFERENCE_MAP = 0.01


def _weak_reference_notes(rows: Sequence[ResultRow]) -> list[str]:
    ref = next((r for r in rows if r.variant == "fp32" and r.ok), None)
    if ref is None or ref.map is None or ref.map >= WEAK_REFERENCE_MAP:
        return []
    return [f"fp32 scored mAP {ref.map:.4f} on this evaluation: the floors, fractions of"
            " fp32's, then compare noise, and so low a reference usually means that the"
            " model and the dataset do not match (its classes, --class-map, --coco, its"
            " preprocessing) or that its weights are untrained; read no gate before that is"
            " settled"]


def qat_start_note(row: ResultRow) -> str | None:
    """int8-qat against the PTQ variant it started from, and which weights it kept."""
    found = (row.extra or {}).get(QAT_START_KEY)
    if not isinstance(found, Mapping):
        return None
    meta = (row.extra or {}).get("artifact_meta") or {}
    kept = meta.get("kept")
    held = _qat_check_text(meta)
    kept_text = f"; kept the {kept} weights{held}" if kept else ""
    if "delta" not in found:
        return f"{row.variant} against its start {found.get('start')}: no CI " \
               f"({found.get('error')}){kept_text}"
    delta, low, high = (f"{found[k]:+.4f}".replace("-", MINUS) for k in ("delta", "low", "high"))
    # The held-out check is label-free and runs on other images: it can keep trained
    # weights that score below their start on the evaluation images.
    below = (f" — below its start on this evaluation: {found['start']} is the better"
             " INT8 here" if kept == "trained" and found["high"] < 0 else "")
    return (f"{row.variant} against its start {found['start']}: ΔmAP {delta} "
            f"(95 % paired CI {low}…{high}){kept_text}{below}")


def _qat_check_text(meta: Mapping) -> str:
    """What decided int8-qat's kept weights: agreement with the FP32 model's detections on
    the held-out images (the engine check), or the interpreter's head error."""
    before, after = meta.get("agreement_initial"), meta.get("agreement_trained")
    if isinstance(before, float) and isinstance(after, float):
        return (f" (held-out agreement with fp32's detections, mAP {before:.4f} start,"
                f" {after:.4f} trained)")
    before, after = meta.get("holdout_initial"), meta.get("holdout_trained")
    if isinstance(before, float) and isinstance(after, float):
        return f" (held-out head error {before:.4f} → {after:.4f})"
    return f" ({meta['check_note']})" if meta.get("check_note") else ""


def _baseline_ci_notes(rows: Sequence[ResultRow]) -> list[str]:
    """What ± means in the baseline's ΔmAP column, and why rows lack it (one note a reason)."""
    notes = []
    if any(r.baseline_map_low is not None for r in rows):
        notes.append("ΔmAP base: ± is half the 95 % paired bootstrap CI over images (this "
                     "run's detections against the baseline's, scored on the same images)")
    why: dict[str, list[str]] = {}
    for r in rows:
        reason = (r.extra or {}).get(BASELINE_CI_KEY)
        if reason and reason != NOT_COMPARABLE:
            why.setdefault(str(reason), []).append(r.variant)
    notes += [f"ΔmAP base of {', '.join(names)}: no CI ({reason})"
              for reason, names in why.items()]
    return notes


def layout_notes(shown: Layout, width: int | None) -> list[str]:
    """One footnote for the columns left out: empty in every row, or too wide to fit."""
    notes = []
    if shown.empty:
        notes.append(f"not shown, no figure in any row: {', '.join(shown.empty)}")
    if shown.narrow:
        where = f"at {width} columns" if width else "here"
        notes.append(f"not shown {where}: {', '.join(shown.narrow)} "
                     "(every figure: report.csv)")
    return notes


def failure_headline(rows: Sequence[ResultRow], limit: int = 2) -> str | None:
    """'int8-max: <first reason>; int8-mse: <...>' for the rows whose gate failed."""
    failed = [r for r in rows if r.gate.passed is False]
    if not failed:
        return None
    parts = [f"{r.variant}: {r.gate.reasons[0] if r.gate.reasons else 'failed'}"
             for r in failed[:limit]]
    more = f"; and {len(failed) - limit} more" if len(failed) > limit else ""
    return "; ".join(parts) + more


def verdict_summary(rows: Sequence[ResultRow]) -> tuple[bool | None, str]:
    """(passed, text): passed None when nothing was judged."""
    headline = failure_headline(rows)
    if headline:
        return False, headline
    judged = [r for r in rows if r.gate.passed is not None]
    if not judged:
        return None, "nothing judged (every variant skipped)" if rows else "no rows"
    skipped = len(rows) - len(judged)
    tail = f", {skipped} skipped" if skipped else ""
    return True, f"{len(judged)} of {len(rows)} variants judged{tail}"


def title_of(rows: Iterable[ResultRow]) -> str:
    """'model · backend · device', joining distinct values where a run mixes them."""
    rows = list(rows)
    parts = []
    for name in ("model", "backend", "device"):
        values = sorted({getattr(r, name) for r in rows if getattr(r, name)})
        parts.append(", ".join(values) or f"unknown {name}")
    return " · ".join(parts)


def environment_line(env: Mapping[str, Any]) -> str:
    """The environment in one line: device, runtime and its version, commit, threads."""
    backend = env.get("backend")
    versions = env.get("versions") if isinstance(env.get("versions"), Mapping) else {}
    parts = [str(env.get("device") or "unknown device")]
    if backend:
        version = versions.get(backend) if isinstance(backend, str) else None
        parts.append(f"{backend} {version}" if version else str(backend))
    for key, label in (("commit", "commit"), ("threads", "threads"), ("qdq_profile", "qdq")):
        if env.get(key) not in (None, ""):
            parts.append(f"{label} {env[key]}")
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
