"""Result rows from what a variant produced: its artifact, accuracy pass and measurement.

Pure assembly: no engine, no model. The judge adds the relative figures and the gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.measure.stats import median_ci
from bench.report.judge import BLOCKS_KEY
from bench.report.rows import MAP_FIELDS, PAIRED_KEY, QAT_START_KEY, LatencyStats, ResultRow

if TYPE_CHECKING:
    from bench.cache import Artifact
    from bench.eval.accuracy import AccuracyResult
    from bench.measure.measurer import Measurement

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Identity:
    """What a row is about: model, backend, device."""

    model: str
    backend: str
    device: str

    def to_dict(self) -> dict[str, str]:
        return {"model": self.model, "backend": self.backend, "device": self.device}


@dataclass(frozen=True)
class Provenance:
    """Where a row's figures come from: the evaluation and calibration it used."""

    eval_fingerprint: str | None = None
    calib_fingerprint: str | None = None


def latency_stats(seconds: tuple[float, ...] | list[float]) -> LatencyStats:
    """Median (with its order-statistic CI), p90, p99, mean and min in ms."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0 or not np.all(np.isfinite(ms)) or np.any(ms < 0):
        raise ValueError("timings must be a non-empty list of finite, non-negative seconds")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    ci = median_ci(ms, CONFIDENCE) if ms.size >= 2 else None
    return LatencyStats(median=float(p50), p90=float(p90), p99=float(p99), mean=float(ms.mean()),
                        min=float(ms.min()), ci_low=ci.low if ci else None,
                        ci_high=ci.high if ci else None, confidence=ci.confidence if ci else None)


def ok_row(variant: str, identity: Identity, artifact: Artifact, accuracy: AccuracyResult,
           measurement: Measurement | None, provenance: Provenance, *, build_s: float,
           calib_s: float | None, extra: Mapping[str, Any],
           spent_s: Mapping[str, float] | None = None) -> ResultRow:
    """The row of a variant that built and ran. measurement None: latency not timed.

    build_s: what building the artifact cost when it was built (for a cached artifact, in
    the run that built it); spent_s: this run's seconds for the build (a cache hit's lookup
    and checks) and for opening the engine, the phases_s figures."""
    metrics = accuracy.metrics
    figures = {name: metrics.get(name) for name in MAP_FIELDS}
    timed: dict[str, Any] = {}
    more: dict[str, Any] = {}
    if measurement is not None and measurement.seconds:
        latency = latency_stats(measurement.seconds)
        power = measurement.power
        blocks = measurement.blocks
        timed = {"latency_ms": latency,
                 "e2e_latency_ms": latency_stats(measurement.e2e_seconds)
                 if measurement.e2e_seconds else None,
                 "throughput_ips": 1000.0 * measurement.per_call / latency.mean,
                 "power_w": power.mean_w, "power_source": power.source,
                 "power_reason": power.reason,
                 "energy_mj_per_inference": power.energy_per_inference_mj(
                     measurement.power_calls * measurement.per_call)
                 if measurement.power_calls else None,
                 "probe_ms": float(np.median(blocks.probe_ms)) if blocks.probe_ms else None}
        more = {BLOCKS_KEY: blocks.to_dict(), "latency_rounds": len(measurement.seconds),
                "latency_pass_s": round(measurement.seconds_total, 3),
                "power": _power_extra(measurement)}
        if blocks.reference_ms:
            more[PAIRED_KEY] = float(np.median(blocks.reference_ms))
    more["phases_s"] = _phases(spent_s or {"build": build_s}, calib_s, accuracy, measurement)
    return ResultRow(variant=variant, status="ok", **identity.to_dict(), **figures, **timed,
                     artifact=str(artifact.path), artifact_bytes=artifact.bytes, build_s=build_s,
                     calib_s=calib_s, eval_images=accuracy.n_images,
                     eval_ips=accuracy.images_per_s,
                     eval_fingerprint=provenance.eval_fingerprint,
                     calib_fingerprint=provenance.calib_fingerprint,
                     extra={**extra, **more})


def _phases(spent_s: Mapping[str, float], calib_s: float | None, accuracy: AccuracyResult,
            measurement: Measurement | None) -> dict[str, float]:
    """Where a variant's time went in this run, so that a nightly shows it (seconds)."""
    phases = {"calibration": calib_s or 0.0, **spent_s}
    phases.update({f"accuracy_{k}": v for k, v in accuracy.phase_seconds.items()})
    phases["latency"] = measurement.seconds_total if measurement is not None else 0.0
    return {k: round(float(v), 3) for k, v in phases.items()}


def _power_extra(measurement: Measurement) -> dict[str, Any]:
    power = measurement.power
    return {"window_s": power.window_s, "samples": power.samples, "interval_s": power.interval_s,
            "rails": dict(power.rails or {}), "energy_j": power.energy_j,
            "meta": dict(power.meta or {}), "calls": measurement.power_calls}


def variant_extra(engine_info: Mapping[str, Any], artifact: Artifact, accuracy: AccuracyResult,
                  imgsz: int) -> dict[str, Any]:
    """What a row carries beside its figures: engine facts, artifact, accuracy-pass split."""
    rebuilt = {"artifact_rebuilt": artifact.rebuilt} if artifact.rebuilt else {}
    return {"engine": dict(engine_info), "artifact_cached": artifact.cached, **rebuilt,
            "artifact_meta": {k: v for k, v in artifact.meta.items() if k != "amax"},
            "imgsz": imgsz, "accuracy_seconds": accuracy.seconds,
            "cocoeval_seconds": accuracy.eval_seconds, "eval_streams": accuracy.streams}


def failed_row(variant: str, identity: Identity, error: str) -> ResultRow:
    return ResultRow(variant=variant, status="failed", error=error, **identity.to_dict())


def skipped_row(variant: str, identity: Identity, reason: str) -> ResultRow:
    return ResultRow(variant=variant, status="skipped", reason=reason, **identity.to_dict())


def with_delta_ci(row: ResultRow, matches: object | None, reference: object | None) -> ResultRow:
    """The row with the paired bootstrap CI over images of its ΔmAP vs fp32 (the same
    images on both sides; bench.eval.bootstrap); unchanged when either side has none."""
    from dataclasses import replace

    from bench.errors import BenchError, one_line
    from bench.eval.bootstrap import delta_map_ci

    if matches is None or reference is None:
        return row
    try:
        ci = delta_map_ci(matches, reference)
    except BenchError as exc:  # e.g. different images: no CI rather than a wrong one
        return replace(row, extra={**row.extra, "delta_map_ci_error": one_line(exc)})
    return replace(row, delta_map_low=ci.low, delta_map_high=ci.high)


def with_start_delta(row: ResultRow, matches: object | None, start: object | None,
                     start_variant: str) -> ResultRow:
    """An int8-qat row with its ΔmAP against the PTQ variant it started from, with the
    paired bootstrap CI over images, in extra[QAT_START_KEY]: whether the fine-tuning
    helped, beyond the evaluation's noise. Unchanged when either side has no matches."""
    from dataclasses import replace

    from bench.errors import BenchError, one_line
    from bench.eval.bootstrap import delta_map_ci

    if matches is None or start is None:
        return row
    try:
        ci = delta_map_ci(matches, start)
    except BenchError as exc:
        found: dict[str, object] = {"start": start_variant, "error": one_line(exc)}
    else:
        found = {"start": start_variant, "delta": ci.estimate, "low": ci.low, "high": ci.high,
                 "confidence": ci.confidence}
    return replace(row, extra={**row.extra, QAT_START_KEY: found})
