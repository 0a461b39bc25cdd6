"""Per-layer facts of a built TensorRT engine: the thin part of the diagnosis that touches
TensorRT (bench.diagnose.trt_layers reads what it returns).

Two documented APIs (the same in the Python bindings of 8.6, 10.x and 11.x):

- the engine inspector: ``engine.create_engine_inspector()``, its ``execution_context``
  set to a context whose input shapes are set (otherwise dynamic dimensions read -1 and
  no format is shown), then ``get_engine_information(LayerInformationFormat.JSON)``. How
  much it says depends on the builder config's ``profiling_verbosity`` when the engine was
  built: layer names only by default (LAYER_NAMES_ONLY), names and parameters (types,
  formats, tactics) with DETAILED, nothing with NONE.
- an ``IProfiler`` on the execution context (``context.profiler``), whose
  ``report_layer_time(layer_name, ms)`` TensorRT calls once per layer per inference. As
  trtexec does, ``enqueue_emits_profile`` is set False so ``execute_async_v3`` stays
  asynchronous, and ``report_to_profiler()`` is called after the stream is synchronised
  (it reads the CUDA events of the previous enqueue on that stream).

Sources: NVIDIA TensorRT Python API (EngineInspector, IProfiler, IExecutionContext:
profiler, enqueue_emits_profile, report_to_profiler) and NvInferRuntime.h
(IEngineInspector::setExecutionContext, IExecutionContext::setEnqueueEmitsProfile), as
bound in NVIDIA/TensorRT python/src/infer/pyCore.cpp at v8.6.1, v10.3.0 and v11.0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.errors import ModelError


@dataclass(frozen=True)
class LayerProfile:
    """What TensorRT said about one engine on one input shape.

    engine_information: the inspector's JSON text; times_ms: per layer name, its time in
    each timed run it was reported in (summed where one run reports a name twice).
    """

    engine_information: str
    times_ms: dict[str, list[float]] = field(repr=False)
    runs: int
    input_shape: tuple[int, ...]


def engine_information(trt: Any, engine: Any, context: Any) -> str:
    """The inspector's JSON of every layer, with context (input shapes set) as its source."""
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context  # concrete dimensions and formats
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    if not text:
        raise ModelError("tensorrt engine inspector returned no engine information")
    return str(text)


def time_layers(trt: Any, context: Any, run: Callable[[], None], *, runs: int,
                warmup: int) -> dict[str, list[float]]:
    """Per-layer times of `runs` calls of run() after `warmup` untimed ones.

    run() must enqueue one inference on the context and synchronise its stream. The
    profiler is detached and enqueue_emits_profile restored afterwards, also on error.
    """
    if runs < 1 or warmup < 0:
        raise ModelError(f"tensorrt layer profile: got runs={runs}, warmup={warmup}; "
                         "expected runs >= 1 and warmup >= 0")
    recorder = _recorder_class(trt)()
    context.profiler = recorder
    context.enqueue_emits_profile = False
    try:
        for index in range(warmup + runs):
            run()
            recorder.timed = index >= warmup
            if not context.report_to_profiler():
                raise ModelError(f"tensorrt report_to_profiler failed after run {index + 1} "
                                 "(no profiler attached, or the stream is gone)")
            recorder.end_run()
    finally:
        context.enqueue_emits_profile = True
        context.profiler = None
    if not recorder.times:
        raise ModelError(f"tensorrt reported no layer times in {runs} profiled runs")
    return dict(recorder.times)


def _recorder_class(trt: Any) -> type:
    """An IProfiler that keeps, per layer, its time in each timed run."""

    class LayerRecorder(trt.IProfiler):  # type: ignore[misc, name-defined]
        def __init__(self):
            trt.IProfiler.__init__(self)  # the trampoline class needs the explicit init
            self.timed = False
            self.times: dict[str, list[float]] = defaultdict(list)
            self._run: dict[str, float] = defaultdict(float)

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            if self.timed:
                self._run[str(layer_name)] += float(ms)

        def end_run(self) -> None:
            for name, ms in self._run.items():
                self.times[name].append(ms)
            self._run.clear()

    return LayerRecorder
