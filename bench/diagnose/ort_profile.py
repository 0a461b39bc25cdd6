"""What each node ran in on ONNX Runtime, and where the time went.

A session with ``enable_profiling`` writes a Chrome-trace JSON: one ``<node>_kernel_time``
event per node run, whose args name the kernel's op (after ONNX Runtime's graph
optimisations: QLinearConv, QLinearMul, ... when it fused a DequantizeLinear -> op ->
QuantizeLinear group into an integer kernel; Conv, FusedConv, QuickGelu when it did not),
its execution provider and its input types. A kernel is counted as:

  int8   an integer kernel: its op is one of INT8_OPS, or its first input is int8/uint8
         (MaxPool, Transpose, Reshape on quantized codes);
  qdq    a QuantizeLinear/DequantizeLinear that ran on its own (a conversion the fusion
         did not absorb);
  float  its first input is float/float16/bfloat16;
  other  shape arithmetic (int64, bool inputs).

Conv FLOPs come from the original graph (ONNX shape inference at the profiled input
shape): 2 x output elements x (input channels / group) x kernel area per Conv. A fused
conv kernel keeps, as a prefix of its name, the name or output name of its Conv or of the
activation fused into it ("/model.1/conv/Conv_token_14", "/model.0/conv/Conv_output_0_nchwc",
"/model.76/act/LeakyRelu_output_0_nchwc"), which maps it back to its Conv. A node's time
is its median over the timed runs (a shared machine's outliers do not move it).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from bench.errors import ModelError
from bench.onnx_file import load_model

INT8_OPS = frozenset({
    "QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QGemm",
    "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat",
    "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSoftmax", "QLinearReduceMean",
    "QLinearWhere", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
_INT_CODES = frozenset({"int8", "uint8"})
_FLOATS = frozenset({"float", "float16", "bfloat16", "double"})
SLOWEST = 10


@dataclass(frozen=True)
class NodeTime:
    """One kernel as ONNX Runtime ran it: mean time per run, and how it is counted."""

    name: str
    op: str
    provider: str
    precision: str  # int8 | qdq | float | other
    time_us: float  # median per run
    conv: str | None = None  # the original Conv it computes, if any
    conv_flops: int = 0


@dataclass(frozen=True)
class OrtProfile:
    """The per-node trace of a model, summarised."""

    model: str
    runs: int
    total_us: float  # sum of the kernels' mean times per run
    int8_pct: float  # % of the conv FLOPs computed by int8 kernels
    float_time_pct: float  # % of kernel time in float kernels
    qdq_time_pct: float  # % of kernel time in stand-alone Q/DQ conversions
    conv_flops: int  # of the whole graph, per profiled batch
    unmatched_convs: tuple[str, ...]  # convs no kernel maps back to (counted as not int8)
    nodes: tuple[NodeTime, ...]  # slowest first

    @property
    def slowest(self) -> tuple[NodeTime, ...]:
        return self.nodes[:SLOWEST]

    def summary(self) -> str:
        """'x % of conv FLOPs in INT8, y % of the time in float ops' and the slowest nodes."""
        lines = [f"{self.int8_pct:.1f} % of conv FLOPs in INT8, {self.float_time_pct:.1f} % "
                 f"of the time in float ops, {self.qdq_time_pct:.1f} % in Q/DQ conversions "
                 f"({self.total_us / 1e3:.2f} ms of kernels per run, {self.runs} runs)"]
        lines += [f"  {n.time_us / 1e3:7.3f} ms  {n.precision:5s}  {n.op:16s}  {n.name}"
                  for n in self.slowest]
        return "\n".join(lines)


def _fixed_shapes(model: onnx.ModelProto, shape: tuple[int, ...]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    inits = {t.name for t in copy.graph.initializer}
    first = next(i for i in copy.graph.input if i.name not in inits)
    dims = first.type.tensor_type.shape.dim
    for dim, value in zip(dims, shape):
        dim.Clear()
        dim.dim_value = int(value)
    return onnx.shape_inference.infer_shapes(copy)


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for info in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(d.dim_value for d in dims)
    return shapes


def conv_flops(model: onnx.ModelProto, input_shape: tuple[int, ...]) -> dict[str, int]:
    """FLOPs of every Conv (keyed by node name, or output name when unnamed) at that input
    shape. Raises ModelError when shape inference leaves a Conv's shapes unknown."""
    inferred = _fixed_shapes(model, input_shape)
    shapes = _shapes(inferred)
    flops = {}
    for node in inferred.graph.node:
        if node.op_type != "Conv":
            continue
        name = node.name or node.output[0]
        out, weight = shapes.get(node.output[0]), shapes.get(node.input[1])
        if out is None or weight is None:
            raise ModelError(f"conv_flops: shapes of Conv {name!r} are unknown after shape "
                             f"inference at input {input_shape}; expected static shapes")
        flops[name] = 2 * math.prod(out) * math.prod(weight[1:])
    return flops


_FUSABLE = frozenset({"Relu", "LeakyRelu", "Sigmoid", "Clip", "HardSigmoid", "HardSwish",
                      "Tanh", "Mul", "Add"})


