"""Write a Q/DQ ONNX model from a :class:`QuantPlan` and per-tensor activation amax.

Weights are written as the float initializer followed by QuantizeLinear/DequantizeLinear
with axis = output channel, not as an int8 initializer with a DequantizeLinear: TensorRT 8.x
(JetPack 5) only accepts float weights quantized by a Q layer (TensorRT 10 takes both), and
ONNX Runtime folds the constant Q into an int8 initializer when it loads the session, so
both runtimes fuse the same file. The price is a file as large as the FP32 one.

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
MIN_OPSET = 13  # per-axis QuantizeLinear/DequantizeLinear


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

    def fresh(self, base: str) -> str:
        return fresh_name(base, self.taken)

    def constant(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

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


def _quantize_weight(op: QuantizedOp, index: GraphIndex, edits: _Edits) -> None:
    weight = _constant_array(index, op.weight)
    if weight.dtype != np.float32:
        raise ModelError(
            f"weight {op.weight!r} of {op.name!r}: dtype {weight.dtype}; "
            "expected float32 (quantize the FP32 model, not an FP16 one)"
        )
    scales = weight_scales(weight, op.weight_axis, op.weight)
    scale = edits.constant(f"{op.weight}_scale", scales)
    zero = edits.constant(f"{op.weight}_zero_point", np.zeros(scales.shape, np.int8))
    nodes = edits.pair(op.weight, scale, zero, axis=op.weight_axis)
    edits.before[op.key].extend(nodes)
    edits.rewire[(op.key, 1)] = nodes[-1].output[0]


def _apply(graph: onnx.GraphProto, edits: _Edits) -> None:
    nodes = list(edits.after.get("", []))
    for node in graph.node:
        key = node_key(node)
        for i in range(len(node.input)):
            node.input[i] = edits.rewire.get((key, i), node.input[i])
        nodes += [*edits.before.get(key, []), node, *edits.after.get(key, [])]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(edits.initializers)


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
    model: onnx.ModelProto, plan: QuantPlan, amax: Mapping[str, float], *, profile: str = "tensorrt"
) -> onnx.ModelProto:
    """A copy of `model` (opset >= 13) with Q/DQ where `plan` says, scales from `amax`.

    Raises ConfigError for an unknown profile and ModelError for a missing or invalid amax,
    a plan made for another model, or non-float32 weights. The result passes onnx.checker,
    stays topologically sorted and keeps the graph inputs and outputs (dynamic batch).
    """
    prof = _profile(profile)
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
    for op in plan.ops:
        _quantize_weight(op, index, edits)
    _apply(out.graph, edits)
    onnx.checker.check_model(out)
    return out


def quantized_tensor_set(
    model: onnx.ModelProto, *, activations_only: bool = False
) -> frozenset[str]:
    """Original tensors that carry a QuantizeLinear -> DequantizeLinear pair in `model`.

    Weights (initializers or Constant outputs) are included unless `activations_only`.
    """
    index = GraphIndex(model.graph)
    found = set()
    for node in index.nodes:
        if node.op_type == "QuantizeLinear" and any(
            c.op_type == "DequantizeLinear" for c, _ in index.consumers[node.output[0]]
        ):
            found.add(node.input[0])
    if activations_only:
        found = {t for t in found if not index.is_constant(t)}
    return frozenset(found)
