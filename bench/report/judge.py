"""The judge: figures relative to fp32, the comparison with the baseline, and the gate.

One path for the suite and for `bench compare`. A row arrives with its own figures (see
bench.report.assemble); the judge adds

- against fp32 in the same run: ΔmAP (with the paired bootstrap CI the session computed)
  and the speedup (median of paired block ratios, with its CI; the fp32 row's median when
  the row has no paired blocks, e.g. an old report);
- against the baseline: mAP only between identical evaluations (same fingerprint), else
  "not comparable", with a paired bootstrap CI over images when the judge has a source of
  them (baseline_ci: the suite's re-scores the baseline's stored detections,
  bench.report.detections) and the reason where it has none, shown and never used to
  pass or fail; latency as a three-way verdict on probe-normalised blocks
  (bench.measure.stats.compare_to_baseline), "not comparable" when the probe moved;
- the gate: floors are hard thresholds; a regression fails; an inconclusive latency
  verdict fails only when asked (fail_inconclusive); a floor that could not be checked
  (no fp32 in the run) is a visible warning, never a silent pass.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError, one_line
from bench.measure.stats import compare_to_baseline, normalised_latency, paired_ratio
from bench.report.gate import GateConfig, evaluate_gate, match_baseline_row, row_comparability
from bench.report.rows import BASELINE_CI_KEY, NOT_COMPARABLE, REFERENCE_VARIANT, ResultRow
from bench.report.runs import Run

if TYPE_CHECKING:
    import numpy as np

    from bench.config import BenchConfig
    from bench.measure.stats import Interval

BLOCKS_KEY = "blocks"  # extra: {"variant_ms": [...], "reference_ms": [...], "probe_ms": [...]}
# extra: which probe normalised the row (bench.measure.probe.row_probe_identity)
PROBE_KEY = "probe"
LATENCY_WHY_KEY = "latency_not_comparable"  # extra: why latency could not be compared
# (row, its baseline row, the row's per-image matches and its results array, or None) ->
# the CI of row.map − base.map, or why there is none (bench.report.detections)
BaselineCI = Callable[[ResultRow, ResultRow, "object | None", "np.ndarray | None"],
                      "Interval | str"]
NOT_HERE = "only the suite's run re-scores the baseline's detections"


@dataclass(frozen=True)
class BaselineInfo:
    """Which baseline a run was judged against, for the report's header."""

    run_id: str | None
    commit: str | None
    created: str | None
    host: str | None
    path: str

    @classmethod
    def of(cls, run: Run, path: str) -> BaselineInfo:
        env = run.environment
        host = env.get("host", {}).get("name") if isinstance(env.get("host"), Mapping) else None
        return cls(run.promoted_from or run.run_id, env.get("commit"), run.created, host, path)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def gate_config(cfg: BenchConfig) -> GateConfig:
    """The gate's thresholds from the run's config (floors by floor group)."""
    return GateConfig.from_mapping({
        "floors": {"fp16": cfg.floor_fp16, "int8": cfg.floor_int8, "qat": cfg.floor_qat},
        "map_drop_abs": cfg.map_tolerance, "latency_growth": cfg.latency_tolerance})


