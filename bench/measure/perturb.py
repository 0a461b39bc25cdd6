"""Models made worse on purpose, for the self-test of the verdicts (scripts/selftest_verdicts).

* write_slowed_model: the same outputs, bit for bit, but slower: a side branch of 3x3
  convolutions on the input whose mean is multiplied by 0 and added to every float output.
  ONNX Runtime cannot drop it (x * 0 is not 0 for every float, so no optimiser folds it),
  and y + 0 == y for every finite y.
* calibrate_slowdown: picks the branch's depth for a wanted slowdown (e.g. 1.10) by timing
  the slowed model interleaved with the original (paired block ratios, bench.measure.stats).
* write_shrunk_boxes_model: lower mAP with everything else the same: the box width and
  height columns of a YOLOv7 raw output [B, N, 5+C] (x, y, w, h, obj, classes) scaled by a
  factor < 1, so IoU with the ground truth, and AP at the strict thresholds, fall smoothly.
* find_factor: bisects that factor for a wanted mAP drop given a function that evaluates one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.atomic import atomic_write_bytes
from bench.errors import ModelError
from bench.measure.stats import Interval, paired_ratio

_FLOAT_TYPES = (1, 10)  # TensorProto.FLOAT, FLOAT16
_SEED = 7


def _load(src: str | Path):
    from bench.onnx_file import load_model

    return load_model(Path(src))


def _save(model, dst: str | Path) -> Path:
    import onnx

    onnx.checker.check_model(model)
    return atomic_write_bytes(Path(dst), model.SerializeToString())


def _elem_type(value_info) -> int:
    return value_info.type.tensor_type.elem_type


def _rename_output(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.output[:] = [new if o == old else o for o in node.output]


def write_slowed_model(src: str | Path, dst: str | Path, convs: int, channels: int = 4,
                       stride: int = 4) -> Path:
    """src with a side branch of `convs` 3x3 convolutions (input -> conv of that stride to
    `channels`, then channels -> channels) whose mean × 0 is added to each float output.
    Outputs, names and shapes are those of src; only the time grows (per conv, about
    channels² × (H/stride) × (W/stride) multiply-adds plus one operator's overhead)."""
    from onnx import TensorProto, helper, numpy_helper

    if convs < 1:
        raise ModelError(f"convs {convs}: expected >= 1")
    model = _load(src)
    graph = model.graph
    if len(graph.input) < 1 or _elem_type(graph.input[0]) not in _FLOAT_TYPES:
        raise ModelError(f"model {src}: expected a float image input first")
    float_outputs = [o for o in graph.output if _elem_type(o) in _FLOAT_TYPES]
    if not float_outputs:
        raise ModelError(f"model {src}: no float output to add the branch to")
    rng = np.random.default_rng(_SEED)
    x = graph.input[0].name
    nodes = [helper.make_node("Cast", [x], ["slowdown_in"], to=TensorProto.FLOAT,
                              name="slowdown_cast_in")]
    x, c_in = "slowdown_in", 3
    for i in range(convs):
        w = (rng.standard_normal((channels, c_in, 3, 3)) * 0.1).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(w, f"slowdown_w{i}"))
        step = stride if i == 0 else 1
        nodes += [
            helper.make_node("Conv", [x, f"slowdown_w{i}"], [f"slowdown_conv{i}"],
                             kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[step, step],
                             name=f"slowdown_conv{i}"),
            helper.make_node("Relu", [f"slowdown_conv{i}"], [f"slowdown_relu{i}"],
                             name=f"slowdown_relu{i}"),
        ]
        x, c_in = f"slowdown_relu{i}", channels
    graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), "slowdown_zero"))
    nodes += [
        helper.make_node("ReduceMean", [x], ["slowdown_mean"], keepdims=0,
                         name="slowdown_mean"),
        helper.make_node("Mul", ["slowdown_mean", "slowdown_zero"], ["slowdown_nothing"],
                         name="slowdown_times_zero"),
    ]
    for k, out in enumerate(float_outputs):
        before = f"{out.name}_before_slowdown"
        _rename_output(graph, out.name, before)
        nothing = f"slowdown_nothing_{k}"
        nodes += [
            helper.make_node("Cast", ["slowdown_nothing"], [nothing], to=_elem_type(out),
                             name=f"slowdown_cast_{k}"),
            helper.make_node("Add", [before, nothing], [out.name], name=f"slowdown_add_{k}"),
        ]
    graph.node.extend(nodes)
    return _save(model, dst)


