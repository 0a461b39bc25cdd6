"""Write a Q/DQ ONNX model from a :class:`QuantPlan` and per-tensor activation amax.

Weights are stored as int8 initializers (per output channel, symmetric, zero point 0)
read through a DequantizeLinear, as ONNX Runtime's quantizer and NVIDIA ModelOpt's ONNX
export write them, so an INT8 file is about a quarter of the FP32 one. TensorRT 10 takes
such pre-quantized weights ("When using pre-quantized weights, an IDequantizeLayer is
required between the weights and the linear operator", TensorRT developer guide,
Explicit Quantization > Quantized Weights) and ONNX Runtime fuses DQ -> Conv -> Q
exactly as it did when it folded a constant QuantizeLinear itself. For TensorRT 8.x
(JetPack 5), where INT8 constants were reported refused, ``weights="float"`` writes the
older form: the float initializer behind a per-channel QuantizeLinear/DequantizeLinear.
The codes are round-half-to-even(w / scale), which is what QuantizeLinear computes, so
both forms hold the same integers and give the same outputs.

Profiles:
  tensorrt  s8 activations (zero point int8 0); one Q/DQ pair per tensor, shared by all its
            quantized consumers; conv outputs stay float (TensorRT fuses the activation and
            the next Q into the conv).
  cpu       u8 activations with zero point 128 and the same scale (symmetric in u8) and s8
            weights, the combination ONNX Runtime's CPU kernels fuse; a separate Q/DQ pair
            per quantized consumer; a Q/DQ on each quantized conv's output, without which
            ONNX Runtime cannot form QLinearConv and runs the conv in float on weights it
            dequantizes at every call; and a Q/DQ on each SiLU gate (the Sigmoid output
            after a quantized conv) with the fixed range [0, 1] -- u8, zero point 0, scale
            1/255, the one asymmetric encoding, since a sigmoid is never negative.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper, version_converter

from bench.errors import ConfigError, ModelError
from bench.quant.naming import fresh_name
from bench.quant.placement import GraphIndex, QdqSite, QuantizedOp, QuantPlan, node_key

PROFILES = ("tensorrt", "cpu")
WEIGHT_FORMATS = ("int8", "float")
MIN_OPSET = 13  # per-axis QuantizeLinear/DequantizeLinear
FORMAT_VERSION = 2  # 1: float weights + QuantizeLinear; 2: int8 weights + DequantizeLinear


@dataclass(frozen=True)
class _Profile:
    zero_point: np.ndarray  # of calibrated activations
    pair_per_consumer: bool
    cpu_sites: bool  # conv outputs and SiLU gates


_PROFILES = {
    "tensorrt": _Profile(np.array(0, np.int8), pair_per_consumer=False, cpu_sites=False),
    "cpu": _Profile(np.array(128, np.uint8), pair_per_consumer=True, cpu_sites=True),
}


def _profile(name: str) -> _Profile:
    if name not in _PROFILES:
        raise ConfigError(f"profile: got {name!r}, expected one of {', '.join(PROFILES)}")
    return _PROFILES[name]


def _scale_of(amax: float) -> float:
    # A tensor or channel that is all zeros has no range; any positive scale maps it to 0.
    return (amax if amax > np.finfo(np.float32).tiny else 1.0) / 127.0


def _amax_of(amax: Mapping[str, float], tensor: str) -> float:
    if tensor not in amax:
        raise ModelError(
            f"amax: no value for planned tensor {tensor!r}; expected the "
            "calibration to cover every tensor of plan.activation_tensors"
        )
    value = float(amax[tensor])
    if not math.isfinite(value) or value < 0:
        raise ModelError(
            f"amax: tensor {tensor!r} has amax {value!r}; expected a finite value >= 0"
        )
    return value


def activation_scales(
    plan: QuantPlan, amax: Mapping[str, float], profile: str = "tensorrt"
) -> dict[str, float]:
    """Scale (amax / 127) of each tensor the profile quantizes; shared groups take the
    largest amax of the group."""
    tensors = plan.calibrated_for(profile)
    values = {t: _amax_of(amax, t) for t in tensors}
    for group in plan.shared_groups:
        top = max(values[t] for t in group)
        values.update({t: top for t in group})
    return {t: _scale_of(v) for t, v in values.items()}


def weight_scales(weight: np.ndarray, axis: int, name: str = "weight") -> np.ndarray:
    """Per-channel symmetric scales: max |w| over everything but `axis`, / 127."""
    if not np.all(np.isfinite(weight)):
        raise ModelError(f"weight {name!r}: has non-finite values; expected finite weights")
    amax = np.abs(np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)).max(axis=1)
    return np.where(amax > np.finfo(np.float32).tiny, amax, 1.0).astype(np.float32) / 127


@dataclass
class _Edits:
    """New nodes and initializers, where they go, and which inputs they rewire."""

    taken: set[str]
    after: dict[str, list[onnx.NodeProto]] = field(default_factory=lambda: defaultdict(list))
    before: dict[str, list[onnx.NodeProto]] = field(default_factory=lambda: defaultdict(list))
    rewire: dict[tuple[str, int], str] = field(default_factory=dict)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    dropped: set[str] = field(default_factory=set)  # float weights now stored as int8

    def fresh(self, base: str) -> str:
        return fresh_name(base, self.taken)

    def constant(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def dequantize(self, codes: str, scale: str, zero: str, output: str, axis: int):
        name = self.fresh(f"{codes}_DequantizeLinear")
        return onnx.helper.make_node(
            "DequantizeLinear", [codes, scale, zero], [output], name=name, axis=axis
        )

    def pair(self, tensor: str, scale: str, zero: str, axis: int | None = None) -> list:
        """Q and DQ nodes for `tensor`; the DQ output is the last node's output."""
        extra = {} if axis is None else {"axis": axis}
        q, dq = self.fresh(f"{tensor}_QuantizeLinear"), self.fresh(f"{tensor}_DequantizeLinear")
        return [
            onnx.helper.make_node("QuantizeLinear", [tensor, scale, zero], [q], name=q, **extra),
            onnx.helper.make_node("DequantizeLinear", [q, scale, zero], [dq], name=dq, **extra),
        ]


