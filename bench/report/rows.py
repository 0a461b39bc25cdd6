"""One immutable result row per (model, backend, device, variant), validated when created.

A row is what the report, the gate and the baseline speak about. Numbers are checked
for being finite and in range at creation, so a row that exists is a row that can be
written, rendered and compared. COCOeval's -1 ("no objects of that size") must be passed
as None: mAP figures here live in [0, 1].
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from bench.errors import InputDataError

STATUSES = ("ok", "failed", "skipped")
REFERENCE_VARIANT = "fp32"
# extra key: the fp32 median latency (ms) timed in windows just before and after a row's
# own, which its speedup_vs_fp32 divides (machine speed drifts between variants).
PAIRED_KEY = "fp32_paired_median_ms"
# extra key: why a row judged against a comparable baseline has no CI of its ΔmAP against it
BASELINE_CI_KEY = "baseline_map_ci_missing"
NOT_COMPARABLE = "not comparable"  # its value when the evaluations differ
# extra key of an int8-qat row: its ΔmAP against the PTQ variant it started from (with CI)
QAT_START_KEY = "qat_vs_start"
# The twelve COCO summary figures, in COCOeval.stats order.
MAP_FIELDS = ("map", "map50", "map75", "map_small", "map_medium", "map_large",
              "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")
VERDICTS = ("regression", "no change", "inconclusive", "not comparable")
NON_NEGATIVE_FIELDS = (
    "power_w", "energy_mj_per_inference", "build_s", "calib_s", "eval_ips",
)
POSITIVE_FIELDS = ("throughput_ips", "speedup_vs_fp32", "speedup_low", "speedup_high",
                   "probe_ms", "baseline_latency_ratio", "baseline_latency_low",
                   "baseline_latency_high")
DELTA_FIELDS = ("delta_map_vs_fp32", "delta_map_low", "delta_map_high", "baseline_map_delta",
                "baseline_map_low", "baseline_map_high")
COUNT_FIELDS = ("artifact_bytes", "eval_images")
TEXT_FIELDS = (
    "error", "reason", "model", "backend", "device", "power_source", "power_reason", "artifact",
    "eval_fingerprint", "calib_fingerprint", "baseline_latency_verdict", "baseline_map_verdict",
)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_number(owner: str, name: str, value: object, lo: float, hi: float) -> None:
    ok = _is_number(value) and math.isfinite(value) and lo <= value <= hi
    if not ok:
        raise InputDataError(
            f"{owner}: {name} = {value!r} is out of range, expected a finite number in [{lo}, {hi}]"
        )


_OPTIONAL_LATENCY = ("ci_low", "ci_high", "confidence")


@dataclass(frozen=True)
class LatencyStats:
    """Latency statistics of one timing window, in milliseconds."""

    median: float
    p90: float
    p99: float
    mean: float
    min: float
    # The median's confidence interval (distribution-free, from order statistics); None
    # in reports written before it existed.
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) is None and f.name in _OPTIONAL_LATENCY:
                continue
            _check_number("LatencyStats", f.name, getattr(self, f.name), 0.0, math.inf)
        if self.ci_low is not None and self.ci_high is not None:
            if not self.ci_low <= self.median <= self.ci_high:
                raise InputDataError(f"LatencyStats: expected ci_low <= median <= ci_high, got "
                                     f"{self.ci_low}, {self.median}, {self.ci_high}")
        # A small slack: percentiles from different interpolation rules can cross by rounding.
        slack = 1e-9 * max(1.0, self.p99)
        if not self.min <= self.median + slack <= self.p90 + 2 * slack <= self.p99 + 3 * slack:
            raise InputDataError(
                f"LatencyStats: expected min <= median <= p90 <= p99, got min={self.min}, "
                f"median={self.median}, p90={self.p90}, p99={self.p99}"
            )

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def ci_rel_halfwidth(self) -> float | None:
        """Half the CI's width relative to the median (0.03 for ±3 %)."""
        if self.ci_low is None or self.ci_high is None or self.median <= 0:
            return None
        return (self.ci_high - self.ci_low) / 2 / self.median

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], owner: str = "latency") -> LatencyStats:
        names = {f.name for f in fields(cls)}
        required = names - set(_OPTIONAL_LATENCY)
        if not isinstance(data, Mapping) or not required <= set(data) <= names:
            got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise InputDataError(f"{owner}: expected keys {sorted(required)} "
                                 f"(and optionally {list(_OPTIONAL_LATENCY)}), got {got}")
        return cls(**{name: data[name] for name in names if name in data})