def measure_slowdown(src: str | Path, slowed: str | Path, batch: np.ndarray, *,
                     threads: int | None = 1, blocks: int = 15, calls: int = 10) -> Interval:
    """slowed / src latency on ONNX Runtime (CPU): the median of paired block ratios, blocks
    alternating slowed, src, slowed, ... with one untimed call when the session changes."""
    import time

    from bench.engines.ort import OrtEngine, OrtOptions

    options = OrtOptions(threads=threads)
    with OrtEngine(src, options=options) as base, OrtEngine(slowed, options=options) as slow:
        def block(engine) -> list[float]:
            engine.infer(batch)
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                engine.infer(batch)
                times.append(time.perf_counter() - start)
            return times

        slow_blocks, base_blocks = [block(slow)], []
        for _ in range(blocks):
            base_blocks.append(block(base))
            slow_blocks.append(block(slow))
    # paired_ratio gives reference / variant: slowed / src with slowed as the reference
    return paired_ratio(base_blocks, slow_blocks)


def calibrate_slowdown(src: str | Path, dst: str | Path, batch: np.ndarray, *,
                       target: float = 1.10, threads: int | None = 1, channels: int = 4,
                       stride: int = 4, probe_convs: int = 8, blocks: int = 15,
                       calls: int = 10) -> tuple[Path, int, Interval]:
    """Write dst = src slowed by about `target` (e.g. 1.10): time a branch of probe_convs
    convolutions, scale the depth linearly to the target, write and time that. Returns the
    path, the depth and the measured slowdown (an Interval: check it before trusting it)."""
    timing = {"threads": threads, "blocks": blocks, "calls": calls}
    convs = probe_convs
    for _ in range(2):  # measure, rescale the depth linearly; once more from the better guess
        write_slowed_model(src, dst, convs, channels, stride)
        measured = measure_slowdown(src, dst, batch, **timing)
        per_conv = max((measured.estimate - 1.0) / convs, 1e-4)
        # a noisy measurement near 1 must not ask for a thousand convolutions
        better = min(4 * convs, max(1, int(round((target - 1.0) / per_conv))))
        if better == convs:
            return Path(dst), convs, measured
        convs = better
    write_slowed_model(src, dst, convs, channels, stride)
    return Path(dst), convs, measure_slowdown(src, dst, batch, **timing)


def write_shrunk_boxes_model(src: str | Path, dst: str | Path, factor: float,
                             output: str | None = None) -> Path:
    """src with the w and h columns of its raw [B, N, 5+C] output (x, y, w, h, obj, cls...)
    multiplied by factor; every other value is multiplied by exactly 1 (unchanged)."""
    from onnx import helper, numpy_helper

    if not 0.0 < factor <= 1.0:
        raise ModelError(f"factor {factor!r}: expected a value in (0, 1]")
    model = _load(src)
    graph = model.graph
    outs = [o for o in graph.output if output is None or o.name == output]
    if len(outs) != 1:
        names = [o.name for o in graph.output]
        raise ModelError(f"model {src}: outputs {names}; name the raw [B,N,5+C] one")
    out = outs[0]
    dims = out.type.tensor_type.shape.dim
    if len(dims) != 3 or dims[2].dim_value < 6:
        raise ModelError(f"model {src}: output {out.name!r} is not [B, N, 5+C] with a static"
                         " last dimension (the YOLOv7 raw layout)")
    scale = np.ones(dims[2].dim_value, np.float16 if _elem_type(out) == 10 else np.float32)
    scale[2:4] = factor
    graph.initializer.append(numpy_helper.from_array(scale, "shrink_wh_scale"))
    before = f"{out.name}_before_shrink"
    _rename_output(graph, out.name, before)
    graph.node.append(helper.make_node("Mul", [before, "shrink_wh_scale"], [out.name],
                                       name="shrink_wh"))
    return _save(model, dst)


def find_factor(drop_of: Callable[[float], float], target_drop: float = 0.01, *,
                low: float = 0.5, tolerance: float = 0.002, steps: int = 12) -> tuple[float, float]:
    """The box factor in [low, 1] whose mAP drop (drop_of(factor) = mAP(1) − mAP(factor),
    assumed to grow as the factor falls) is within tolerance of target_drop, by bisection.
    Returns (factor, its drop); the closest one found when steps run out."""
    hi, lo = 1.0, low
    best = (1.0, 0.0)
    for _ in range(steps):
        mid = (hi + lo) / 2.0
        drop = drop_of(mid)
        if abs(drop - target_drop) < abs(best[1] - target_drop):
            best = (mid, drop)
        if abs(drop - target_drop) <= tolerance:
            return mid, drop
        hi, lo = (mid, lo) if drop < target_drop else (hi, mid)
    return best
