"""What a model file tells about its outputs before it runs: the layout its outputs are
in, how many classes it predicts, and the input size a baked decode grid fixes.

Read from the ONNX graph (shapes after ONNX shape inference, NMS ops' score inputs,
baked grid constants) and its metadata (num_classes / nc / names, imgsz), so that a
mismatch is refused once, before any variant is built.
"""

from __future__ import annotations

import ast
import json
from collections import deque
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from bench.eval.layouts import LAYOUTS

_CLASS_KEYS = ("num_classes", "nc")
_ARGMAX_OPS = ("ArgMax", "ReduceMax", "TopK")
_UPSTREAM_LIMIT = 64  # nodes walked back from an NMS op's scores to its class max
SMALLEST_STRIDE = 8  # YOLO's first detection level (P3), for a baked grid's input size


@dataclass(frozen=True)
class ClassCount:
    """A class count and where it was read (for messages)."""

    count: int
    source: str


def shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Every tensor's dims after shape inference (None where a dim stays unknown)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # a plugin op (EfficientNMS_TRT) or a malformed graph: the dims given
        inferred = model
    graph = inferred.graph
    found: dict[str, list[int | None]] = {}
    for info in [*graph.value_info, *graph.input, *graph.output]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            found[info.name] = [d.dim_value if d.HasField("dim_value") else None
                                for d in info.type.tensor_type.shape.dim]
    for init in graph.initializer:
        found[init.name] = list(init.dims)
    return found


def _placeholder(dims: list[int | None], elem_type: int) -> np.ndarray | None:
    dims = [1 if k == 0 and not d else d for k, d in enumerate(dims)]  # a dynamic batch (or N)
    if not dims or any(d is None or d < 1 for d in dims):
        return None
    dtype = helper.tensor_dtype_to_np_dtype(elem_type) if elem_type else np.float32
    return np.zeros(dims, dtype=dtype)


def output_placeholders(model: onnx.ModelProto, dims: dict[str, list[int | None]]
                        ) -> dict[str, np.ndarray] | None:
    """Zero arrays shaped like the graph's outputs, or None when a dim is not static."""
    arrays = {}
    for out in model.graph.output:
        arr = _placeholder(dims.get(out.name, []), out.type.tensor_type.elem_type)
        if arr is None:
            return None
        arrays[out.name] = arr
    return arrays


UNKNOWN = "unknown"


def layout_of(model: onnx.ModelProto, dims: dict[str, list[int | None]]) -> tuple[str, int | None]:
    """The registered layout of the graph's outputs ('' when the dims are not static, so it
    cannot be told before running; UNKNOWN when no registered layout fits) and the class
    count their shapes tell (None after NMS)."""
    arrays = output_placeholders(model, dims)
    return ("", None) if arrays is None else layout_of_outputs(arrays)


def layout_of_outputs(arrays: dict[str, np.ndarray]) -> tuple[str, int | None]:
    """layout_of for actual output arrays (one inference's)."""
    for layout in LAYOUTS.values():
        names = layout.matches(arrays, None)
        if names:
            return layout.name, layout.num_classes(arrays, tuple(names))
    return UNKNOWN, None


def metadata_classes(model: onnx.ModelProto) -> ClassCount | None:
    """num_classes / nc, else the length of names (a JSON list or dict, or a Python dict
    literal as Ultralytics writes it), from the model's metadata_props."""
    meta = {p.key: p.value for p in model.metadata_props}
    for key in _CLASS_KEYS:
        if key in meta and meta[key].strip().isdigit() and int(meta[key]) > 0:
            return ClassCount(int(meta[key]), f"metadata {key}={meta[key]}")
    if "names" in meta:
        names = _parse(meta["names"])
        if isinstance(names, (list, dict)) and names:
            return ClassCount(len(names), f"metadata names ({len(names)} entries)")
    return None


def _parse(text: str) -> object:
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    return None


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def _axis(node: onnx.NodeProto, rank: int) -> int:
    for attr in node.attribute:
        if attr.name in ("axis", "axes"):
            value = attr.i if attr.type == onnx.AttributeProto.INT else attr.ints[0]
            return value % rank
    return rank - 1


def _class_max_upstream(model, dims, start: str) -> int | None:
    """The class count at the ArgMax / ReduceMax that feeds an NMS op's scores (YOLOv7's
    --max-wh export: the best class per box, offset by class, into one NMS)."""
    producers, queue, seen = _producers(model), deque([start]), set()
    while queue and len(seen) < _UPSTREAM_LIMIT:
        node = producers.get(queue.popleft())
        if node is None or node.output[0] in seen:
            continue
        seen.add(node.output[0])
        if node.op_type in _ARGMAX_OPS and node.op_type != "TopK":
            shape = dims.get(node.input[0]) or []
            count = shape[_axis(node, len(shape))] if shape else None
            if count:
                return count
        queue.extend(i for i in node.input if i)
    return None


def nms_classes(model: onnx.ModelProto, dims: dict[str, list[int | None]]) -> ClassCount | None:
    """The class count an NMS op inside the graph sees: EfficientNMS_TRT-style plugins take
    scores [B, N, C]; NonMaxSuppression takes [B, C, N] (C = 1 after a class max)."""
    for node in model.graph.node:
        if len(node.input) < 2:
            continue
        scores = dims.get(node.input[1]) or []
        if node.op_type.endswith("_TRT") and "NMS" in node.op_type and len(scores) == 3:
            if scores[2]:
                return ClassCount(scores[2], f"{node.op_type} scores {scores}")
        if node.op_type == "NonMaxSuppression" and len(scores) == 3:
            if scores[1] and scores[1] > 1:
                return ClassCount(scores[1], f"NonMaxSuppression scores {scores}")
            count = _class_max_upstream(model, dims, node.input[1])
            if count:
                return ClassCount(count, f"the class max before NonMaxSuppression ({count})")
    return None


def _constants(model: onnx.ModelProto):
    yield from model.graph.initializer
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    yield attr.t


def baked_grids(model: onnx.ModelProto) -> list[int]:
    """Sides of the decode grids baked as constants [1, na, ny, nx, 2] (YOLOv5/v7 --grid
    exported with dynamic H/W), largest first; [] when none."""
    sides = set()
    for tensor in _constants(model):
        d = list(tensor.dims)
        if len(d) == 5 and d[0] == 1 and d[4] == 2 and d[2] == d[3] and d[2] > 1:
            sides.add(d[2])
    return sorted(sides, reverse=True)


def baked_imgsz(model: onnx.ModelProto) -> int | None:
    """The input size the baked grids fix (largest side x the smallest stride, when every
    level halves the one before), else None."""
    sides = baked_grids(model)
    if not sides or any(a != 2 * b for a, b in zip(sides, sides[1:], strict=False)):
        return None
    return sides[0] * SMALLEST_STRIDE


def metadata_imgsz(model: onnx.ModelProto) -> int | None:
    """imgsz from the metadata ("320", or "[320, 320]" as Ultralytics writes it), if square."""
    meta = {p.key: p.value for p in model.metadata_props}
    value = _parse(meta.get("imgsz", ""))
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, list) and len(value) == 2 and value[0] == value[1] and \
            isinstance(value[0], int) and value[0] > 0:
        return value[0]
    return None


