"""Time an FP32 ONNX model against its two Q/DQ profiles on ONNX Runtime's CPU provider.

    python scripts/bench_qdq_speed.py MODEL.onnx [--imgsz 640] [--threads 1 2] [--runs 20]

The amax come from a max calibration on random images: enough for timing (INT8 speed does
not depend on the scales) and for a rough output error, not for accuracy figures. Prints,
per variant and thread count, the median and p90 latency of one batch-1 inference, the
speedup over FP32, how many convs ONNX Runtime fused into QLinearConv, and the relative
L2 error of the output against FP32.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bench.quant.placement import plan_quantization
from bench.quant.qdq import write_qdq

FUSED_OPS = ("QLinearConv", "ConvInteger")


def _session(model: onnx.ModelProto, threads: int, dump: Path | None = None):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if dump is not None:
        opts.optimized_model_filepath = str(dump)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _input_shape(model: onnx.ModelProto, imgsz: int) -> tuple[str, list[int]]:
    inits = {t.name for t in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in inits)
    dims = [d.dim_value or None for d in first.type.tensor_type.shape.dim]
    return first.name, [1 if i == 0 else (d or imgsz) for i, d in enumerate(dims)]


def _max_calibration(model: onnx.ModelProto, tensors, feeds: list[dict]) -> dict[str, float]:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors)
    session = _session(probe, 1)
    names = [o.name for o in session.get_outputs()]
    amax = dict.fromkeys(tensors, 0.0)
    for feed in feeds:
        for name, value in zip(names, session.run(None, feed)):
            if name in amax:
                amax[name] = max(amax[name], float(np.abs(value).max()))
    return amax


def _time(sessions: dict, feed: dict, runs: int, warmup: int) -> dict[str, list[float]]:
    """Round-robin over the variants, so that load drifting on a shared machine hits all
    of them alike instead of whichever ran last."""
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, feed)
    times: dict[str, list[float]] = {label: [] for label in sessions}
    for _ in range(runs):
        for label, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feed)
            times[label].append((time.perf_counter() - start) * 1e3)
    return times


def _fused(model: onnx.ModelProto, workdir: Path) -> int:
    dump = workdir / "optimized.onnx"
    _session(model, 1, dump)
    return sum(n.op_type in FUSED_OPS for n in onnx.load(str(dump)).graph.node)


def _variants(model: onnx.ModelProto, feeds: list[dict]) -> dict[str, onnx.ModelProto]:
    plan = plan_quantization(model)
    amax = _max_calibration(model, plan.activation_tensors, feeds)
    print(
        f"plan: {len(plan.ops)} quantized convs, {len(plan.sites)} activation tensors, "
        f"{len(plan.shared_groups)} shared-scale groups, first {plan.first_convs}, "
        f"head {plan.head_convs}"
    )
    return {"fp32": model} | {
        f"qdq-{p}": write_qdq(model, plan, amax, profile=p) for p in ("tensorrt", "cpu")
    }


def _rel_error(model: onnx.ModelProto, ref: np.ndarray, feed: dict) -> float:
    out = _session(model, 1).run(None, feed)[0]
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-12))


def _report(label: str, threads: int, times: list[float], base: float, extra: tuple) -> None:
    med = statistics.median(times)
    p90 = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else med
    fused, err = extra
    print(
        f"{label:<14}{threads:>8}{med:>11.2f}{p90:>9.2f}{base / med:>8.2f}x{fused:>7}{err:>10.2e}"
    )


def main() -> None:
    args = _parse()
    model = onnx.load(str(args.model))
    name, shape = _input_shape(model, args.imgsz)
    rng = np.random.default_rng(0)
    feeds = [{name: rng.random(shape, dtype=np.float32)} for _ in range(args.calib + 1)]
    variants = _variants(model, feeds[1:])
    ref = _session(model, 1).run(None, feeds[0])[0]
    with tempfile.TemporaryDirectory() as tmp:
        extra = {
            k: (_fused(v, Path(tmp)), _rel_error(v, ref, feeds[0])) for k, v in variants.items()
        }
    print(f"input {name} {shape}; {args.runs} timed rounds after {args.warmup} warm-up")
    print(
        f"{'variant':<14}{'threads':>8}{'median ms':>11}{'p90 ms':>9}{'speedup':>9}"
        f"{'fused':>7}{'rel.err':>10}"
    )
    for threads in args.threads:
        sessions = {k: _session(v, threads) for k, v in variants.items()}
        times = _time(sessions, feeds[0], args.runs, args.warmup)
        base = statistics.median(times["fp32"])
        for label in variants:
            _report(label, threads, times[label], base, extra[label])


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="FP32 ONNX model")
    parser.add_argument("--imgsz", type=int, default=640, help="size of dynamic H/W dims")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--calib", type=int, default=2, help="random calibration images")
    return parser.parse_args()


if __name__ == "__main__":
    main()
