"""FP16 conversion of an FP32 ONNX model, keeping its inputs and outputs float32.

Which nodes run in half precision is decided by data lineage: a node that consumes (through
any chain of nodes) the model input runs in FP16; a node fed only by constants or by
Shape/Size (shape arithmetic, e.g. Resize scales computed from a shape) keeps FP32, as do
the `block_ops`. Every float32 tensor then has one dtype after conversion and every use
wants one; where they differ a Cast is inserted (or, for a constant, a converted copy).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from bench.errors import ModelError
from bench.quant.naming import fresh_name

FLOAT = TensorProto.FLOAT
HALF = TensorProto.FLOAT16

# Ops kept in FP32: float-only inputs (NonMaxSuppression), quantization, or an output dtype
# set by an attribute rather than by the inputs.
DEFAULT_BLOCK_OPS = frozenset(
    {
        "NonMaxSuppression",
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "ConstantOfShape",
        "EyeLike",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Range",
    }
)

# ONNX Runtime's CPU provider (1.32) has no float16 LeakyRelu kernel for opset 16 and later:
# it expands the op's function body (Less, Where, Mul), after which no Conv is fused with
# its activation, and the default's FP16 graph ran at 0.37x of FP32 (55 Where nodes, no
# fused Conv in its optimised graph). Run in FP32 between two Casts, LeakyRelu gives the
# FP16 result of an FP32 alpha (the product of a half and a float is exact in float32, then
# rounded once to half), every other tensor stays half, and the graph runs at FP32's speed.
ORT_CPU_BLOCK_OPS = DEFAULT_BLOCK_OPS | {"LeakyRelu"}


def block_ops_for(backend: str, device: str) -> frozenset[str]:
    """The ops an FP16 artifact for this backend keeps FP32 (see ORT_CPU_BLOCK_OPS)."""
    if backend == "onnxruntime" and device == "cpu":
        return ORT_CPU_BLOCK_OPS
    return DEFAULT_BLOCK_OPS


# Inputs that stay float32 when their node runs in FP16 (Resize's scales must be float32;
# its roi is kept so as well, to leave coordinate maths exact).
_FP32_INPUTS = {"Resize": frozenset({1, 2}), "Upsample": frozenset({1})}
# Their outputs describe a tensor's shape, not its values: data lineage stops there.
_SHAPE_OPS = frozenset({"Shape", "Size"})
_HALF_MAX = float(np.finfo(np.float16).max)


def convert_to_fp16(
    model: onnx.ModelProto,
    *,
    keep_io_float32: bool = True,
    block_ops: set[str] | frozenset[str] = DEFAULT_BLOCK_OPS,
) -> onnx.ModelProto:
    """An FP16 copy of `model` (the input is not modified), checked and shape-inferred.

    Float32 weights and Constant values become float16 (clipped to +-65504); with
    keep_io_float32 the graph inputs and outputs stay float32 through Cast nodes.
    """
    _reject_subgraphs(model)
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    floats = _float_tensors(model)
    _Converter(converted.graph, floats, keep_io_float32, frozenset(block_ops)).run()
    return _checked(converted)


def _reject_subgraphs(model: onnx.ModelProto) -> None:
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise ModelError(
                    f"node {node.name or node.op_type!r} ({node.op_type}): has a subgraph, "
                    "expected a flat graph for FP16 conversion"
                )


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of the float32 tensors of the model, types from shape inference."""
    try:
        graph = shape_inference.infer_shapes(model).graph
    except Exception as err:
        raise ModelError(f"shape inference failed before FP16 conversion: {err}") from err
    infos = [*graph.input, *graph.value_info, *graph.output]
    floats = {v.name for v in infos if v.type.tensor_type.elem_type == FLOAT}
    floats |= {t.name for t in graph.initializer if t.data_type == FLOAT}
    constants = [n for n in graph.node if n.op_type == "Constant"]
    floats |= {n.output[0] for n in constants if _is_float_constant(n)}
    return floats


@dataclass(frozen=True)
class _Use:
    node: int  # index into the original node list
    position: int
    want: int