class Judge:
    """Judges rows one at a time (as the suite produces them) or a whole run."""

    @classmethod
    def from_config(cls, cfg: BenchConfig, environment: Mapping[str, Any],
                    rescore: Callable[[np.ndarray], Any] | None = None) -> Judge:
        """The suite's judge: the configured thresholds and the configured baseline.
        rescore (results array -> MatchTable on this run's evaluation, RunContext.score)
        gives ΔmAP against the baseline its CI from the baseline's stored detections."""
        from bench.report.baseline import load_baseline
        from bench.report.detections import BaselineDetections

        baseline = load_baseline(Path(cfg.baseline))
        source = (BaselineDetections(baseline, rescore)
                  if baseline is not None and rescore is not None else None)
        judge = cls(gate_config(cfg), baseline, environment,
                    fail_inconclusive=cfg.fail_inconclusive, baseline_ci=source)
        judge.baseline_path = str(cfg.baseline)
        return judge

    def baseline_info(self) -> BaselineInfo | None:
        if self.baseline is None:
            return None
        return BaselineInfo.of(self.baseline, getattr(self, "baseline_path", ""))

    def __init__(self, gate: GateConfig, baseline: Run | None = None,
                 environment: Mapping[str, Any] | None = None, *,
                 fail_inconclusive: bool = False, baseline_ci: BaselineCI | None = None):
        self.gate, self.baseline = gate, baseline
        self.environment = dict(environment or {})
        self.fail_inconclusive = fail_inconclusive
        self.baseline_ci = baseline_ci

    def judge(self, row: ResultRow, fp32: ResultRow | None, matches: object | None = None,
              results: np.ndarray | None = None) -> ResultRow:
        """row judged against fp32 and the baseline; matches (its per-image matches,
        bench.eval.bootstrap.MatchTable) and results (the results array they came from)
        are what the CI against the baseline pairs."""
        row = relative_to_fp32(row, fp32)
        base = match_baseline_row(row, self.baseline.rows) if self.baseline else None
        row = self._against_baseline(row, base, matches, results)
        gate = evaluate_gate(row, fp32, base, self._comparability(row, base), self.gate,
                             fail_inconclusive=self.fail_inconclusive)
        return dataclasses.replace(row, gate=gate)

    def judge_all(self, rows: Iterable[ResultRow]) -> list[ResultRow]:
        rows = list(rows)
        refs = {r.group: r for r in rows if r.variant == REFERENCE_VARIANT and r.ok}
        return [self.judge(r, refs.get(r.group)) for r in rows]

    def _comparability(self, row: ResultRow, base: ResultRow | None) -> Any:
        from bench.report.baseline import Comparability

        if base is None or self.baseline is None:
            return Comparability(False, "no baseline")
        return row_comparability(row, base, self.environment, self.baseline.environment)

    def _against_baseline(self, row: ResultRow, base: ResultRow | None,
                          matches: object | None = None,
                          results: np.ndarray | None = None) -> ResultRow:
        row = _without_baseline_ci(row)  # a stored row's was against another judgement
        if base is None or not base.ok or not row.ok:
            return row
        changes: dict[str, Any] = map_against_baseline(row, base)
        changes.update(self._map_ci(row, base, changes, matches, results))
        comparable = self._comparability(row, base)
        if comparable.comparable:
            latency = latency_against_baseline(row, base, self.gate.latency_growth)
            if "extra" in latency and "extra" in changes:  # both add to the row's extra
                latency["extra"] = {**changes["extra"], **latency["extra"]}
            changes.update(latency)
        else:
            changes["baseline_latency_verdict"] = "not comparable"
        return dataclasses.replace(row, **changes)

    def _map_ci(self, row: ResultRow, base: ResultRow, changes: Mapping[str, Any],
                matches: object | None, results: np.ndarray | None) -> dict[str, Any]:
        """baseline_map_low/high, or extra[BASELINE_CI_KEY] saying why there are none."""
        if "baseline_map_delta" not in changes:
            return {}  # no mAP on one side: the gate says so
        if changes.get("baseline_map_verdict") == "not comparable":
            found: Interval | str = NOT_COMPARABLE
        elif self.baseline_ci is None:
            found = NOT_HERE
        else:
            try:
                found = self.baseline_ci(row, base, matches, results)
            except Exception as exc:  # the CI is shown, never judged: it must not fail a row
                found = f"could not be computed ({one_line(exc)})"
        if not isinstance(found, str) and not math.isfinite(found.low + found.high):
            found = "no resample had a ground truth"
        if isinstance(found, str):
            return {"extra": {**row.extra, BASELINE_CI_KEY: found}}
        return {"baseline_map_low": found.low, "baseline_map_high": found.high}


def _without_baseline_ci(row: ResultRow) -> ResultRow:
    """The row without what an earlier judgement against a baseline left in it."""
    keys = (BASELINE_CI_KEY, LATENCY_WHY_KEY)
    stale = (row.baseline_map_low, row.baseline_map_high) != (None, None)
    if not stale and not any(k in (row.extra or {}) for k in keys):
        return row
    extra = {k: v for k, v in (row.extra or {}).items() if k not in keys}
    return dataclasses.replace(row, baseline_map_low=None, baseline_map_high=None, extra=extra)


def relative_to_fp32(row: ResultRow, fp32: ResultRow | None) -> ResultRow:
    """ΔmAP and speedup against the same run's fp32 row (None when either is missing)."""
    if not row.ok or fp32 is None or not fp32.ok or row.variant == REFERENCE_VARIANT:
        return dataclasses.replace(row, delta_map_vs_fp32=None, speedup_vs_fp32=None,
                                   speedup_low=None, speedup_high=None)
    delta = row.map - fp32.map if row.map is not None and fp32.map is not None else None
    changes: dict[str, Any] = {"delta_map_vs_fp32": delta}
    if delta is None:
        changes.update(delta_map_low=None, delta_map_high=None)
    blocks = _blocks(row)
    if blocks and blocks.get("reference_ms"):
        speedup = paired_ratio(blocks["variant_ms"], blocks["reference_ms"],
                               per_reference=_per_reference(blocks))
        changes.update(speedup_vs_fp32=speedup.estimate, speedup_low=speedup.low,
                       speedup_high=speedup.high)
    elif row.latency_ms is not None and fp32.latency_ms is not None:
        # no paired blocks (a report from before they existed): the two medians shown
        changes.update(speedup_vs_fp32=fp32.latency_ms.median / row.latency_ms.median,
                       speedup_low=None, speedup_high=None)
    return dataclasses.replace(row, **changes)


