"""The diagnosis of a run (`--diagnose true`): what each INT8 row ran in and where it lost.

For each INT8 variant (a Q/DQ artifact; on TensorRT also trt-implicit) the session calls
`Diagnoser.diagnose` once, after the measurement: the profile of what it ran on the staged
latency batch and, for a Q/DQ artifact, the per-tensor error against FP32 on a few
calibration images. The profile is ONNX Runtime CPU's of the artifact (ort_profile), or on
TensorRT the measured engine's own layers (trt_layers: the engine inspector and an
IProfiler; the engine is built with ProfilingVerbosity.DETAILED for it). The row's extra
gets a short summary (`extra["diagnosis"]`); the full tables stay here until the writer
calls `write`, which puts them in the run folder:

- diagnosis/<variant>_profile.csv: every kernel ONNX Runtime ran, or every TensorRT layer
  (slowest first);
- layers.csv: SQNR and cosine per quantized tensor, one `method` column per variant;
- layers.png: SQNR per tensor in graph order, one line per variant.

A diagnosis that fails is reported in the row (`extra["diagnosis"]["error"]`); the row
itself stays as measured.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.errors import one_line

if TYPE_CHECKING:
    from bench.diagnose.layers import LayerError
    from bench.diagnose.ort_profile import OrtProfile
    from bench.diagnose.trt_layers import TrtProfile

LAYER_IMAGES = 8  # calibration images of the per-tensor error
PROFILE_RUNS = 10
PROFILE_WARMUP = 2  # untimed runs before a TensorRT layer profile
SHOWN = 5  # slowest nodes and worst tensors in the row
DIAGNOSIS_DIR = "diagnosis"
PROFILE_COLUMNS = ("name", "op", "provider", "precision", "time_us", "conv", "conv_flops")


@dataclass
class Diagnoser:
    """Collects the diagnosis of each INT8 variant of a run; writes it to the run folder.

    fp32_path: the reference model; calib_batches: the calibration images (NCHW batches);
    threads: ORT intra-op threads of the profile (1 by default: per-node times comparable).
    """

    fp32_path: Path
    calib_batches: Callable[[], Iterator[np.ndarray]]
    layer_images: int = LAYER_IMAGES
    profile_runs: int = PROFILE_RUNS
    threads: int | None = 1
    profiles: dict[str, OrtProfile | TrtProfile] = field(default_factory=dict)
    layers: dict[str, list[LayerError]] = field(default_factory=dict)

    def diagnose(self, variant: str, artifact_path: Path, batch: np.ndarray, *,
                 engine: Any = None, artifact_kind: str = "qdq") -> dict[str, Any]:
        """Profile and per-tensor error of one INT8 artifact; the row's extra["diagnosis"].

        engine: the row's engine, still active; one that profiles its own layers (TensorRT)
        is profiled itself, any other row gets ONNX Runtime CPU's profile of the artifact.
        The per-tensor error needs a Q/DQ artifact (artifact_kind "qdq").
        """
        from bench.diagnose.ort_profile import profile_ort

        on_trt = profiles_layers(engine)
        out: dict[str, Any] = {"on": f"TensorRT {engine.runtime_version()}" if on_trt
                               else "ONNX Runtime CPU"}  # then whatever the row's backend
        try:
            profile = (self._trt_profile(engine, artifact_path, batch) if on_trt
                       else profile_ort(artifact_path, batch, runs=self.profile_runs,
                                        threads=self.threads))
            self.profiles[variant] = profile
            out.update(_row_summary(profile))
        except Exception as exc:  # a diagnosis never fails the row
            out["profile_error"] = one_line(exc)
        if artifact_kind == "qdq":
            self._layers(variant, out, artifact_path)
        return out

    def _trt_profile(self, engine: Any, artifact_path: Path, batch: np.ndarray) -> TrtProfile:
        from bench.diagnose.trt_layers import summarise_file

        raw = engine.profile_layers(batch, runs=self.profile_runs, warmup=PROFILE_WARMUP)
        return summarise_file(artifact_path, raw.engine_information, raw.times_ms, raw.runs,
                              raw.input_shape)

    def _layers(self, variant: str, out: dict[str, Any], artifact_path: Path) -> None:
        from bench.diagnose.layers import layer_errors

        try:
            images = _first_images(self.calib_batches(), self.layer_images)
            rows = layer_errors(self.fp32_path, artifact_path, None, images,
                                threads=self.threads)
            self.layers[variant] = rows
            out.update(layers_summary(rows))
        except Exception as exc:
            out["layers_error"] = one_line(exc)

    def write(self, run_dir: Path) -> list[str]:
        """Write the tables and the plot into run_dir; the names written, relative to it."""
        from bench.atomic import atomic_write_text

        written: list[str] = []
        for variant, profile in self.profiles.items():
            name = f"{DIAGNOSIS_DIR}/{variant}_profile.csv"
            (run_dir / DIAGNOSIS_DIR).mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / name, _profile_csv(profile))
            written.append(name)
        if self.layers:
            atomic_write_text(run_dir / "layers.csv", layers_csv(self.layers))
            written.append("layers.csv")
            written.append(_plot(self.layers, run_dir / "layers.png"))
        return written


def _first_images(batches: Iterable[np.ndarray], count: int) -> Iterator[np.ndarray]:
    """Single images from the batches, at most `count` of them."""
    singles = (image[None] for batch in batches for image in batch)
    return islice(singles, count)


def profiles_layers(engine: Any) -> bool:
    """Whether an engine profiles its own layers (TrtEngine.profile_layers)."""
    return callable(getattr(engine, "profile_layers", None))


def _row_summary(profile: OrtProfile | TrtProfile) -> dict[str, Any]:
    from bench.diagnose.ort_profile import OrtProfile

    if isinstance(profile, OrtProfile):
        return profile_summary(profile)
    from bench.diagnose.trt_layers import profile_summary as trt_summary

    return trt_summary(profile, SHOWN)


def _profile_csv(profile: OrtProfile | TrtProfile) -> str:
    from bench.diagnose.ort_profile import OrtProfile

    if isinstance(profile, OrtProfile):
        return profile_csv(profile)
    from bench.diagnose.trt_layers import profile_csv as trt_csv

    return trt_csv(profile)


def profile_summary(profile: OrtProfile) -> dict[str, Any]:
    """The row's share of a profile: int8 %, float and Q/DQ time %, the slowest nodes."""
    return {"int8_pct": round(profile.int8_pct, 2),
            "float_time_pct": round(profile.float_time_pct, 2),
            "qdq_time_pct": round(profile.qdq_time_pct, 2),
            "kernel_ms": round(profile.total_us / 1e3, 3),
            "slowest": [{"node": n.name, "op": n.op, "precision": n.precision,
                         "ms": round(n.time_us / 1e3, 4)} for n in profile.nodes[:SHOWN]],
            "unmatched_convs": list(profile.unmatched_convs)}