def _taken_names(graph: onnx.GraphProto) -> set[str]:
    names = {t.name for t in graph.initializer} | {v.name for v in graph.input}
    for n in graph.node:
        names.update(n.output)
        names.update(n.input)
        names.add(n.name)
    return names


def _quantize_site(
    site: QdqSite, scale: float, prof: _Profile, edits: _Edits, index: GraphIndex
) -> None:
    batches = [[e] for e in site.consumers] if prof.pair_per_consumer else [site.consumers]
    if prof.cpu_sites:
        batches.append(site.cpu_consumers)  # one pair: the conv before must see a single Q
    scale_name = edits.constant(f"{site.tensor}_scale", np.array(scale, np.float32))
    zero_name = edits.constant(f"{site.tensor}_zero_point", prof.zero_point)
    producer = index.producer.get(site.tensor)
    slot = edits.after[node_key(producer) if producer is not None else ""]
    for edges in (b for b in batches if b):
        nodes = edits.pair(site.tensor, scale_name, zero_name)
        slot.extend(nodes)
        edits.rewire.update({edge: nodes[-1].output[0] for edge in edges})


def _quantize_gate(gate: QdqSite, edits: _Edits, index: GraphIndex) -> None:
    """A sigmoid output: fixed range [0, 1] as u8 with zero point 0 (cpu profile only)."""
    scale = edits.constant(f"{gate.tensor}_scale", np.array(1 / 255, np.float32))
    zero = edits.constant(f"{gate.tensor}_zero_point", np.array(0, np.uint8))
    nodes = edits.pair(gate.tensor, scale, zero)
    edits.after[node_key(index.producer[gate.tensor])].extend(nodes)
    edits.rewire.update({edge: nodes[-1].output[0] for edge in gate.cpu_consumers})


