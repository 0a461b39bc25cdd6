"""Where Q/DQ go in a YOLO ONNX graph, following TensorRT's explicit-quantization rules.

The rules, and where they come from:

1. Quantize the inputs of weighted ops -- Conv, ConvTranspose, Gemm: the activation input
   per tensor, the weight per output channel. Their outputs stay float in TensorRT's
   placement: TensorRT fuses the activation (SiLU, LeakyRelu) into the conv and the next
   Q into its epilogue. (TensorRT developer guide, "Explicit Quantization" > "Q/DQ Layer
   Placement Recommendations": quantize all inputs of weighted operations; by default do not
   quantize their outputs.)
2. Concat: all inputs and the output share one scale when the Concat feeds a quantized op.
   TensorRT removes the Concat by letting each producer write into one INT8 buffer, which
   only works with one scale; otherwise it inserts reformats. (NVIDIA-AI-IOT/yolo_deepstream
   yolov7_qat, doc/Guidance_of_QAT_performance_optimization.md and quantization/rules.py:
   the quantizers of convs reading a Concat's inputs are tied to the quantizer of the conv
   reading its output.)
3. MaxPool, and nearest Resize/Upsample: input and output share one scale. A DQ commutes
   with them, so TensorRT runs them in INT8 when the Q before and the Q after agree (same
   sources: "the DQ crosses the MaxPool ... restrict the scale of the Q/DQ to be the same";
   TensorRT guide, Q/DQ propagation through commuting layers).
4. A residual Add whose two inputs come from nodes (convs, activations) and whose output
   feeds a quantized op gets Q/DQ on both inputs, with one scale, so TensorRT fuses it with
   the conv as an INT8 element-wise op (TensorRT guide: quantize the residual input;
   yolov7_qat quantize.py QuantAdd, both inputs tied to the block's input quantizer).
5. A group op (rules 2-4) is quantized only if its output reaches a quantized op, directly
   or through other quantized group ops; a Concat of shape values, or the decode's Concat,
   never is.

ONNX Runtime's CPU provider additionally needs a Q right after each quantized conv to fuse
DQ -> Conv -> Q into QLinearConv (without it the conv runs in float on dequantized weights,
slower than FP32). The plan therefore also lists each quantized conv's output as a site that
only the "cpu" profile of :func:`bench.quant.qdq.write_qdq` quantizes, and the Sigmoid
output of each SiLU (x * sigmoid(x)) that follows such a conv: with it, ONNX Runtime runs
the SiLU as QLinearSigmoid + QLinearMul (measured on YOLOv7 at 320 px, 1 thread: 425 ->
321 ms). A sigmoid's range is [0, 1] by definition, so these "gate" sites need no amax.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import onnx

from bench.errors import ConfigError, ModelError

WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm"})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
_SAME_SCALE_OPS = frozenset({"MaxPool", "Resize", "Upsample"})

Edge = tuple[str, int]  # (consumer node key, input index)


def node_key(node: onnx.NodeProto) -> str:
    """A node's identity in a plan: its first output (unique in SSA form, unlike names)."""
    return node.output[0]


def node_label(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


@dataclass(frozen=True)
class KeepFloat:
    """Which nodes stay float.

    first_conv: the conv(s) with no weighted op upstream, whose input is the raw image. With
        3 input channels INT8 buys little speed there, while its error reaches every later
        layer; keeping it float is the usual practice.
    head: the detect head's output convs, found automatically as the weighted ops whose
        outputs reach a graph output only through non-weighted ops.
    decode: everything downstream of the head convs (Reshape/Transpose, Sigmoid, grid add,
        anchor mul, Pow, Concat). It must never be quantized: its last Concat joins box
        coordinates in pixels (0..640) with objectness and class scores (0..1), so one
        shared scale has a step of ~640/127 = 5 px and rounds every score to 0 -- all
        confidences collapse and mAP with them. The placement rules never put Q/DQ there
        on their own (nothing downstream is quantized); this flag is the guard that keeps
        it so even when the head convs are quantized or a graph grows a Gemm there.
    nodes: node names (or first-output names) or fnmatch globs, e.g. "/model.77/*"; each
        must match at least one node.
    """

    first_conv: bool = True
    head: bool = True
    decode: bool = True
    nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.nodes, str):  # a list from a config file is welcome too
            object.__setattr__(self, "nodes", tuple(self.nodes))
        if isinstance(self.nodes, str) or not all(isinstance(p, str) for p in self.nodes):
            raise ConfigError(
                f"KeepFloat.nodes: got {self.nodes!r}, expected a tuple of "
                "node names or glob patterns"
            )