def layers_summary(rows: list[LayerError]) -> dict[str, Any]:
    """The row's share of the per-tensor error: median SQNR and the worst tensors."""
    from bench.diagnose.layers import worst

    finite = [r.sqnr_db for r in rows if math.isfinite(r.sqnr_db)]
    return {"tensors": len(rows),
            "median_sqnr_db": round(float(np.median(finite)), 3) if finite else None,
            # an exactly quantized tensor has an infinite SQNR: null in JSON, which has no inf
            "worst_tensors": [{"tensor": r.tensor, "op": r.op,
                               "sqnr_db": round(r.sqnr_db, 3) if math.isfinite(r.sqnr_db)
                               else None,
                               "cosine": round(r.cosine, 6)} for r in worst(rows, SHOWN)]}


def profile_csv(profile: OrtProfile) -> str:
    """Every kernel of a profile, slowest first, as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PROFILE_COLUMNS)
    for node in profile.nodes:
        writer.writerow([node.name, node.op, node.provider, node.precision,
                         f"{node.time_us:.3f}", node.conv or "", node.conv_flops])
    return buffer.getvalue()


def layers_csv(layers: dict[str, list[LayerError]]) -> str:
    """Per-tensor error of every variant as CSV text: method, then layers.csv's columns."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "order", "tensor", "node", "op", "sqnr_db", "cosine"])
    for method, rows in layers.items():
        for r in rows:
            writer.writerow([method, r.order, r.tensor, r.node, r.op, f"{r.sqnr_db:.3f}",
                             f"{r.cosine:.6f}"])
    return buffer.getvalue()


def _plot(layers: dict[str, list[LayerError]], path: Path) -> str:
    """layers.png through a temporary name, so a killed run leaves no half-written plot."""
    import os

    from bench.atomic import temp_name
    from bench.diagnose.layers import plot_layers

    temp = path.with_name(temp_name(path.name) + ".png")  # savefig reads the suffix
    try:
        plot_layers(layers, temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path.name


def diagnoser_for(run: Any) -> Diagnoser:
    """The diagnoser of a run context (bench.run.RunContext)."""
    context = run.build_context()
    return Diagnoser(Path(context.model_path), context.calib_batches,
                     threads=run.cfg.threads or 1)


def diagnose_row(diagnoser: Diagnoser | None, variant: str, artifact: Any, run: Any,
                 engine: Any = None) -> dict[str, Any]:
    """{"diagnosis": ...} for an INT8 variant when diagnosing, else {}: a Q/DQ artifact on
    any engine, a trt-implicit one on an engine that profiles its layers (TensorRT)."""
    from bench.variants import INT8_ARTIFACTS, spec_of

    kind = spec_of(variant).artifact
    wanted = INT8_ARTIFACTS if profiles_layers(engine) else ("qdq",)
    if diagnoser is None or artifact is None or kind not in wanted:
        return {}
    return {"diagnosis": diagnoser.diagnose(variant, Path(artifact.path), run.staged_batch(),
                                            engine=engine, artifact_kind=kind)}
