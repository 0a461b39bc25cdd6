"""The regression gate: accuracy floors against FP32 in the same run, and tolerances
against the stored baseline. Every verdict line carries its numbers and thresholds.

Default floors follow MLPerf Inference's accuracy targets: FP16 keeps >= 99 % of the FP32
mAP, INT8 post-training quantization >= 95 % (a looser target for PTQ on detectors),
INT8 QAT >= 99 %.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bench.errors import ConfigError
from bench.report.baseline import Comparability, comparability
from bench.report.rows import BASELINE_CI_KEY, REFERENCE_VARIANT, Gate, ResultRow
from bench.report.runs import Run

# Keyed by floor group (VariantSpec.floor); a variant name or a name prefix ending in '-'
# or '*' may override its group's floor.
DEFAULT_FLOORS: Mapping[str, float | None] = MappingProxyType({
    "fp16": 0.99,
    "int8": 0.95,  # int8-max, -entropy, -percentile, -mse and TensorRT's implicit ones
    "qat": 0.99,
})


def _check_fraction(name: str, value: object, hi: float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0 <= value <= hi:
        raise ConfigError(f"gate: {name} = {value!r}, expected a number in [0, {hi}]")


@dataclass(frozen=True)
class GateConfig:
    """Gate thresholds.

    floors: floor group (fp16, int8, qat: each variant's VariantSpec.floor), variant name
    or name prefix (ending in '-' or '*') -> minimum fraction of the FP32 mAP; the exact
    name wins, then the longest prefix, then the group; None disables a floor.
    map_drop_abs: largest allowed absolute mAP drop against the baseline.
    latency_growth: largest allowed relative median-latency growth against the baseline.
    """

    floors: Mapping[str, float | None] = field(default_factory=lambda: DEFAULT_FLOORS)
    map_drop_abs: float = 0.005
    latency_growth: float = 0.10

    def __post_init__(self) -> None:
        if not isinstance(self.floors, Mapping):
            raise ConfigError(f"gate: floors = {self.floors!r}, expected a mapping")
        for key, floor in self.floors.items():
            if floor is not None:
                _check_fraction(f"floors[{key!r}]", floor, 1.0)
        _check_fraction("map_drop_abs", self.map_drop_abs, 1.0)
        _check_fraction("latency_growth", self.latency_growth, math.inf)
        object.__setattr__(self, "floors", MappingProxyType(dict(self.floors)))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> GateConfig:
        """Build from config data; `floors` is merged over the defaults."""
        unknown = sorted(set(data) - {"floors", "map_drop_abs", "latency_growth"})
        if unknown:
            raise ConfigError(f"gate: unknown key(s) {unknown}, expected floors, "
                              "map_drop_abs, latency_growth")
        floors = {**DEFAULT_FLOORS, **dict(data.get("floors", {}))}
        rest = {k: v for k, v in data.items() if k != "floors"}
        return cls(floors=floors, **rest)

    def floor_for(self, variant: str) -> float | None:
        """The accuracy floor of a variant; None for fp32 and for unmatched names."""
        from bench.variants import registry

        if variant == REFERENCE_VARIANT:
            return None
        if variant in self.floors:
            return self.floors[variant]
        prefixes = [k for k in self.floors if k.endswith(("-", "*"))
                    and variant.startswith(k.rstrip("*"))]
        if prefixes:
            return self.floors[max(prefixes, key=len)]
        spec = registry().get(variant)
        return self.floors.get(spec.floor) if spec is not None and spec.floor else None

    def describe(self) -> str:
        floors = ", ".join(f"{_floor_label(k)} ≥ {v:g}×fp32"
                           for k, v in self.floors.items() if v is not None)
        return (f"floors: {floors or 'none'}; baseline: mAP drop ≤ {self.map_drop_abs:g}, "
                f"median latency growth ≤ {_pct(self.latency_growth)}")


def _floor_label(key: str) -> str:
    from bench.variants import FLOOR_GROUPS

    if key in FLOOR_GROUPS and key != "fp16":
        return f"{key} variants"
    return key + "*" if key.endswith("-") else key


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g} %"


@dataclass
class _Verdict:
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def check(self, failed: bool, fail_text: str, pass_text: str) -> None:
        (self.reasons if failed else self.notes).append(fail_text if failed else pass_text)


def _floor_check(v: _Verdict, row: ResultRow, fp32: ResultRow | None, cfg: GateConfig) -> None:
    floor = cfg.floor_for(row.variant)
    if floor is None:
        return
    if fp32 is None or not fp32.ok or fp32.map is None:
        v.warnings.append(f"floor {floor:g} × fp32 NOT CHECKED: no ok fp32 row with mAP "
                          "in this run")
        return
    if row.map is None:
        v.warnings.append(f"floor {floor:g} × fp32 NOT CHECKED: mAP not measured")
        return
    limit = floor * fp32.map
    text = f"floor {floor:g} × fp32 {fp32.map:.4f} = {limit:.4f}"
    ci = _delta_ci(row)
    v.check(row.map < limit, f"mAP {row.map:.4f} < {text}{ci}", f"mAP {row.map:.4f} ≥ {text}{ci}")


def _delta_ci(row: ResultRow) -> str:
    if row.delta_map_low is None or row.delta_map_high is None:
        return ""
    return f" (ΔmAP vs fp32 95 % CI {row.delta_map_low:+.4f}…{row.delta_map_high:+.4f})"


def _baseline_map_check(v: _Verdict, row: ResultRow, base: ResultRow, cfg: GateConfig) -> None:
    if row.map is None or base.map is None:
        v.notes.append("mAP vs baseline not checked: mAP missing in "
                       f"{'this run' if row.map is None else 'the baseline'}")
        return
    if row.baseline_map_verdict == "not comparable":
        v.notes.append(f"mAP not comparable with the baseline: {_evaluation_difference(row, base)}")
        return
    limit = base.map - cfg.map_drop_abs
    text = f"baseline {base.map:.4f} − {cfg.map_drop_abs:g} = {limit:.4f}{_baseline_ci(row, base)}"
    # A tiny epsilon: a drop of exactly the tolerance passes despite float rounding. The
    # CI is shown, never used: the tolerance is the rule.
    failed = row.map < limit - 1e-12
    v.check(failed, f"mAP {row.map:.4f} < {text}", f"mAP {row.map:.4f} ≥ {text}")


def _baseline_ci(row: ResultRow, base: ResultRow) -> str:
    """' (Δ +0.0012, 95 % CI -0.0009…+0.0031)', or the Δ with why there is no CI."""
    delta = row.map - base.map
    if row.baseline_map_low is not None and row.baseline_map_high is not None:
        return (f" (Δ {delta:+.4f}, 95 % CI {row.baseline_map_low:+.4f}…"
                f"{row.baseline_map_high:+.4f})")
    why = (row.extra or {}).get(BASELINE_CI_KEY)
    return f" (Δ {delta:+.4f}; no CI: {why})" if why else f" (Δ {delta:+.4f})"


def _evaluation_difference(row: ResultRow, base: ResultRow) -> str:
    if row.eval_images != base.eval_images:
        return f"{row.eval_images} images here, {base.eval_images} in the baseline"
    if not base.eval_fingerprint:
        return "the baseline records no evaluation fingerprint (written before they existed)"
    return (f"a different evaluation (fingerprint {row.eval_fingerprint} vs "
            f"{base.eval_fingerprint}: images, annotations, size or thresholds differ)")


def _baseline_latency_check(v: _Verdict, row: ResultRow, base: ResultRow, cfg: GateConfig,
                            comparable: Comparability, fail_inconclusive: bool) -> None:
    from bench.report.judge import latency_message

    if not comparable.comparable:
        v.notes.append(f"latency not comparable: {comparable.why}")
        return
    kind = row.baseline_latency_verdict
    if kind is None or row.latency_ms is None or base.latency_ms is None:
        v.notes.append("latency vs baseline not checked: no latency in "
                       f"{'this run' if row.latency_ms is None else 'the baseline'}")
        return
    text = latency_message(row, cfg.latency_growth)
    if kind == "not comparable":
        why = (row.extra or {}).get("latency_not_comparable") or (
            "no probe-normalised blocks on both sides, or the speed probe itself moved "
            "(another machine or power mode)")
        v.notes.append(why if why.startswith("latency not comparable") else
                       f"latency not comparable: {why}")
    elif kind == "regression":
        v.reasons.append(text)
    elif kind == "inconclusive":
        (v.reasons if fail_inconclusive else v.warnings).append(text)
    else:
        v.notes.append(text)


def _baseline_checks(v: _Verdict, row: ResultRow, base: ResultRow | None, cfg: GateConfig,
                     comparable: Comparability, fail_inconclusive: bool) -> None:
    if base is None:
        v.notes.append(f"no baseline row for {row.variant}")
    elif not base.ok:
        v.notes.append(f"baseline row {row.variant} is {base.status}: not compared")
    else:
        _baseline_map_check(v, row, base, cfg)
        _baseline_latency_check(v, row, base, cfg, comparable, fail_inconclusive)


def evaluate_gate(row: ResultRow, fp32_row: ResultRow | None, baseline_row: ResultRow | None,
                  comparable: Comparability, cfg: GateConfig | None = None, *,
                  fail_inconclusive: bool = False) -> Gate:
    """Judge one row: its floor against the same run's fp32 row, then the baseline row.

    A failed row fails; a skipped row is not judged (passed None). Latency is compared with
    the baseline only when `comparable` says so; otherwise a note says why not.
    """
    cfg = cfg or GateConfig()
    if row.status == "skipped":
        return Gate(None, (f"skipped: {row.reason}",))
    if row.status == "failed":
        return Gate(False, (f"failed: {row.error}",))
    verdict = _Verdict()
    _floor_check(verdict, row, fp32_row, cfg)
    _baseline_checks(verdict, row, baseline_row, cfg, comparable, fail_inconclusive)
    return Gate(not verdict.reasons, tuple(verdict.reasons), tuple(verdict.notes),
                tuple(verdict.warnings))


def match_baseline_row(row: ResultRow, baseline_rows: Iterable[ResultRow]) -> ResultRow | None:
    """The baseline row for the same model, variant and backend, preferring the same device."""
    same = [b for b in baseline_rows
            if (b.model, b.variant, b.backend) == (row.model, row.variant, row.backend)]
    on_device = [b for b in same if b.device == row.device]
    return (on_device or same or [None])[0]


def row_comparability(row: ResultRow, base: ResultRow, environment: Mapping[str, Any],
                      baseline_env: Mapping[str, Any]) -> Comparability:
    """Latency comparability of one row with its baseline row (rows, then environments)."""
    if row.device != base.device:
        return Comparability(False, f"device differs: {row.device!r} vs baseline {base.device!r}")
    return comparability(baseline_env, environment, backend=row.backend)


def gate_rows(rows: Iterable[ResultRow], environment: Mapping[str, Any], baseline: Run | None,
              cfg: GateConfig | None = None, *, fail_inconclusive: bool = False
              ) -> list[ResultRow]:
    """The rows judged as the suite judges them (bench.report.judge): one gate path."""
    from bench.report.judge import Judge

    judge = Judge(cfg or GateConfig(), baseline, environment, fail_inconclusive=fail_inconclusive)
    return judge.judge_all(rows)


def gate_passed(rows: Iterable[ResultRow]) -> bool:
    """True when no row's gate failed (skipped and unjudged rows do not fail a run)."""
    return all(r.gate.passed is not False for r in rows)