@dataclass(frozen=True)
class Gate:
    """The gate's verdict on one row.

    passed is None when the gate did not judge (skipped row, or not evaluated yet).
    reasons: why it failed or was skipped, each with its numbers.
    notes: the checks that passed and the ones that could not be made, with their numbers.
    warnings: what a reader must see although it did not fail the row (a floor that could
    not be checked, an inconclusive latency comparison).
    """

    passed: bool | None = None
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.passed not in (True, False, None):
            raise InputDataError(f"Gate: passed = {self.passed!r}, expected true, false or null")
        for name in ("reasons", "notes", "warnings"):
            object.__setattr__(self, name, tuple(str(r) for r in getattr(self, name)))

    @property
    def lines(self) -> tuple[str, ...]:
        return self.reasons + self.warnings + self.notes

    def to_dict(self) -> dict[str, Any]:
        out = {"passed": self.passed, "reasons": list(self.reasons), "notes": list(self.notes)}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Gate:
        if not isinstance(data, Mapping) or "passed" not in data:
            raise InputDataError(f"gate: expected an object with key 'passed', got {data!r}")
        return cls(data["passed"], tuple(data.get("reasons", ())), tuple(data.get("notes", ())),
                   tuple(data.get("warnings", ())))


def _as_latency(owner: str, name: str, value: object) -> LatencyStats | None:
    if value is None or isinstance(value, LatencyStats):
        return value
    if isinstance(value, Mapping):
        return LatencyStats.from_dict(value, owner=f"{owner}: {name}")
    raise InputDataError(f"{owner}: {name} = {value!r}, expected LatencyStats, a mapping or None")