@dataclass(frozen=True)
class QuantizedOp:
    """A weighted op whose activation input and weight are quantized."""

    name: str
    key: str
    op_type: str
    activation: str
    weight: str
    weight_axis: int
    output: str


@dataclass(frozen=True)
class QdqSite:
    """An activation tensor that carries Q/DQ, and which consumer inputs read it dequantized.

    consumers: read the DQ in every profile (TensorRT's placement);
    cpu_consumers: read it only in the "cpu" profile (consumers of a quantized conv's output).
    """

    tensor: str
    consumers: tuple[Edge, ...]
    cpu_consumers: tuple[Edge, ...] = ()


@dataclass(frozen=True)
class QuantPlan:
    """The result of :func:`plan_quantization`; tensors and groups are in graph order."""

    ops: tuple[QuantizedOp, ...]
    sites: tuple[QdqSite, ...]
    shared_groups: tuple[tuple[str, ...], ...]
    kept_float: tuple[str, ...]
    first_convs: tuple[str, ...]
    head_convs: tuple[str, ...]
    gates: tuple[QdqSite, ...] = ()  # cpu profile only; fixed range [0, 1], no amax

    def __post_init__(self) -> None:
        known = set(self.activation_tensors)
        stray = [t for g in self.shared_groups for t in g if t not in known]
        if stray:
            raise ModelError(f"QuantPlan: shared-group tensor {stray[0]!r} has no Q/DQ site")

    @property
    def activation_tensors(self) -> tuple[str, ...]:
        """Every activation tensor that needs an amax (what calibration must observe)."""
        return tuple(s.tensor for s in self.sites)

    @property
    def quantized_nodes(self) -> tuple[str, ...]:
        return tuple(op.name for op in self.ops)

    def tensors_for(self, profile: str) -> tuple[str, ...]:
        """The activation tensors that carry Q/DQ in that profile ("tensorrt" or "cpu")."""
        if profile == "cpu":
            return self.activation_tensors + tuple(g.tensor for g in self.gates)
        return self.calibrated_for(profile)

    def calibrated_for(self, profile: str) -> tuple[str, ...]:
        """The tensors whose amax that profile uses."""
        if profile == "cpu":
            return self.activation_tensors
        return tuple(s.tensor for s in self.sites if s.consumers)


