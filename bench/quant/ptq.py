"""Post-training quantization: the Q/DQ plan of a model and its calibrated amax.

Shared by the PTQ builders and by QAT (which starts from a PTQ calibration).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx

from bench.config import KEEP_FLOAT_FLAGS
from bench.onnx_file import load_model
from bench.quant.calibrators import compute_amax
from bench.quant.histogram import AbsHistogram
from bench.quant.placement import KeepFloat, QuantPlan, plan_quantization


def quant_plan(model_path: Path, keep_float: tuple[str, ...]) -> tuple[onnx.ModelProto,
                                                                       QuantPlan]:
    """The FP32 model and its Q/DQ plan, with the kept-float flags and node globs."""
    model = load_model(model_path)
    keep = KeepFloat(first_conv="first_conv" in keep_float, head="head" in keep_float,
                     decode="decode" in keep_float,
                     nodes=tuple(n for n in keep_float if n not in KEEP_FLOAT_FLAGS))
    return model, plan_quantization(model, keep_float=keep)


class Histograms:
    """|x| histograms of the planned tensors, collected once and shared by every method."""

    def __init__(self, model_path: Path, batches: Callable[[], Iterator[np.ndarray]], *,
                 total: int, progress: bool):
        self._model_path, self._batches = model_path, batches
        self._total, self._progress = total, progress
        self._hists: dict[str, AbsHistogram] | None = None
        self.seconds: float | None = None  # how long the one collection took
        self._amax: dict[tuple[str, float], dict[str, float]] = {}

    def of(self, plan: QuantPlan) -> dict[str, AbsHistogram]:
        from bench.quant.collect import collect_histograms

        if self._hists is None:
            start = time.perf_counter()
            self._hists = collect_histograms(
                self._model_path, list(plan.activation_tensors), self._batches(),
                progress=self._progress, total=self._total)
            self.seconds = time.perf_counter() - start
        return self._hists

    def covers(self, plan: QuantPlan) -> bool:
        """Whether the histograms (once collected) hold every tensor plan quantizes."""
        return self._hists is None or set(plan.activation_tensors) <= set(self._hists)

    def amax(self, plan: QuantPlan, method: str, percentile: float) -> dict[str, float]:
        """amax per planned activation tensor by one calibration method, computed once
        per method and percentile: int8-qat starts from a PTQ calibration the same run
        has just computed (mse's took 2.7 s of a 52 s QAT build on the default, under a
        sampling profiler)."""
        key = (method, float(percentile))
        if key not in self._amax:
            self._amax[key] = {name: float(compute_amax(hist, method, percentile=percentile))
                               for name, hist in self.of(plan).items()}
        return dict(self._amax[key])