def _constant_array(index: GraphIndex, name: str) -> np.ndarray:
    if name in index.initializers:
        return numpy_helper.to_array(index.initializers[name])
    return numpy_helper.to_array(index.constant_nodes[name].attribute[0].t)


def quantize_weight(weight: np.ndarray, axis: int, name: str = "weight"):
    """(int8 codes, per-channel scales): round-half-to-even(w / scale), as QuantizeLinear."""
    scales = weight_scales(weight, axis, name)
    shape = [1] * weight.ndim
    shape[axis] = scales.size
    codes = np.clip(np.rint(weight / scales.reshape(shape)), -128, 127).astype(np.int8)
    return codes, scales


def _float_weight(op: QuantizedOp, index: GraphIndex) -> np.ndarray:
    weight = _constant_array(index, op.weight)
    if weight.dtype != np.float32:
        raise ModelError(
            f"weight {op.weight!r} of {op.name!r}: dtype {weight.dtype}; "
            "expected float32 (quantize the FP32 model, not an FP16 one)"
        )
    return weight


def _weight_pair(op: QuantizedOp, index: GraphIndex, edits: _Edits) -> None:
    """weights="float": the float initializer behind a per-channel Q/DQ pair."""
    scales = weight_scales(_float_weight(op, index), op.weight_axis, op.weight)
    scale = edits.constant(f"{op.weight}_scale", scales)
    zero = edits.constant(f"{op.weight}_zero_point", np.zeros(scales.shape, np.int8))
    nodes = edits.pair(op.weight, scale, zero, axis=op.weight_axis)
    edits.before[op.key].extend(nodes)
    edits.rewire[(op.key, 1)] = nodes[-1].output[0]


def _owns_weight(weight: str, ops: list[QuantizedOp], index: GraphIndex) -> bool:
    """Whether the quantized ops are the weight's only readers (then int8 replaces it)."""
    ours = {(op.key, 1) for op in ops}
    readers = {(node_key(c), i) for c, i in index.consumers.get(weight, ())}
    return readers <= ours and weight not in index.outputs and len(
        {op.weight_axis for op in ops}
    ) == 1


def _int8_weight(weight: str, ops: list[QuantizedOp], index: GraphIndex, edits: _Edits):
    """weights="int8": int8 codes behind a DequantizeLinear that takes the weight's name
    (so the consumers stay as they are), or a fresh name if something else reads it."""
    owned = _owns_weight(weight, ops, index)
    by_axis: dict[int, list[QuantizedOp]] = defaultdict(list)
    for op in ops:
        by_axis[op.weight_axis].append(op)
    for axis, users in by_axis.items():
        codes, scales = quantize_weight(_float_weight(users[0], index), axis, weight)
        codes_name = edits.constant(f"{weight}_quantized", codes)
        scale = edits.constant(f"{weight}_scale", scales)
        zero = edits.constant(f"{weight}_zero_point", np.zeros(scales.shape, np.int8))
        output = weight if owned else edits.fresh(f"{weight}_DequantizeLinear")
        edits.before[users[0].key].append(edits.dequantize(codes_name, scale, zero, output, axis))
        edits.rewire.update({(op.key, 1): output for op in users})
    if owned:
        edits.dropped.add(weight)


def _quantize_weights(plan: QuantPlan, index: GraphIndex, edits: _Edits, fmt: str) -> None:
    if fmt == "float":
        for op in plan.ops:
            _weight_pair(op, index, edits)
        return
    by_weight: dict[str, list[QuantizedOp]] = defaultdict(list)
    for op in plan.ops:  # graph order: the first reader gets the DequantizeLinear
        by_weight[op.weight].append(op)
    for weight, ops in by_weight.items():
        _int8_weight(weight, ops, index, edits)


