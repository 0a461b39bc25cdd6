"""The execution plan of an ONNX graph: ordered steps, and which of them only do shape work.

Exporters wrap a detector's head in shape arithmetic (Shape -> Gather -> Unsqueeze ->
Concat -> Reshape, grids from Range), whose values depend on the input's shape alone. The
`ShapeWork` analysis finds those steps so a module can compute them once per input shape.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import onnx
import torch

from bench.errors import ModelError
from bench.models.onnx_ops import Kernel, NodeContext, build_kernel, elementwise


@dataclass(frozen=True)
class Step:
    """One node of the plan: its kernel, the tensors it reads and writes and then frees."""

    label: str
    op_type: str
    inputs: tuple[str, ...]  # "" for an omitted optional input
    outputs: tuple[str, ...]
    kernel: Kernel
    release: tuple[str, ...]


def build_steps(nodes: list[onnx.NodeProto], opset: int, known: Mapping[str, torch.Tensor],
                consumers: Mapping[str, tuple[str, ...]], available: set[str],
                keep: set[str]) -> tuple[Step, ...]:
    """Kernels in topological order; `keep` names tensors never freed during a run."""
    ordered = _topological(nodes, available)
    steps = []
    for node, release in zip(ordered, _release_lists(ordered, keep)):
        kernel = build_kernel(NodeContext.of(node, opset, known, consumers))
        label = f"{node.op_type} node '{node.name}'"
        steps.append(Step(label, node.op_type, tuple(node.input), tuple(node.output), kernel,
                          release))
    return tuple(steps)


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Kahn's order, keeping the file's order among ready nodes; ModelError on a gap."""
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    waits: list[set[int]] = []
    for node in nodes:
        missing = [x for x in node.input if x and x not in available and x not in producer]
        if missing:
            raise ModelError(f"{node.op_type} node '{node.name}': input '{missing[0]}' is "
                             "produced by no node, initializer or graph input")
        waits.append({producer[x] for x in node.input if x in producer})
    return [nodes[i] for i in _kahn(waits)]


def _kahn(waits: list[set[int]]) -> list[int]:
    followers: dict[int, list[int]] = {}
    for i, deps in enumerate(waits):
        for d in deps:
            followers.setdefault(d, []).append(i)
    pending = [len(deps) for deps in waits]
    ready = [i for i, n in enumerate(pending) if n == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for f in followers.get(i, ()):
            pending[f] -= 1
            if pending[f] == 0:
                heapq.heappush(ready, f)
    if len(order) != len(waits):
        raise ModelError(f"ONNX graph has a cycle through {len(waits) - len(order)} node(s); "
                         "expected an acyclic graph")
    return order


def _release_lists(nodes: list[onnx.NodeProto], keep: set[str]) -> list[tuple[str, ...]]:
    """Per node, the activations no later node reads (so a run can drop them)."""
    last: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for name in (*node.input, *node.output):
            if name and name not in keep:
                last[name] = i
    lists: list[list[str]] = [[] for _ in nodes]
    for name, i in last.items():
        lists[i].append(name)
    return [tuple(names) for names in lists]


# Ops whose output *shape* may depend on the *values* of every input.
_VALUE_SHAPED = {"Range", "ConstantOfShape", "NonZero"}
# Ops whose output shape follows from their inputs' shapes and attributes alone. Any other
# op also needs the values of its inputs after the first (a Reshape's shape, Slice's ends).
_SHAPE_PURE = {
    *elementwise.OPS, "Conv", "ConvTranspose", "BatchNormalization", "InstanceNormalization",
    "LayerNormalization", "MatMul", "Gemm", "Einsum", "Softmax", "LogSoftmax", "ArgMax",
    "ArgMin", "GlobalAveragePool", "GlobalMaxPool", "MaxPool", "AveragePool", "Concat",
    "Transpose", "Flatten", "Gather", "GatherElements", "ScatterND", "ScatterElements",
    "Identity", "Dropout", "QuantizeLinear", "DequantizeLinear", "Shape", "Size",
}
# Inputs that kernels read as Python numbers (shapes, axes, sizes), so they may live on the CPU.
_NUMBER_SLOTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Unsqueeze": (1,),
    "Squeeze": (1,), "Split": (1,), "Pad": (1, 2, 3), "TopK": (1,), "Resize": (1, 2, 3),
    "Upsample": (1,), "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,),
    "ReduceMin": (1,), "ReduceProd": (1,), "ReduceL1": (1,), "ReduceL2": (1,),
    "ReduceSumSquare": (1,),
}


@dataclass(frozen=True)
class ShapeWork:
    """Which steps compute values that depend only on the input's shape.

    static[i]: step i reads only constants and shape-derived values (and no tapped tensor);
    frontier: static outputs that a non-static step or the graph output reads;
    host_frontier: the frontier tensors read only as Python numbers (safe to keep on CPU).
    """

    static: tuple[bool, ...]
    frontier: frozenset[str]
    host_frontier: frozenset[str]
    internal: frozenset[str]  # static outputs outside the frontier (absent on cached runs)

    @classmethod
    def of(cls, steps: tuple[Step, ...], constants: Iterable[str], weights: Iterable[str],
           input_name: str, outputs: Iterable[str], tapped: Iterable[str]) -> ShapeWork:
        """`constants` never change between runs; `weights` may, but keep their shapes."""
        static = _static_steps(steps, set(constants), set(weights), input_name, set(tapped))
        made = {o for step, s in zip(steps, static) if s for o in step.outputs if o}
        readers = _dynamic_readers(steps, static)
        frontier = {n for n in made if n in readers or n in set(outputs)}
        host = {n for n in frontier if n not in set(outputs)
                and all(slot in _NUMBER_SLOTS.get(op, ()) for op, slot in readers.get(n, ()))}
        return cls(tuple(static), frozenset(frontier), frozenset(host),
                   frozenset(made - frontier))


def _static_steps(steps: tuple[Step, ...], constants: set[str], weights: set[str],
                  input_name: str, tapped: set[str]) -> list[bool]:
    shape_valued = set(constants)  # values fixed once the input's shape is known
    shape_fixed = {input_name, *constants, *weights}  # shapes fixed by the input's shape
    static = []
    for step in steps:
        names = [n for n in step.inputs if n]
        is_static = not (set(names) & tapped) and (
            all(n in shape_valued for n in names)
            or (step.op_type in ("Shape", "Size") and names[0] in shape_fixed))
        static.append(is_static)
        outs = [o for o in step.outputs if o]
        if is_static:
            shape_valued.update(outs)
        if is_static or _shape_follows(step, names, shape_fixed, shape_valued):
            shape_fixed.update(outs)
    return static


def _shape_follows(step: Step, names: list[str], shape_fixed: set[str],
                   shape_valued: set[str]) -> bool:
    """True when the step's output shape follows from its inputs' shapes and constants."""
    if step.op_type in _VALUE_SHAPED or not all(n in shape_fixed for n in names):
        return False
    return step.op_type in _SHAPE_PURE or all(n in shape_valued for n in names[1:])


def _dynamic_readers(steps: tuple[Step, ...], static: list[bool]
                     ) -> dict[str, list[tuple[str, int]]]:
    readers: dict[str, list[tuple[str, int]]] = {}
    for step, is_static in zip(steps, static):
        if not is_static:
            for slot, name in enumerate(step.inputs):
                if name:
                    readers.setdefault(name, []).append((step.op_type, slot))
    return readers