class _Converter:
    """Rewrites one graph in place; see the module docstring for the rules."""

    def __init__(
        self, graph: onnx.GraphProto, floats: set[str], keep_io: bool, block_ops: frozenset[str]
    ) -> None:
        self.graph, self.floats, self.keep_io, self.block_ops = graph, floats, keep_io, block_ops
        self.nodes = list(graph.node)
        self.names = _all_names(graph)
        self.initializers = {t.name: t for t in graph.initializer}
        self.constant_nodes = {
            n.output[0]: i for i, n in enumerate(self.nodes) if n.op_type == "Constant"
        }
        self.producer = {out: i for i, n in enumerate(self.nodes) for out in n.output}
        self.have: dict[str, int] = {}  # float32 tensor -> its dtype after conversion
        self.fp32_constants: dict[str, TensorProto] = {}  # originals of converted constants
        self.after: dict[int, list[onnx.NodeProto]] = defaultdict(list)  # node -> Casts
        self.variants: dict[tuple[str, int], str] = {}

    def run(self) -> None:
        self.half_nodes = self._half_nodes()
        uses = self._uses()
        self._decide_dtypes(uses)
        self._convert_constants()
        self._cast_graph_outputs()
        for use in uses:
            self._connect(use)
        self._retarget_casts()
        self._rebuild_node_list()
        self._update_types()

    # --- analysis -------------------------------------------------------------------
    def _half_nodes(self) -> set[int]:
        data = {i.name for i in self.graph.input if i.name not in self.initializers}
        half = set()
        for index, node in enumerate(self.nodes):
            if not any(name in data for name in node.input):
                continue
            if node.op_type not in _SHAPE_OPS:
                data.update(node.output)
            if node.op_type not in self.block_ops and node.domain in ("", "ai.onnx"):
                half.add(index)
        return half

    def _uses(self) -> list[_Use]:
        uses = []
        for index, node in enumerate(self.nodes):
            fp32_inputs = _FP32_INPUTS.get(node.op_type, frozenset())
            for position, name in enumerate(node.input):
                if name in self.floats:
                    half = index in self.half_nodes and position not in fp32_inputs
                    uses.append(_Use(index, position, HALF if half else FLOAT))
        return uses

    def _io_dtype(self) -> int:
        return FLOAT if self.keep_io else HALF

    def _decide_dtypes(self, uses: list[_Use]) -> None:
        wanted = defaultdict(set)
        for use in uses:
            wanted[self.nodes[use.node].input[use.position]].add(use.want)
        outputs = {o.name for o in self.graph.output}
        for name in self.floats:
            self.have[name] = self._dtype_of(name, wanted[name], outputs)

    def _dtype_of(self, name: str, wanted: set[int], outputs: set[str]) -> int:
        if name in self.initializers or name in self.constant_nodes:
            if name in outputs:
                return self._io_dtype()
            return HALF if HALF in wanted else FLOAT
        if name not in self.producer:  # a graph input
            return self._io_dtype()
        return HALF if self.producer[name] in self.half_nodes else FLOAT

    # --- rewriting ------------------------------------------------------------------
    def _convert_constants(self) -> None:
        for name, tensor in self.initializers.items():
            if self.have.get(name) == HALF:
                self.fp32_constants[name] = _copy(tensor)
                tensor.CopyFrom(_to_half(tensor))
        for name, index in self.constant_nodes.items():
            if self.have.get(name) == HALF:
                value = _copy(_constant_value(self.nodes[index]))
                self.fp32_constants[name] = value
                _set_constant_value(self.nodes[index], _to_half(value))

    def _cast_graph_outputs(self) -> None:
        """A graph output produced in the wrong dtype: its producer writes an alias, and a
        Cast writes the output's own name, so the model's output names do not change."""
        for output in self.graph.output:
            name, want = output.name, self._io_dtype()
            if name not in self.producer or name in self.constant_nodes:
                continue
            if self.have.get(name, want) == want:
                continue
            alias = self._fresh(f"{name}_{_suffix(self.have[name])}")
            self._rename(name, alias)
            self.have[alias] = self.have[name]
            self.after[self.producer[alias]].append(_cast(alias, name, want))
            self.have[name] = want

    def _rename(self, old: str, new: str) -> None:
        for node in self.nodes:
            for seq in (node.input, node.output):
                for k, name in enumerate(seq):
                    if name == old:
                        seq[k] = new
        self.producer[new] = self.producer.pop(old)

    def _connect(self, use: _Use) -> None:
        node = self.nodes[use.node]
        name = node.input[use.position]
        if self.have[name] != use.want:
            node.input[use.position] = self._variant(name, use.want)

    def _variant(self, name: str, dtype: int) -> str:
        key = (name, dtype)
        if key not in self.variants:
            variant = self._fresh(f"{name}_{_suffix(dtype)}")
            self._emit_variant(name, variant, dtype)
            self.have[variant] = dtype
            self.variants[key] = variant
        return self.variants[key]

    def _emit_variant(self, name: str, variant: str, dtype: int) -> None:
        if name in self.initializers or name in self.constant_nodes:
            value = self.fp32_constants.get(name)
            value = _constant_source(self, name) if value is None else value
            value = _to_half(value) if dtype == HALF else _copy(value)
            self.graph.initializer.append(_renamed(value, variant))
        else:
            # A graph input has no producer: its Cast goes first (key -1).
            self.after[self.producer.get(name, -1)].append(_cast(name, variant, dtype))

    def _retarget_casts(self) -> None:
        for index in self.half_nodes:
            node = self.nodes[index]
            if node.op_type == "Cast" and self.have.get(node.output[0]) == HALF:
                for attr in node.attribute:
                    if attr.name == "to" and attr.i == FLOAT:
                        attr.i = HALF

    def _rebuild_node_list(self) -> None:
        ordered = list(self.after[-1])
        for index, node in enumerate(self.nodes):
            ordered.append(node)
            ordered.extend(self.after[index])
        del self.graph.node[:]
        self.graph.node.extend(ordered)

    def _update_types(self) -> None:
        for info in [*self.graph.input, *self.graph.output, *self.graph.value_info]:
            tensor_type = info.type.tensor_type
            if tensor_type.elem_type == FLOAT and self.have.get(info.name) == HALF:
                tensor_type.elem_type = HALF

    def _fresh(self, base: str) -> str:
        return fresh_name(base, self.names)