def _conv_prefixes(model: onnx.ModelProto) -> dict[str, str]:
    """Names a fused conv kernel may carry -> its Conv: the Conv's name and output name,
    and those of up to two activations fused after it (each the sole reader before it)."""
    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for t in node.input:
            readers[t].append(node)
    prefixes: dict[str, str] = {}
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        key, node = conv.name or conv.output[0], conv
        for _ in range(3):
            prefixes.update({p: key for p in (node.name, node.output[0]) if p})
            nxt = readers.get(node.output[0], [])
            if len(nxt) != 1 or nxt[0].op_type not in _FUSABLE:
                break
            node = nxt[0]
    return prefixes


def _precision(op: str, input_types: list[str]) -> str:
    if op in INT8_OPS:
        return "int8"
    if op in QDQ_OPS:
        return "qdq"
    first = input_types[0] if input_types else ""
    if first in _INT_CODES:
        return "int8"
    return "float" if first in _FLOATS else "other"


def _run_windows(events: list[dict]) -> list[tuple[int, int]]:
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    return sorted((e["ts"], e["ts"] + e["dur"]) for e in runs)


def _kernel_events(events: list[dict], skip: int) -> tuple[list[dict], int]:
    windows = _run_windows(events)[skip:]
    if not windows:
        raise ModelError("ORT profile: no model_run event after the warm-up runs")
    start = windows[0][0]
    kernels = [e for e in events if e.get("cat") == "Node"
               and e.get("name", "").endswith("_kernel_time") and e["ts"] >= start]
    return kernels, len(windows)


def _conv_of(kernel: str, convs: dict[str, str]) -> str | None:
    """The original conv a kernel computes: the longest conv name (or output name) that
    is the kernel's name or a prefix of it followed by '_' or '/'."""
    best = None
    for prefix, conv in convs.items():
        if kernel == prefix or (kernel.startswith(prefix) and kernel[len(prefix)] in "_/"):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, conv)
    return best[1] if best else None


_CONV_KERNELS = frozenset({"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcFusedConv",
                           "NchwcConv", "FusedConvInteger"})


def _per_run(durations: list[float], runs: int) -> float:
    if len(durations) == runs:
        return float(np.median(durations))
    return sum(durations) / runs  # a node run several times per inference (a loop)


def _nodes(kernels: list[dict], runs: int, convs: dict[str, str],
           flops: dict[str, int]) -> list[NodeTime]:
    durations: dict[str, list[float]] = defaultdict(list)
    meta: dict[str, dict] = {}
    for e in kernels:
        name = e["name"][: -len("_kernel_time")]
        durations[name].append(e["dur"])
        meta[name] = e.get("args", {})
    nodes = []
    for name, durs in durations.items():
        args = meta[name]
        op = args.get("op_name", "?")
        types = [next(iter(t)) for t in args.get("input_type_shape", []) if t]
        conv = _conv_of(name, convs) if op in _CONV_KERNELS else None
        nodes.append(NodeTime(name, op, args.get("provider", "?"), _precision(op, types),
                              _per_run(durs, runs), conv, flops.get(conv, 0) if conv else 0))
    return sorted(nodes, key=lambda n: -n.time_us)


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole > 0 else 0.0


def summarise(model: onnx.ModelProto, trace: list[dict], input_shape: tuple[int, ...],
              warmup: int = 0, label: str = "") -> OrtProfile:
    """An OrtProfile from a parsed ORT trace of `model` run at `input_shape`."""
    flops = conv_flops(model, input_shape)
    convs = _conv_prefixes(model)
    kernels, runs = _kernel_events(trace, warmup)
    nodes = _nodes(kernels, runs, convs, flops)
    int8_convs = {n.conv for n in nodes if n.conv and n.precision == "int8"}
    matched = {n.conv for n in nodes if n.conv}
    total = sum(n.time_us for n in nodes)
    by_precision: dict[str, float] = defaultdict(float)
    for n in nodes:
        by_precision[n.precision] += n.time_us
    whole = sum(flops.values())
    return OrtProfile(
        label, runs, total, _pct(sum(flops[c] for c in int8_convs), whole),
        _pct(by_precision["float"], total), _pct(by_precision["qdq"], total), whole,
        tuple(c for c in flops if c not in matched), tuple(nodes))


def profile_ort(model_path: str | Path, batch: np.ndarray, *, runs: int = 10,
                warmup: int = 2, threads: int | None = 1) -> OrtProfile:
    """Run `model_path` on ONNX Runtime's CPU provider with profiling on, `warmup` + `runs`
    times on `batch`, and summarise the trace of the timed runs. The trace goes to a
    temporary folder that is removed."""
    import onnxruntime as ort

    model_path = Path(model_path)
    model = load_model(model_path)
    folder = Path(tempfile.mkdtemp(prefix="bench-ort-profile-"))
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = str(folder / "ort")
        if threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(batch, dtype=np.float32)}
        for _ in range(warmup + runs):
            session.run(None, feed)
        trace = json.loads(Path(session.end_profiling()).read_text())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return summarise(model, trace, tuple(batch.shape), warmup, model_path.name)