def map_against_baseline(row: ResultRow, base: ResultRow) -> dict[str, Any]:
    if row.map is None or base.map is None:
        return {}
    if not row.eval_fingerprint or row.eval_fingerprint != base.eval_fingerprint:
        return {"baseline_map_delta": row.map - base.map,
                "baseline_map_verdict": "not comparable"}
    return {"baseline_map_delta": row.map - base.map, "baseline_map_verdict": None}


def latency_against_baseline(row: ResultRow, base: ResultRow,
                             tolerance: float) -> dict[str, Any]:
    now, then = _normalised(row), _normalised(base)
    why = None
    if now is None or then is None:
        why = f"no probe-normalised blocks in {'this run' if now is None else 'the baseline'}"
    elif _probe_of(row) != _probe_of(base):
        why = (f"normalised by another speed probe ({_probe_name(row)} here, "
               f"{_probe_name(base)} in the baseline)")
    if why is not None:
        return {"baseline_latency_verdict": "not comparable",
                "extra": {**(row.extra or {}), LATENCY_WHY_KEY: why}}
    verdict = compare_to_baseline(now, then, tolerance=tolerance, probe_now=_probe_speed(row),
                                  probe_baseline=_probe_speed(base))
    changes: dict[str, Any] = {"baseline_latency_verdict": verdict.kind}
    if verdict.ratio is not None:
        changes.update(baseline_latency_ratio=verdict.ratio.estimate,
                       baseline_latency_low=verdict.ratio.low,
                       baseline_latency_high=verdict.ratio.high)
    else:
        changes["extra"] = {**(row.extra or {}), LATENCY_WHY_KEY: verdict.message}
    return changes


def _probe_name(row: ResultRow) -> str:
    probe = _probe_of(row)
    if probe is None:
        return "the run's FP32 probe (not recorded per row)"
    return f"the {probe.get('kind')} probe {str(probe.get('sha256', ''))[:12]}"


def latency_message(row: ResultRow, tolerance: float) -> str | None:
    """The verdict in words, as the gate and the PR comment print it."""
    kind = row.baseline_latency_verdict
    if kind is None:
        return None
    if row.baseline_latency_ratio is None:
        return "latency not comparable with the baseline"
    pct = _signed_pct(row.baseline_latency_ratio)
    ci = f"CI {_signed_pct(row.baseline_latency_low)}…{_signed_pct(row.baseline_latency_high)} %"
    return (f"median latency {pct} % vs baseline ({ci}, tolerance +{tolerance * 100:g} %): "
            f"{kind}")


def _signed_pct(ratio: float | None) -> str:
    if ratio is None:
        return "?"
    pct = (ratio - 1.0) * 100.0
    return f"{pct:+.0f}" if abs(pct) >= 1 else f"{pct:+.1f}"


def _blocks(row: ResultRow) -> Mapping[str, Sequence[float]] | None:
    blocks = (row.extra or {}).get(BLOCKS_KEY)
    return blocks if isinstance(blocks, Mapping) and blocks.get("variant_ms") else None


def _per_reference(blocks: Mapping[str, Any]) -> int:
    """Variant blocks per reference block (reports from before it was recorded: 1)."""
    value = blocks.get("per_reference", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def _probe_of(row: ResultRow) -> Mapping[str, Any] | None:
    """The identity of the probe that normalised the row; a row from before rows recorded
    it says nothing (None), which matches only another such row: its probe was the run's
    FP32 one, which the environment check compares."""
    probe = (row.extra or {}).get(PROBE_KEY)
    return probe if isinstance(probe, Mapping) else None


def _probe_speed(row: ResultRow) -> float | None:
    """The probe's lower-quartile block median: what says whether the machine itself changed
    between two runs. Not its median: on a machine that switches between a fast and a slow
    mode (the 2-core VM: 4.3 against 6.5 ms for the probe's detector), the median moves by
    the whole jump with the share of blocks that fell in the slow mode, the fast mode's
    speed does not."""
    import numpy as np

    blocks = _blocks(row)
    if blocks and blocks.get("probe_ms"):
        return float(np.quantile(np.asarray(blocks["probe_ms"], dtype=float), 0.25))
    return row.probe_ms


def _normalised(row: ResultRow) -> np.ndarray | None:
    blocks = _blocks(row)
    if not blocks or not blocks.get("probe_ms"):
        return None
    try:
        return normalised_latency(blocks["variant_ms"], blocks["probe_ms"],
                                  _per_reference(blocks))
    except BenchError:
        return None