def _constant_source(converter: _Converter, name: str) -> TensorProto:
    """The float32 value of a constant that was not converted (it stays FP32 at home)."""
    if name in converter.initializers:
        return converter.initializers[name]
    return _constant_value(converter.nodes[converter.constant_nodes[name]])


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _suffix(dtype: int) -> str:
    return "fp16" if dtype == HALF else "fp32"


def _cast(source: str, target: str, dtype: int) -> onnx.NodeProto:
    return helper.make_node("Cast", [source], [target], name=f"{target}_cast", to=dtype)


def _copy(tensor: TensorProto) -> TensorProto:
    copied = TensorProto()
    copied.CopyFrom(tensor)
    return copied


def _renamed(tensor: TensorProto, name: str) -> TensorProto:
    renamed = _copy(tensor)
    renamed.name = name
    return renamed


def _to_half(tensor: TensorProto) -> TensorProto:
    values = numpy_helper.to_array(tensor).astype(np.float32)
    half = np.clip(values, -_HALF_MAX, _HALF_MAX).astype(np.float16)
    return numpy_helper.from_array(half, tensor.name)


def _is_float_constant(node: onnx.NodeProto) -> bool:
    for attr in node.attribute:
        if attr.name == "value":
            return attr.t.data_type == FLOAT
        if attr.name in ("value_float", "value_floats"):
            return True
    return False


def _constant_value(node: onnx.NodeProto) -> TensorProto:
    """The float32 value of a Constant node, whichever attribute holds it."""
    for attr in node.attribute:
        if attr.name == "value":
            return attr.t
        if attr.name == "value_float":
            return numpy_helper.from_array(np.array(attr.f, dtype=np.float32), node.output[0])
        if attr.name == "value_floats":
            floats = np.array(list(attr.floats), dtype=np.float32)
            return numpy_helper.from_array(floats, node.output[0])
    raise ModelError(f"Constant node {node.output[0]!r}: no float value attribute")


def _set_constant_value(node: onnx.NodeProto, value: TensorProto) -> None:
    kept = [a for a in node.attribute if a.name not in ("value", "value_float", "value_floats")]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute("value", value)])


def _checked(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        onnx.checker.check_model(model)
        return shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as err:
        raise ModelError(f"FP16 model failed the ONNX checker or shape inference: {err}") from err
