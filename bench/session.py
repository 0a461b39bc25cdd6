"""One benchmark session: for each variant, build -> measure -> judge; the report at the end.

A small coordinator over the run context (inputs, builders), the variant's engine, the
measurer (interleaved latency, power) and the judge (relative figures, baseline, gate).
The pytest suite drives it, but nothing here knows pytest: the latency pass takes a timer
(see bench.measure.measurer.Timer), which the suite backs with pytest-benchmark.
A variant that fails becomes a failed row and the others go on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import BenchConfig
from bench.errors import EngineUnavailable, ModelError, one_line
from bench.measure.measurer import Measurer, Timer, plain_timer
from bench.measure.references import References
from bench.report.assemble import (
    Identity,
    Provenance,
    failed_row,
    ok_row,
    skipped_row,
    variant_extra,
    with_delta_ci,
    with_start_delta,
)
from bench.report.judge import PROBE_KEY
from bench.run import RunContext
from bench.variants import REFERENCE, report_order, spec_of

if TYPE_CHECKING:
    import numpy as np

    from bench.cache import Artifact
    from bench.diagnose.session import Diagnoser
    from bench.engines.base import Engine
    from bench.eval.accuracy import AccuracyResult
    from bench.report.judge import Judge
    from bench.report.rows import ResultRow

REFERENCE_ONLY = "measured as the reference of the floors (not selected in this run)"


@dataclass
class Prepared:
    """A variant after build and accuracy pass, holding its active engine."""

    variant: str
    status: str  # ok | failed | skipped
    reason: str | None = None
    artifact: Artifact | None = None
    engine: Engine | None = None
    accuracy: AccuracyResult | None = None
    build_s: float = 0.0
    calib_s: float | None = None
    spent_s: dict[str, float] | None = None  # this run's seconds: build, engine open, diagnosis

    def close(self) -> None:
        if self.engine is not None:
            self.engine.deactivate()
            self.engine = None


class BenchSession:
    """Holds the run's context and rows, and writes the report at the end."""

    def __init__(self, cfg: BenchConfig):
        self.cfg = cfg
        self.run = RunContext(cfg)
        self.run.check_before_work()
        self.rows: dict[str, ResultRow] = {}
        self.refs = References(self.run)
        self.measurer = Measurer(rounds=cfg.bench_rounds, blocks=cfg.latency_blocks,
                                 warmup=cfg.bench_warmup, per_reference=cfg.reference_every)
        self._judge: Judge | None = None
        self._environment: dict[str, Any] | None = None
        self._fp32_matches: object | None = None  # fp32's per-image matches (bootstrap)
        self._ptq_matches: dict[str, object] = {}  # PTQ variant -> matches: int8-qat's start
        # each ok row's scored detections, held until finish() writes detections.npz
        self._detections: dict[str, np.ndarray] = {}
        self.diagnoser: Diagnoser | None = None  # --diagnose (bench/diagnose/session.py)

    def prepare(self, variant: str) -> Prepared:
        """Build the artifact, open its engine and run the accuracy pass."""
        from bench.engines.factory import skip_reason

        reason = skip_reason(self.cfg, spec_of(variant))
        try:
            return self._skipped(variant, reason) if reason else self._prepare(variant)
        except EngineUnavailable as exc:
            return self._skipped(variant, str(exc))
        except Exception as exc:  # one failing variant must not stop the others
            return self._failed(variant, exc)

    def _prepare(self, variant: str) -> Prepared:
        from bench.build import build_variant

        context = self.run.build_context()
        collected_before = context.calibration_seconds
        began = time.perf_counter()
        artifact = build_variant(variant, context)
        built = time.perf_counter()
        calib_s = context.calibration_seconds if collected_before is None else None
        build_s = max(0.0, artifact.build_s - (calib_s or 0.0))
        engine = self.refs.open(variant, artifact.path)
        spent = {"build": built - began - (calib_s or 0.0),
                 "engine_open": time.perf_counter() - built}
        prepared = Prepared(variant, "ok", artifact=artifact, engine=engine, build_s=build_s,
                            calib_s=calib_s, spent_s=spent)
        try:
            prepared.accuracy = self.run.accuracy(engine, f"{variant} accuracy")
            if prepared.accuracy.n_detections == 0:
                raise ModelError(f"{variant}: no detections at all on {prepared.accuracy.n_images}"
                                 f" evaluation images at conf {self.cfg.conf:g}; expected some "
                                 "(a model that detects nothing is a failure, not a mAP of 0)")
        except BaseException:
            prepared.close()
            raise
        return prepared

    def measure(self, prepared: Prepared, timer: Timer | None = None, *,
                note: str | None = None) -> ResultRow:
        """Latency (interleaved with fp32 and the probe), power, end to end; the judged row."""
        try:
            engine = prepared.engine
            measurement = self.measurer.measure(
                engine, self.run.staged_batch(), reference=self.refs.anchor(prepared.variant),
                probe=self.refs.probe(prepared.variant), sampler=self.refs.sampler(),
                timer=timer or plain_timer,
                end_to_end=self.run.end_to_end(engine))
            extra = variant_extra(engine.extra_info(), prepared.artifact, prepared.accuracy,
                                  self.run.inputs().imgsz)
            extra.update(self.refs.notes(), **({"run_as": note} if note else {}))
            probe = self.refs.probe_identity(prepared.variant)
            if probe is not None:
                extra[PROBE_KEY] = probe
            began = time.perf_counter()
            extra.update(self._diagnosis(prepared))
            if self.cfg.diagnose and prepared.spent_s is not None:
                prepared.spent_s["diagnosis"] = time.perf_counter() - began
            row = ok_row(prepared.variant, self._identity(), prepared.artifact,
                         prepared.accuracy, measurement, self._provenance(),
                         build_s=prepared.build_s, calib_s=prepared.calib_s, extra=extra,
                         spent_s=prepared.spent_s)
            accuracy = prepared.accuracy
            row = self._store(self._with_delta_ci(row, accuracy.matches), accuracy)
            self._keep_detections(row, accuracy)
            return row
        except Exception as exc:
            self._failed(prepared.variant, exc)
            return self.rows[prepared.variant]
        finally:
            prepared.close()

    def _diagnosis(self, prepared: Prepared) -> dict[str, Any]:
        """--diagnose: an INT8 row's profile and per-tensor error (bench.diagnose.session);
        a TensorRT row profiles its own engine, still active here."""
        from bench.diagnose.session import diagnose_row, diagnoser_for

        if not self.cfg.diagnose:
            return {}
        self.diagnoser = self.diagnoser or diagnoser_for(self.run)
        return diagnose_row(self.diagnoser, prepared.variant, prepared.artifact, self.run,
                            engine=prepared.engine)

    # -- rows -----------------------------------------------------------------------------
    def _identity(self) -> Identity:
        inputs = self.run.resolved
        label = inputs.model_label if inputs else str(self.cfg.model or "embedded default")
        return Identity(label, self.cfg.backend, self.cfg.device)

    def _provenance(self) -> Provenance:
        return Provenance(self.run.evaluation_fingerprint().digest,
                          self.run.calibration_fingerprint().digest)

    def _skipped(self, variant: str, reason: str) -> Prepared:
        self._store(skipped_row(variant, self._identity(), reason))
        return Prepared(variant, "skipped", reason=reason)

    def _failed(self, variant: str, exc: BaseException) -> Prepared:
        message = one_line(exc)
        self._store(failed_row(variant, self._identity(), message))
        return Prepared(variant, "failed", reason=message)

    def _store(self, row: ResultRow, accuracy: AccuracyResult | None = None) -> ResultRow:
        spec = spec_of(row.variant)
        if row.ok and spec.builder == "ptq" and row.map is not None:
            self.run.build_context().ptq_maps[spec.calibrator] = row.map
        fp32 = self.rows.get(REFERENCE) if row.variant != REFERENCE else None
        scored = (accuracy.matches, accuracy.results) if accuracy is not None else (None, None)
        self.rows[row.variant] = judged = self.judge().judge(row, fp32, *scored)
        return judged

    def _keep_detections(self, row: ResultRow, accuracy: AccuracyResult) -> None:
        """An ok row's scored detections, for the run folder (the same array, no copy)."""
        if row.ok and accuracy.results is not None:
            self._detections[row.variant] = accuracy.results

    def _with_delta_ci(self, row: ResultRow, matches: object | None) -> ResultRow:
        if row.variant == REFERENCE:
            self._fp32_matches = matches
            return row
        if REFERENCE not in self.rows:
            self._reference_row()
        began = time.perf_counter()
        row = with_delta_ci(row, matches, self._fp32_matches)
        spec = spec_of(row.variant)
        if spec.builder == "ptq" and matches is not None:
            self._ptq_matches[row.variant] = matches
        if spec.builder == "qat":
            start = f"int8-{(row.extra.get('artifact_meta') or {}).get('init')}"
            row = with_start_delta(row, matches, self._ptq_matches.get(start), start)
        phases = {**(row.extra.get("phases_s") or {}),
                  "delta_map_ci": round(time.perf_counter() - began, 3)}
        return replace(row, extra={**row.extra, "phases_s": phases})

    def _reference_row(self) -> ResultRow | None:
        """fp32 measured as the reference of the floors when the run did not plan it (or
        pytest deselected it), so that no floor passes unchecked; its row says so."""
        prepared = self.prepare(REFERENCE)
        if prepared.status != "ok":
            return self.rows.get(REFERENCE)
        return self.measure(prepared, note=REFERENCE_ONLY)

    def judge(self) -> Judge:
        from bench.report.judge import Judge

        if self._judge is None:
            self._judge = Judge.from_config(self.cfg, self.environment(),
                                            rescore=self.run.score)
        return self._judge

    # -- the end --------------------------------------------------------------------------
    def environment(self) -> dict[str, Any]:
        from bench.environment import collect_environment

        if self._environment is not None:
            return self._environment
        environment = collect_environment(self.cfg, self.run.resolved, self.refs.runtime)
        if self.run.resolved is not None and self.refs.runtime:  # complete: kept
            self._environment = environment
        return environment

    def close(self) -> None:
        self.refs.close()

    def nothing_measured(self) -> str | None:
        """Why no variant produced a figure, or None when at least one did."""
        if any(r.ok for r in self.rows.values()):
            return None
        reasons = sorted({r.reason or r.error or "" for r in self.rows.values()})
        return "nothing measured: every variant skipped or failed — " + "; ".join(reasons)

    def finish(self, benchmark_json: dict | None, complete: bool,
               run_dir: Path | None = None) -> Path:
        """Write results/runs/<id>/ (or run_dir, chosen ahead) and point results/latest at it."""
        from bench.report.writer import new_run_id, write_run

        self.close()
        ordered = [self.rows[v] for v in report_order(list(self.rows))]
        run_dir = run_dir or Path(self.cfg.results_dir) / "runs" / new_run_id()
        judge = self.judge()
        detections = {v: self._detections[v] for v in report_order(list(self._detections))
                      if v in self.rows and self.rows[v].ok}
        written = write_run(run_dir, self.environment(), ordered, benchmark_json, complete,
                            results_dir=Path(self.cfg.results_dir),
                            thresholds=judge.gate.describe(), baseline=judge.baseline,
                            baseline_source=str(self.cfg.baseline), diagnosis=self.diagnoser,
                            detections=detections)
        self._detections.clear()  # written: the arrays are not needed any more
        return written


def benchmark_extra_info(row: ResultRow) -> dict[str, Any]:
    """The figures pytest-benchmark's JSON carries beside its own timings."""
    info: dict[str, Any] = {"variant": row.variant, "status": row.status}
    if row.latency_ms is not None:
        info.update({f"latency_{k}_ms": v for k, v in row.latency_ms.to_dict().items()})
    for name in ("map", "map50", "delta_map_vs_fp32", "throughput_ips", "speedup_vs_fp32",
                 "speedup_low", "speedup_high", "power_w", "energy_mj_per_inference",
                 "power_source", "power_reason", "baseline_latency_verdict"):
        info[name] = getattr(row, name)
    if row.e2e_latency_ms is not None:
        info["e2e_latency_median_ms"] = row.e2e_latency_ms.median
    return info

