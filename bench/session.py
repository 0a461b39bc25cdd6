"""One benchmark session: every variant built, evaluated, timed, gated and reported.

The pytest suite drives it (one test per variant), but nothing here knows pytest: the
latency pass takes a `timer` callable, which the suite backs with pytest-benchmark.
A variant that fails becomes a failed row and the others go on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.cache import Artifact, ArtifactCache
from bench.config import BenchConfig
from bench.engines.base import Engine
from bench.engines.factory import make_engine, skip_reason
from bench.environment import collect_environment
from bench.errors import BenchError, EngineUnavailable
from bench.eval.accuracy import LetterboxCache
from bench.inputs import RunInputs, resolve_inputs
from bench.latency import summarize, time_calls
from bench.power.base import PowerReading
from bench.report.rows import PAIRED_KEY, REFERENCE_VARIANT, LatencyStats
from bench.variants import BuildContext, build_variant, spec_of

# The latency pass hands its callable to a timer that returns per-call seconds.
Timer = Callable[[Callable[[], object], int], Sequence[float]]

E2E_ROUNDS = 20


@dataclass
class Prepared:
    """A variant after build and accuracy pass, holding its active engine."""

    variant: str
    status: str  # ok | failed | skipped
    reason: str | None = None
    artifact: Artifact | None = None
    engine: Engine | None = None
    accuracy: Any = None  # bench.eval.accuracy.AccuracyResult
    build_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.deactivate()
            self.engine = None


class BenchSession:
    """Holds the run's inputs, its rows, and writes the report at the end."""

    def __init__(self, cfg: BenchConfig):
        self.cfg = cfg
        self.rows: dict[str, Any] = {}  # variant -> bench.report.rows.ResultRow
        self._inputs: RunInputs | None = None
        self._inputs_error: BenchError | None = None
        self._context: BuildContext | None = None
        self._baseline: Any = None
        self._power_source: Any = None  # the source name auto picked, or its NoneSampler
        self._letterboxed = LetterboxCache()  # images decoded and resized once per session
        self._anchor: Engine | None = None  # fp32, timed beside every other variant
        self._anchor_error: str | None = None

    # -- inputs ---------------------------------------------------------------------------
    def inputs(self) -> RunInputs:
        """Resolved once; a bad model or dataset fails every variant with the same reason."""
        if self._inputs_error is not None:
            raise self._inputs_error
        if self._inputs is None:
            try:
                self._inputs = resolve_inputs(self.cfg)
            except BenchError as exc:
                self._inputs_error = exc
                raise
        return self._inputs

    def context(self) -> BuildContext:
        if self._context is None:
            inputs = self.inputs()
            count = self.cfg.calib_count
            self._context = BuildContext(
                cfg=self.cfg, model_path=inputs.model_path,
                calib_batches=lambda: inputs.calib_batches(count),
                qat_batches=lambda: inputs.calib_batches(self.cfg.qat_images, batch=8),
                calib_id=f"{inputs.calib_label}|{count}|{inputs.imgsz}",
                cache=ArtifactCache(Path(self.cfg.cache_dir) / "artifacts"))
        return self._context

    # -- per variant ----------------------------------------------------------------------
    def prepare(self, variant: str) -> Prepared:
        """Build the artifact, open its engine and run the accuracy pass."""
        reason = skip_reason(self.cfg, spec_of(variant))
        if reason:
            return self._skipped(variant, reason)
        try:
            return self._prepare(variant)
        except EngineUnavailable as exc:
            return self._skipped(variant, str(exc))
        except Exception as exc:  # one failing variant must not stop the others
            return self._failed(variant, exc)

    def _prepare(self, variant: str) -> Prepared:
        from bench.eval.accuracy import run_accuracy

        inputs = self.inputs()
        context = self.context()
        artifact = build_variant(variant, context)
        engine = make_engine(self.cfg, spec_of(variant), artifact.path,
                             calibration=context.calib_batches,
                             calibration_id=context.calib_id).activate()
        prepared = Prepared(variant, "ok", artifact=artifact, engine=engine,
                            build_s=artifact.build_s)
        try:
            prepared.accuracy = run_accuracy(
                engine.infer_streams(self.cfg.eval_streams), inputs.dataset,
                imgsz=inputs.imgsz, batch=self.cfg.eval_batch,
                conf=self.cfg.conf, iou=self.cfg.iou, max_det=self.cfg.max_det,
                eval_count=self.cfg.eval_count, progress=self.cfg.progress,
                fixed_batch=inputs.fixed_batch, cache=self._letterboxed,
                label=f"{variant} accuracy")
        except BaseException:
            prepared.close()
            raise
        return prepared

    def measure(self, prepared: Prepared, timer: Timer | None = None) -> Any:
        """Latency (with power sampled alongside) and the end-to-end figure; returns the row."""
        try:
            return self._measure(prepared, timer or time_calls)
        except Exception as exc:
            self._failed(prepared.variant, exc)
            return self.rows[prepared.variant]
        finally:
            prepared.close()

    def _measure(self, prepared: Prepared, timer: Timer) -> Any:
        batch = self.staged_batch()
        engine = prepared.engine
        paired = prepared.variant != REFERENCE_VARIANT and REFERENCE_VARIANT in self.cfg.variants
        anchor = self._anchor_seconds(batch, self.cfg.bench_rounds // 2) if paired else []
        for _ in range(self.cfg.bench_warmup):
            engine.infer(batch)
        if hasattr(engine, "reset_timings"):  # GPU event times of the latency window only
            engine.reset_timings()
        sampler = self._sampler()
        sampler.start()
        try:
            seconds = list(timer(lambda: engine.infer(batch), self.cfg.bench_rounds))
        finally:
            power = sampler.stop()
        if paired:
            anchor += self._anchor_seconds(batch, self.cfg.bench_rounds - len(anchor))
        latency = summarize(seconds)
        e2e = summarize(self._end_to_end(engine))
        return self._record_ok(prepared, latency, e2e, power, len(seconds), len(batch),
                               anchor=anchor)

    def _anchor_seconds(self, batch: np.ndarray, rounds: int) -> list[float]:
        """fp32 timed again right beside a variant, so that its speedup compares windows
        seconds apart: on a shared machine speed drifts more between variants than INT8
        gains (interleaved rounds of one unchanged pair ranged 0.92-1.96x). [] when no
        fp32 engine can open; the speedup then falls back to the fp32 row."""
        if self._anchor_error is not None or rounds < 1:
            return []
        try:
            if self._anchor is None:
                context = self.context()
                fp32 = build_variant(REFERENCE_VARIANT, context).path
                self._anchor = make_engine(
                    self.cfg, spec_of(REFERENCE_VARIANT), fp32,
                    calibration=context.calib_batches, calibration_id=context.calib_id,
                ).activate()
                for _ in range(self.cfg.bench_warmup):
                    self._anchor.infer(batch)
            return list(time_calls(lambda: self._anchor.infer(batch), rounds))
        except Exception as exc:  # the variant's own figures stand; its speedup is unpaired
            self._anchor_error = one_line(exc)
            return []

    def _sampler(self) -> Any:
        """A fresh sampler per window; "auto" probes the sources once per session."""
        from bench.power.auto import make_sampler

        interval = self.cfg.power_interval_s
        if self._power_source is None:
            first = make_sampler(self.cfg.power, interval_s=interval)
            self._power_source = first if first.source == "none" else first.source
            return first
        if isinstance(self._power_source, str):
            return make_sampler(self._power_source, interval_s=interval)
        return self._power_source

    def staged_batch(self) -> np.ndarray:
        """The first evaluation image, letterboxed, repeated to the latency batch size."""
        from bench.data.letterbox import letterbox

        inputs = self.inputs()
        image = inputs.dataset.load_rgb(inputs.dataset.image_ids[0])
        chw = letterbox(image, inputs.imgsz)[0]
        size = inputs.fixed_batch or self.cfg.batch
        return np.ascontiguousarray(np.repeat(chw[None], size, axis=0))

    def _end_to_end(self, engine: Engine) -> list[float]:
        """Pre-processing (letterbox of a decoded image) + infer + decode and NMS."""
        from bench.data.letterbox import letterbox
        from bench.eval.decode import decode_outputs

        inputs = self.inputs()
        image = inputs.dataset.load_rgb(inputs.dataset.image_ids[0])

        def once() -> object:
            chw = letterbox(image, inputs.imgsz)[0][None]
            return decode_outputs(engine.infer(chw), conf=self.cfg.conf, iou=self.cfg.iou,
                                  max_det=self.cfg.max_det)

        return time_calls(once, min(E2E_ROUNDS, self.cfg.bench_rounds))

    # -- rows -----------------------------------------------------------------------------
    def _record_ok(self, prepared: Prepared, latency: LatencyStats, e2e: LatencyStats,
                   power: PowerReading, calls: int, per_call: int,
                   anchor: Sequence[float] = ()) -> Any:
        from bench.report.rows import ResultRow

        inputs, acc = self.inputs(), prepared.accuracy
        metrics = acc.metrics
        row = ResultRow(
            variant=prepared.variant, status="ok", **self._identity(),
            map=metrics["map"], map50=metrics["map50"], map75=metrics["map75"],
            map_small=metrics.get("map_small"), map_medium=metrics.get("map_medium"),
            map_large=metrics.get("map_large"),
            latency_ms=latency, e2e_latency_ms=e2e,
            throughput_ips=1000.0 * per_call / latency.mean,
            power_w=power.mean_w, power_source=power.source, power_reason=power.reason,
            energy_mj_per_inference=power.energy_per_inference_mj(calls * per_call),
            artifact=str(prepared.artifact.path), artifact_bytes=prepared.artifact.bytes,
            build_s=prepared.build_s, eval_images=acc.n_images, eval_ips=acc.images_per_s,
            extra=self._extra(prepared, power, inputs, calls, anchor))
        return self._store(row)

    def _extra(self, prepared: Prepared, power: PowerReading, inputs: RunInputs,
               calls: int, anchor: Sequence[float] = ()) -> dict[str, Any]:
        engine_info = prepared.engine.extra_info() if prepared.engine else {}
        paired: dict[str, Any] = {}
        if anchor:
            paired = {PAIRED_KEY: summarize(anchor).median, "fp32_paired_rounds": len(anchor)}
        elif self._anchor_error is not None and prepared.variant != REFERENCE_VARIANT:
            paired = {"fp32_paired_error": self._anchor_error}
        return {**paired, "engine": engine_info, "artifact_cached": prepared.artifact.cached,
                "artifact_meta": {k: v for k, v in prepared.artifact.meta.items() if k != "amax"},
                "power": {"window_s": power.window_s, "samples": power.samples,
                          "interval_s": power.interval_s, "rails": power.rails,
                          "energy_j": power.energy_j, "meta": power.meta},
                "imgsz": inputs.imgsz, "latency_rounds": calls,
                "accuracy_seconds": prepared.accuracy.seconds,
                "cocoeval_seconds": prepared.accuracy.eval_seconds,
                "eval_streams": prepared.accuracy.streams}

    def _identity(self) -> dict[str, Any]:
        label = self._inputs.model_label if self._inputs else str(self.cfg.model or "default")
        return {"model": label, "backend": self.cfg.backend, "device": self.cfg.device}

    def _skipped(self, variant: str, reason: str) -> Prepared:
        from bench.report.rows import ResultRow

        self._store(ResultRow(variant=variant, status="skipped", reason=reason,
                              **self._identity()))
        return Prepared(variant, "skipped", reason=reason)

    def _failed(self, variant: str, exc: BaseException) -> Prepared:
        from bench.report.rows import ResultRow

        message = one_line(exc)
        self._store(ResultRow(variant=variant, status="failed", error=message,
                              **self._identity()))
        return Prepared(variant, "failed", reason=message)

    def _store(self, row: Any) -> Any:
        from bench.report.gate import evaluate_gate

        spec = spec_of(row.variant)
        if row.status == "ok" and spec.kind == "ptq" and self._context is not None:
            self._context.ptq_maps[spec.method] = row.map
        fp32 = self.rows.get("fp32")
        baseline_row, comparable = self._baseline_for(row)
        row = _with_relative(row, fp32)
        row = dataclasses.replace(row, gate=evaluate_gate(row, fp32, baseline_row, comparable,
                                                          self.gate_config()))
        self.rows[row.variant] = row
        return row

    def gate_config(self) -> Any:
        from bench.report.gate import GateConfig

        cfg = self.cfg
        return GateConfig.from_mapping({
            "floors": {"fp16": cfg.floor_fp16, "int8-": cfg.floor_int8, "trt-": cfg.floor_int8,
                       "int8-qat": cfg.floor_qat},
            "map_drop_abs": cfg.map_tolerance, "latency_growth": cfg.latency_tolerance})

    def _baseline_for(self, probe: Any) -> tuple[Any, Any]:
        from bench.report.baseline import load_baseline
        from bench.report.gate import match_baseline_row, row_comparability

        if self._baseline is None:
            self._baseline = load_baseline(Path(self.cfg.baseline)) or False
        if not self._baseline:
            return None, None
        row = match_baseline_row(probe, self._baseline.rows)
        if row is None:
            return None, None
        return row, row_comparability(probe, row, self.environment(), self._baseline.environment)

    # -- the end --------------------------------------------------------------------------
    def environment(self) -> dict[str, Any]:
        if not hasattr(self, "_environment"):
            self._environment = collect_environment(self.cfg, self._inputs)
        return self._environment

    def close(self) -> None:
        """Free the fp32 engine kept for paired timings."""
        if self._anchor is not None:
            self._anchor.deactivate()
            self._anchor = None

    def finish(self, benchmark_json: dict | None, complete: bool,
               run_dir: Path | None = None) -> Path:
        """Write results/runs/<id>/ (or run_dir, chosen ahead) and point results/latest at it."""
        from bench.report.writer import new_run_id, write_run

        self.close()
        ordered = [self.rows[v] for v in self.cfg.variants if v in self.rows]
        run_dir = run_dir or Path(self.cfg.results_dir) / "runs" / new_run_id()
        baseline = self._baseline or None
        return write_run(run_dir, self.environment(), ordered, benchmark_json, complete,
                         results_dir=Path(self.cfg.results_dir),
                         thresholds=self.gate_config().describe(), baseline=baseline,
                         baseline_source=str(self.cfg.baseline))


def _with_relative(row: Any, fp32: Any) -> Any:
    from bench.report.rows import derive_relative

    return derive_relative([r for r in (fp32, row) if r is not None])[-1]


def one_line(exc: BaseException) -> str:
    """A failed row's error: the message's first line, prefixed with the kind."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    kind = type(exc).__name__
    return f"{kind}: {text}" if text else kind


def benchmark_extra_info(row: Any) -> dict[str, Any]:
    """The figures pytest-benchmark's JSON carries beside its own timings."""
    info: dict[str, Any] = {"variant": row.variant, "status": row.status}
    if row.latency_ms is not None:
        info.update({f"latency_{k}_ms": v for k, v in row.latency_ms.to_dict().items()})
    for name in ("map", "map50", "delta_map_vs_fp32", "throughput_ips", "speedup_vs_fp32",
                 "power_w", "energy_mj_per_inference", "power_source", "power_reason"):
        info[name] = getattr(row, name)
    if row.e2e_latency_ms is not None:
        info["e2e_latency_median_ms"] = row.e2e_latency_ms.median
    return info