def _apply(graph: onnx.GraphProto, edits: _Edits) -> None:
    nodes = list(edits.after.get("", []))
    for node in graph.node:
        key = node_key(node)
        if node.op_type == "Constant" and key in edits.dropped:
            continue
        for i in range(len(node.input)):
            node.input[i] = edits.rewire.get((key, i), node.input[i])
        nodes += [*edits.before.get(key, []), node, *edits.after.get(key, [])]
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if t.name not in edits.dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept + edits.initializers)
    inputs = [i for i in graph.input if i.name not in edits.dropped]  # IR < 4 weight inputs
    del graph.input[:]
    graph.input.extend(inputs)


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _at_least_opset13(model: onnx.ModelProto) -> onnx.ModelProto:
    version = _default_opset(model)
    if version >= MIN_OPSET:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    try:
        return version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:  # the converter raises bare RuntimeErrors per unsupported op
        raise ModelError(
            f"model opset {version}: conversion to {MIN_OPSET} failed ({exc}); "
            f"expected an opset >= {MIN_OPSET} export"
        ) from exc


def _check_plan(plan: QuantPlan, index: GraphIndex) -> None:
    for op in plan.ops:
        node = index.by_key.get(op.key)
        if node is None or node.input[0] != op.activation or node.input[1] != op.weight:
            raise ModelError(
                f"plan: node {op.name!r} is not in this model as planned; "
                "expected the plan of this very model (plan_quantization)"
            )
    edges = [e for s in plan.sites + plan.gates for e in s.consumers + s.cpu_consumers]
    missing = [e for e in edges if e[0] not in index.by_key]
    if missing:
        raise ModelError(
            f"plan: consumer {missing[0][0]!r} is not in this model; expected "
            "the plan of this very model"
        )


def write_qdq(
    model: onnx.ModelProto,
    plan: QuantPlan,
    amax: Mapping[str, float],
    *,
    profile: str = "tensorrt",
    weights: str = "int8",
) -> onnx.ModelProto:
    """A copy of `model` (opset >= 13) with Q/DQ where `plan` says, scales from `amax`.

    weights: "int8" (int8 initializers + DequantizeLinear, the default) or "float" (the
    float initializer + QuantizeLinear/DequantizeLinear, for TensorRT 8.x).
    Raises ConfigError for an unknown profile or weight format and ModelError for a
    missing or invalid amax, a plan made for another model, or non-float32 weights. The
    result passes onnx.checker, stays topologically sorted and keeps the graph inputs and
    outputs (dynamic batch).
    """
    prof = _profile(profile)
    if weights not in WEIGHT_FORMATS:
        raise ConfigError(
            f"weights: got {weights!r}, expected one of {', '.join(WEIGHT_FORMATS)}"
        )
    out = _at_least_opset13(model)
    index = GraphIndex(out.graph)
    _check_plan(plan, index)
    scales = activation_scales(plan, amax, profile)
    edits = _Edits(_taken_names(out.graph))
    for site in plan.sites:
        if site.tensor in scales:
            _quantize_site(site, scales[site.tensor], prof, edits, index)
    for gate in plan.gates if prof.cpu_sites else ():
        _quantize_gate(gate, edits, index)
    _quantize_weights(plan, index, edits, weights)
    _apply(out.graph, edits)
    onnx.checker.check_model(out)
    return out


def quantized_tensor_set(
    model: onnx.ModelProto, *, activations_only: bool = False
) -> frozenset[str]:
    """Original tensors that carry a QuantizeLinear -> DequantizeLinear pair in `model`,
    and weights stored quantized (the output of a DequantizeLinear reading a constant,
    which write_qdq names after the float weight it replaces).

    Weights are included unless `activations_only`.
    """
    index = GraphIndex(model.graph)
    found, weights = set(), set()
    for node in index.nodes:
        if node.op_type == "QuantizeLinear" and any(
            c.op_type == "DequantizeLinear" for c, _ in index.consumers[node.output[0]]
        ):
            (weights if index.is_constant(node.input[0]) else found).add(node.input[0])
        elif node.op_type == "DequantizeLinear" and index.is_constant(node.input[0]):
            weights.add(node.output[0])
    return frozenset(found if activations_only else found | weights)
