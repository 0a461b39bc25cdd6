"""The diagnosis of a run (`--diagnose true`): what each INT8 row ran in and where it lost.

For each INT8 (Q/DQ artifact) variant the session calls `Diagnoser.diagnose` once, after the
measurement: the ONNX Runtime profile of its artifact on the staged latency batch and the
per-tensor error against FP32 on a few calibration images. The row's extra gets a short
summary (`extra["diagnosis"]`); the full tables stay here until the writer calls `write`,
which puts them in the run folder:

- diagnosis/<variant>_profile.csv: every kernel ONNX Runtime ran (slowest first);
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

LAYER_IMAGES = 8  # calibration images of the per-tensor error
PROFILE_RUNS = 10
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
    profiles: dict[str, OrtProfile] = field(default_factory=dict)
    layers: dict[str, list[LayerError]] = field(default_factory=dict)

    def diagnose(self, variant: str, artifact_path: Path, batch: np.ndarray) -> dict[str, Any]:
        """Profile and per-tensor error of one Q/DQ artifact; the row's extra["diagnosis"]."""
        from bench.diagnose.layers import layer_errors
        from bench.diagnose.ort_profile import profile_ort

        out: dict[str, Any] = {"on": "ONNX Runtime CPU"}  # whatever the row's backend
        try:
            profile = profile_ort(artifact_path, batch, runs=self.profile_runs,
                                  threads=self.threads)
            self.profiles[variant] = profile
            out.update(profile_summary(profile))
        except Exception as exc:  # a diagnosis never fails the row
            out["profile_error"] = one_line(exc)
        try:
            images = _first_images(self.calib_batches(), self.layer_images)
            rows = layer_errors(self.fp32_path, artifact_path, None, images,
                                threads=self.threads)
            self.layers[variant] = rows
            out.update(layers_summary(rows))
        except Exception as exc:
            out["layers_error"] = one_line(exc)
        return out

    def write(self, run_dir: Path) -> list[str]:
        """Write the tables and the plot into run_dir; the names written, relative to it."""
        from bench.atomic import atomic_write_text

        written: list[str] = []
        for variant, profile in self.profiles.items():
            name = f"{DIAGNOSIS_DIR}/{variant}_profile.csv"
            (run_dir / DIAGNOSIS_DIR).mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / name, profile_csv(profile))
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
            "worst_tensors": [{"tensor": r.tensor, "op": r.op, "sqnr_db": round(r.sqnr_db, 3),
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


def diagnose_row(diagnoser: Diagnoser | None, variant: str, artifact: Any,
                 run: Any) -> dict[str, Any]:
    """{"diagnosis": ...} for an INT8 (qdq) variant when diagnosing, else {}."""
    from bench.variants import spec_of

    if diagnoser is None or artifact is None or spec_of(variant).artifact != "qdq":
        return {}
    return {"diagnosis": diagnoser.diagnose(variant, Path(artifact.path), run.staged_batch())}