class GraphIndex:
    """Producers, consumers and constants of a graph, keyed by tensor name."""

    def __init__(self, graph: onnx.GraphProto):
        self.nodes = list(graph.node)
        self.initializers = {t.name: t for t in graph.initializer}
        self.constant_nodes = {n.output[0]: n for n in self.nodes if n.op_type == "Constant"}
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        for n in self.nodes:
            for i, t in enumerate(n.input):
                if t:
                    self.consumers[t].append((n, i))
        self.outputs = {o.name for o in graph.output}
        self.position = {node_key(n): i for i, n in enumerate(self.nodes)}
        self.by_key = {node_key(n): n for n in self.nodes}

    def is_constant(self, name: str) -> bool:
        return name in self.initializers or name in self.constant_nodes

    def children(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        return [c for o in node.output for c, _ in self.consumers.get(o, ())]

    def parents(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        return [self.producer[t] for t in node.input if t in self.producer]

    def order_of(self, tensor: str) -> tuple[int, str]:
        """Sort key in graph order: where its producer sits; graph inputs come first."""
        node = self.producer.get(tensor)
        return (-1 if node is None else self.position[node_key(node)]), tensor


def _weight_axis(node: onnx.NodeProto) -> int | None:
    """The output-channel axis of the weight, or None when per-channel does not apply."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":  # weight [C_in, C_out/group, k...]
        return 1 if attrs.get("group", 1) == 1 else None
    return 0 if attrs.get("transB", 0) else 1  # Gemm: B is [N, K] when transposed


def _is_quantizable(node: onnx.NodeProto, index: GraphIndex) -> bool:
    return (
        node.op_type in WEIGHTED_OPS
        and len(node.input) > 1
        and index.is_constant(node.input[1])
        and _weight_axis(node) is not None
    )


def _downstream(index: GraphIndex, hit: Callable[[onnx.NodeProto], bool]) -> set[str]:
    """Keys of nodes from which a node satisfying `hit` is reachable (strictly below)."""
    found: set[str] = set()
    for node in reversed(index.nodes):
        if any(hit(c) or node_key(c) in found for c in index.children(node)):
            found.add(node_key(node))
    return found


def _upstream(index: GraphIndex, hit: Callable[[onnx.NodeProto], bool]) -> set[str]:
    """Keys of nodes below a node satisfying `hit` (strictly)."""
    found: set[str] = set()
    for node in index.nodes:
        if any(hit(p) or node_key(p) in found for p in index.parents(node)):
            found.add(node_key(node))
    return found


def _reaches_output(index: GraphIndex) -> set[str]:
    found: set[str] = set()
    for node in reversed(index.nodes):
        if any(o in index.outputs for o in node.output) or any(
            node_key(c) in found for c in index.children(node)
        ):
            found.add(node_key(node))
    return found


@dataclass(frozen=True)
class _Structure:
    weighted: tuple[str, ...]
    first: tuple[str, ...]
    head: tuple[str, ...]
    decode: tuple[str, ...]


def _structure(index: GraphIndex) -> _Structure:
    def quantizable(n: onnx.NodeProto) -> bool:
        return _is_quantizable(n, index)

    weighted = [node_key(n) for n in index.nodes if quantizable(n)]
    above, below = _upstream(index, quantizable), _downstream(index, quantizable)
    to_output = _reaches_output(index)
    head = [k for k in weighted if k not in below and k in to_output]
    head_set = set(head)
    decode = _upstream(index, lambda n: node_key(n) in head_set)
    return _Structure(
        tuple(weighted),
        tuple(k for k in weighted if k not in above),
        tuple(head),
        tuple(k for k in index.position if k in decode),
    )


def _explicit(patterns: tuple[str, ...], index: GraphIndex) -> set[str]:
    keys: set[str] = set()
    for pattern in patterns:
        hits = {
            node_key(n)
            for n in index.nodes
            if fnmatch.fnmatchcase(n.name, pattern) or fnmatch.fnmatchcase(node_key(n), pattern)
        }
        if not hits:
            raise ConfigError(
                f"KeepFloat.nodes: pattern {pattern!r} matches no node in the "
                "graph; expected a node name or a glob such as '/model.77/*'"
            )
        keys |= hits
    return keys


def _kept_float(keep: KeepFloat, s: _Structure, index: GraphIndex) -> set[str]:
    kept = _explicit(keep.nodes, index)
    for flag, keys in ((keep.first_conv, s.first), (keep.head, s.head), (keep.decode, s.decode)):
        if flag:
            kept |= set(keys)
    return kept


def _data_inputs(node: onnx.NodeProto) -> tuple[int, ...]:
    if node.op_type == "Concat":
        return tuple(range(len(node.input)))
    return (0, 1) if node.op_type == "Add" else (0,)


def _is_nearest(node: onnx.NodeProto) -> bool:
    for a in node.attribute:
        if a.name == "mode":
            return a.s in (b"nearest", b"")
    return True  # ONNX default mode of Resize and Upsample


def _groupable(node: onnx.NodeProto, index: GraphIndex, kept: set[str]) -> bool:
    """A Concat/MaxPool/Resize/Upsample/Add that may run in INT8 between quantized ops."""
    if node_key(node) in kept or node.op_type not in _SAME_SCALE_OPS | {"Concat", "Add"}:
        return False
    inputs = [node.input[i] for i in _data_inputs(node) if i < len(node.input)]
    if not inputs or any(not t or index.is_constant(t) for t in inputs):
        return False
    if node.op_type == "Add":  # residual: both inputs computed by nodes, no graph input
        return len(node.input) == 2 and all(t in index.producer for t in inputs)
    return node.op_type == "Concat" or _is_nearest(node)


def _active_group_ops(index: GraphIndex, quantized: set[str], kept: set[str]) -> set[str]:
    """Group ops whose output reaches a quantized op, directly or through active group ops."""
    active: set[str] = set()

    def read_quantized(tensor: str) -> bool:
        return any(
            (node_key(c) in quantized and i == 0)
            or (node_key(c) in active and i in _data_inputs(c))
            for c, i in index.consumers.get(tensor, ())
        )

    for node in reversed(index.nodes):
        if _groupable(node, index, kept) and read_quantized(node.output[0]):
            active.add(node_key(node))
    return active


def _trt_edges(index: GraphIndex, quantized: set[str], active: set[str]) -> dict[str, list]:
    edges: dict[str, list[Edge]] = defaultdict(list)
    for node in index.nodes:
        key = node_key(node)
        wanted = (0,) if key in quantized else _data_inputs(node) if key in active else ()
        for i in wanted:
            if i < len(node.input) and node.input[i]:
                edges[node.input[i]].append((key, i))
    return edges


def _cpu_edges(op: QuantizedOp, index: GraphIndex, kept: set[str], taken: list[Edge]):
    """Consumers of a quantized conv's output that the cpu profile dequantizes, if any."""
    readers = index.consumers.get(op.output, [])
    if op.output in index.outputs or any(node_key(c) in kept for c, _ in readers):
        return ()  # never pull a Q into the float decode or a kept-float node
    return tuple((node_key(c), i) for c, i in readers if (node_key(c), i) not in taken)


def _shared_groups(index: GraphIndex, active: set[str]) -> list[list[str]]:
    parent: dict[str, str] = {}

    def find(t: str) -> str:
        while parent.setdefault(t, t) != t:
            t = parent[t]
        return t

    for key in active:
        node = index.by_key[key]
        members = [node.input[i] for i in _data_inputs(node)]
        if node.op_type != "Add":
            members.append(node.output[0])
        for t in members[1:]:
            parent[find(t)] = find(members[0])
    groups: dict[str, list[str]] = defaultdict(list)
    for t in parent:
        groups[find(t)].append(t)
    return [g for g in groups.values() if len(g) > 1]


def _quantized_op(node: onnx.NodeProto) -> QuantizedOp:
    return QuantizedOp(
        node_label(node),
        node_key(node),
        node.op_type,
        node.input[0],
        node.input[1],
        _weight_axis(node),
        node.output[0],
    )


def _check_float_model(model: onnx.ModelProto) -> None:
    qdq = [n for n in model.graph.node if n.op_type in QDQ_OPS]
    if qdq:
        raise ModelError(
            f"plan_quantization: model already has Q/DQ (node "
            f"{node_label(qdq[0])!r}); expected a float ONNX model"
        )


def _sites(index: GraphIndex, ops: list[QuantizedOp], active: set[str], kept: set[str]):
    trt = _trt_edges(index, {op.key for op in ops}, active)
    cpu = {op.output: _cpu_edges(op, index, kept, trt.get(op.output, [])) for op in ops}
    tensors = sorted({*trt, *(t for t, e in cpu.items() if e)}, key=index.order_of)
    return tuple(QdqSite(t, tuple(trt.get(t, ())), cpu.get(t, ())) for t in tensors)


def _gates(index: GraphIndex, sites: tuple[QdqSite, ...], kept: set[str]):
    """Sigmoid outputs of SiLU gates reading a quantized conv's output (cpu profile)."""
    conv_outputs = {s.tensor for s in sites if s.cpu_consumers}
    gates = []
    for node in index.nodes:
        out = node.output[0]
        readers = [(node_key(c), i) for c, i in index.consumers.get(out, ())]
        if (
            node.op_type == "Sigmoid"
            and node.input[0] in conv_outputs
            and readers
            and out not in index.outputs
            and not any(k in kept for k, _ in readers)
        ):
            gates.append(QdqSite(out, (), tuple(readers)))
    return tuple(gates)


def _ordered_groups(index: GraphIndex, active: set[str]) -> tuple[tuple[str, ...], ...]:
    groups = [sorted(g, key=index.order_of) for g in _shared_groups(index, active)]
    return tuple(tuple(g) for g in sorted(groups, key=lambda g: index.order_of(g[0])))


def plan_quantization(model: onnx.ModelProto, *, keep_float: KeepFloat | None = None) -> QuantPlan:
    """Decide which ops and tensors carry Q/DQ (see the module docstring for the rules).

    Raises ModelError for a model that already holds Q/DQ or has nothing to quantize, and
    ConfigError for a KeepFloat pattern that matches no node.
    """
    _check_float_model(model)
    index = GraphIndex(model.graph)
    structure = _structure(index)
    kept = _kept_float(keep_float or KeepFloat(), structure, index)
    ops = [_quantized_op(index.by_key[k]) for k in structure.weighted if k not in kept]
    if not ops:
        raise ModelError(
            f"plan_quantization: graph {model.graph.name!r} has no Conv/Gemm "
            "with constant weights left to quantize; expected at least one"
        )
    active = _active_group_ops(index, {op.key for op in ops}, kept)
    label = {node_key(n): node_label(n) for n in index.nodes}
    sites = _sites(index, ops, active, kept)
    return QuantPlan(
        tuple(ops),
        sites,
        _ordered_groups(index, active),
        tuple(label[k] for k in index.position if k in kept),
        tuple(label[k] for k in structure.first),
        tuple(label[k] for k in structure.head),
        _gates(index, sites, kept),
    )


@dataclass(frozen=True)
class QuantGroup:
    """A unit that a sensitivity analysis quantizes or leaves float as a whole.

    kind "conv": one quantized Conv/Gemm with its input and weight Q/DQ;
    kind "shared": one shared-scale group of the plan (a Concat, MaxPool, Resize or
    residual Add and the tensors tied to one scale).
    nodes: what to pass to KeepFloat.nodes to leave the group float -- the conv itself,
    or the group's ops and every quantized op reading one of its tensors (so none of the
    group's tensors keeps a Q/DQ).
    """

    name: str
    kind: str
    nodes: tuple[str, ...]
    tensors: tuple[str, ...]


def _group_ops(group: tuple[str, ...], index: GraphIndex) -> list[onnx.NodeProto]:
    members = set(group)
    found = []
    for node in index.nodes:
        if node.op_type not in _SAME_SCALE_OPS | {"Concat", "Add"}:
            continue
        inputs = [node.input[i] for i in _data_inputs(node) if i < len(node.input)]
        tied = node.op_type == "Add" and all(t in members for t in inputs)
        if tied or (node.op_type != "Add" and node.output[0] in members):
            found.append(node)
    return found


def quant_groups(model: onnx.ModelProto, plan: QuantPlan) -> tuple[QuantGroup, ...]:
    """The plan's quantization groups, in graph order: one per quantized op, then one per
    shared-scale group."""
    index = GraphIndex(model.graph)
    groups = [QuantGroup(op.name, "conv", (op.name,), (op.activation, op.weight))
              for op in plan.ops]
    for shared in plan.shared_groups:
        ops = _group_ops(shared, index)
        readers = [op.name for op in plan.ops if op.activation in shared]
        name = node_label(ops[-1]) if ops else shared[-1]
        groups.append(QuantGroup(f"shared:{name}", "shared",
                                 tuple(dict.fromkeys([*map(node_label, ops), *readers])),
                                 shared))
    return tuple(groups)


def keep_float_nodes(groups: tuple[QuantGroup, ...] | list[QuantGroup]) -> tuple[str, ...]:
    """The KeepFloat.nodes that leave all of `groups` float (duplicates removed)."""
    return tuple(dict.fromkeys(n for g in groups for n in g.nodes))