def _frozen_extra(owner: str, extra: object) -> Mapping[str, Any]:
    if not isinstance(extra, Mapping):
        raise InputDataError(f"{owner}: extra = {extra!r}, expected a mapping")
    try:
        # A JSON round trip both proves the extras are JSON-safe and copies them deeply.
        copied = json.loads(json.dumps(dict(extra), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InputDataError(f"{owner}: extra is not JSON-safe ({exc})") from None
    return MappingProxyType(copied)


@dataclass(frozen=True, eq=True)
class ResultRow:
    """One variant's result. Build with keywords; invalid values raise InputDataError."""

    variant: str
    status: str
    error: str | None = None
    reason: str | None = None  # why a row was skipped
    model: str | None = None
    backend: str | None = None
    device: str | None = None
    map: float | None = None
    map50: float | None = None
    map75: float | None = None
    map_small: float | None = None
    map_medium: float | None = None
    map_large: float | None = None
    ar1: float | None = None
    ar10: float | None = None
    ar100: float | None = None
    ar_small: float | None = None
    ar_medium: float | None = None
    ar_large: float | None = None
    delta_map_vs_fp32: float | None = None
    # paired bootstrap CI over images of delta_map_vs_fp32 (same images on both sides)
    delta_map_low: float | None = None
    delta_map_high: float | None = None
    latency_ms: LatencyStats | None = None
    e2e_latency_ms: LatencyStats | None = None
    throughput_ips: float | None = None
    # median of the ratios fp32 block / variant block, interleaved; CI from order statistics
    speedup_vs_fp32: float | None = None
    speedup_low: float | None = None
    speedup_high: float | None = None
    probe_ms: float | None = None  # the speed probe's median beside this variant
    # against the baseline: probe-normalised latency now / then, and its verdict
    baseline_latency_ratio: float | None = None
    baseline_latency_low: float | None = None
    baseline_latency_high: float | None = None
    baseline_latency_verdict: str | None = None
    baseline_map_delta: float | None = None
    # paired bootstrap CI over images of baseline_map_delta: this run's detections against
    # the baseline's stored ones, re-scored on the same images (bench.report.detections)
    baseline_map_low: float | None = None
    baseline_map_high: float | None = None
    baseline_map_verdict: str | None = None
    eval_fingerprint: str | None = None
    calib_fingerprint: str | None = None
    power_w: float | None = None
    energy_mj_per_inference: float | None = None
    power_source: str | None = None
    power_reason: str | None = None
    artifact: str | None = None
    artifact_bytes: int | None = None
    build_s: float | None = None
    calib_s: float | None = None
    eval_images: int | None = None
    eval_ips: float | None = None
    gate: Gate = field(default_factory=Gate)
    extra: Mapping[str, Any] = field(default_factory=dict)

    __hash__ = None  # extra is a mapping: rows are compared, never hashed

    def __post_init__(self) -> None:
        if not isinstance(self.variant, str) or not self.variant:
            raise InputDataError(f"ResultRow: variant = {self.variant!r}, expected a non-empty str")
        owner = f"ResultRow {self.variant!r}"
        self._check_status(owner)
        self._check_texts(owner)
        self._check_numbers(owner)
        for name in ("latency_ms", "e2e_latency_ms"):
            object.__setattr__(self, name, _as_latency(owner, name, getattr(self, name)))
        if not isinstance(self.gate, Gate):
            object.__setattr__(self, "gate", Gate.from_dict(self.gate))
        object.__setattr__(self, "extra", _frozen_extra(owner, self.extra))

    def _check_status(self, owner: str) -> None:
        if self.status not in STATUSES:
            raise InputDataError(f"{owner}: status = {self.status!r}, expected one of {STATUSES}")
        if self.status == "failed" and not self.error:
            raise InputDataError(f"{owner}: a failed row needs an error message")
        if self.status == "skipped" and not self.reason:
            raise InputDataError(f"{owner}: a skipped row needs a reason")

    def _check_texts(self, owner: str) -> None:
        for name in TEXT_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InputDataError(f"{owner}: {name} = {value!r}, expected a str or None")

    def _check_numbers(self, owner: str) -> None:
        ranges = [(n, 0.0, 1.0) for n in MAP_FIELDS] + [(n, -1.0, 1.0) for n in DELTA_FIELDS]
        ranges += [(n, 0.0, math.inf) for n in NON_NEGATIVE_FIELDS]
        ranges += [(n, 1e-300, math.inf) for n in POSITIVE_FIELDS]
        for name, lo, hi in ranges:
            if getattr(self, name) is not None:
                _check_number(owner, name, getattr(self, name), lo, hi)
        for name in ("baseline_latency_verdict", "baseline_map_verdict"):
            value = getattr(self, name)
            if value is not None and value not in VERDICTS:
                raise InputDataError(f"{owner}: {name} = {value!r}, expected one of {VERDICTS}")
        for name in COUNT_FIELDS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 0):
                raise InputDataError(f"{owner}: {name} = {value!r}, expected an int >= 0")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def group(self) -> tuple[str | None, str | None, str | None]:
        """The rows that share a reference FP32 row: same model, backend and device."""
        return (self.model, self.backend, self.device)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; from_dict(row.to_dict()) == row."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (LatencyStats, Gate)):
                value = value.to_dict()
            elif f.name == "extra":
                value = json.loads(json.dumps(dict(value)))
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResultRow:
        """Rebuild a row; unknown keys and missing variant/status raise InputDataError."""
        if not isinstance(data, Mapping):
            raise InputDataError(f"row: expected an object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputDataError(f"row {data.get('variant')!r}: unknown key(s) {unknown}")
        for key in ("variant", "status"):
            if key not in data:
                raise InputDataError(f"row: missing key {key!r}")
        return cls(**dict(data))


def _reference(rows: Iterable[ResultRow]) -> dict[tuple, ResultRow]:
    return {r.group: r for r in rows if r.variant == REFERENCE_VARIANT and r.ok}


def _relative(row: ResultRow, ref: ResultRow | None) -> ResultRow:
    delta = speedup = None
    if row.ok and ref is not None:
        if row.map is not None and ref.map is not None:
            delta = row.map - ref.map
        if row.latency_ms is not None and ref.latency_ms is not None and row.latency_ms.median > 0:
            # fp32 timed right beside this row when the session could (see PAIRED_KEY).
            paired = (row.extra or {}).get(PAIRED_KEY)
            reference = paired if paired else ref.latency_ms.median
            speedup = reference / row.latency_ms.median
    if row.speedup_vs_fp32 is not None and ref is not None:  # the judge's paired figure
        speedup = row.speedup_vs_fp32
    return replace(row, delta_map_vs_fp32=delta, speedup_vs_fp32=speedup)


def derive_relative(rows: Iterable[ResultRow]) -> list[ResultRow]:
    """Fill delta_map_vs_fp32 and speedup_vs_fp32 from the ok fp32 row of the same group.

    The speedup divides the fp32 median the session measured beside the row (its extra's
    PAIRED_KEY), when there is one, else the fp32 row's own median.

    Both are None for rows that are not ok, and for every row of a group whose fp32 row
    is missing or not ok (or lacks the figure).
    """
    rows = list(rows)
    refs = _reference(rows)
    return [_relative(r, refs.get(r.group)) for r in rows]
