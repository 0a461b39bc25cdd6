"""Export a YOLOv7-family model to ONNX in the official ``--grid`` layout.

input ``images`` [B,3,H,W] float32 RGB in [0,1]; output ``output`` [B,N,5+C]: centre x, y,
w, h in input pixels, sigmoid objectness, sigmoid class scores. Batch is dynamic, or fixed
(``batch=1`` is what the official exporter writes by default).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import torch
from onnx import numpy_helper
from torch import nn

from bench.errors import ConfigError, ModelError
from bench.models.fuse import fuse

INPUT_NAME = "images"
OUTPUT_NAME = "output"
LAYOUT = "yolov7-grid"


def export_onnx(model: nn.Module, path: str | Path, imgsz: int, opset: int = 17,
                metadata: dict[str, str] | None = None, batch: int | None = None) -> Path:
    """Fuse ``model`` (on a copy), export it to ``path`` and check the graph.

    ``batch``: None for a dynamic batch dimension, else the fixed batch size of the graph.

    The graph carries no Identity node between an initializer and its consumers (some
    ONNX consumers, e.g. quantizers, expect Conv weights and biases to be initializers).
    ``metadata`` lands in the model's metadata_props beside arch, imgsz, strides, layout.
    """
    if not (isinstance(imgsz, int) and imgsz > 0 and imgsz % 32 == 0):
        raise ConfigError(f"imgsz {imgsz!r}: expected a positive multiple of 32")
    path = Path(path)
    if not path.parent.is_dir():
        raise ModelError(f"ONNX output {path}: folder {path.parent} does not exist")
    if batch is not None and not (isinstance(batch, int) and batch > 0):
        raise ConfigError(f"batch {batch!r}: expected a positive integer or None (dynamic)")
    fused = fuse(model)
    _trace_to_onnx(fused, path, imgsz, opset, batch)
    graph = onnx.load(str(path))
    inline_initializer_identities(graph)
    _name_output_dims(graph, fused.model[-1], imgsz)
    _set_metadata(graph, _model_metadata(fused, imgsz) | (metadata or {}))
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, str(path))
    return path


def _trace_to_onnx(model: nn.Module, path: Path, imgsz: int, opset: int,
                   batch: int | None) -> None:
    dummy = torch.zeros(batch or 1, 3, imgsz, imgsz)
    dynamic = None if batch else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-derived constants
        try:
            torch.onnx.export(model, (dummy,), str(path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset,
                              dynamic_axes=dynamic,
                              do_constant_folding=True, dynamo=False)
        except OSError as exc:
            raise ModelError(f"ONNX output {path}: cannot write ({exc.strerror})") from exc


def fused_from_onnx(model: onnx.ModelProto, arch: str, num_classes: int,
                    width: float) -> nn.Module:
    """The fused torch model whose weights are those of an ONNX this exporter wrote.

    The exporter keeps the fused state_dict's names for the initializers, so the weights of
    the shipped default (which exists only as ONNX) load back for a re-export.
    """
    from bench.models.yolov7 import build_model

    fused = fuse(build_model(arch, num_classes=num_classes, width=width))
    weights = {t.name: t for t in model.graph.initializer}
    state = fused.state_dict()
    for name, _ in fused.named_parameters():
        if name not in weights:
            raise ModelError(f"ONNX initializer '{name}' missing; expected a model exported "
                             f"by bench.models.export from a {arch} of width {width}")
        value = torch.from_numpy(numpy_helper.to_array(weights[name]).copy())
        if value.shape != state[name].shape:
            raise ModelError(f"ONNX initializer '{name}' has shape {tuple(value.shape)}; "
                             f"expected {tuple(state[name].shape)}")
        state[name] = value
    fused.load_state_dict(state)
    return fused


def inline_initializer_identities(model: onnx.ModelProto) -> int:
    """Replace every ``Identity(initializer)`` by a distinct copy of that initializer.

    The legacy exporter deduplicates equal constants (e.g. the zero biases of several
    convs) into one initializer read through Identity nodes. Returns how many it removed.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    doomed = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in inits
              and n.output[0] not in outputs]
    for node in doomed:
        copy = numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]),
                                       node.output[0])
        graph.initializer.append(copy)
        graph.node.remove(node)
    _drop_unused_initializers(graph)
    return len(doomed)


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    used |= {o.name for o in graph.output}
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)


def _name_output_dims(model: onnx.ModelProto, head: nn.Module, imgsz: int) -> None:
    # The exporter leaves N and 5+C symbolic; they are fixed by imgsz and the head.
    boxes = head.na * sum((imgsz // int(s)) ** 2 for s in head.stride)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    dims[1].dim_value, dims[2].dim_value = boxes, head.no


def _model_metadata(model: nn.Module, imgsz: int) -> dict[str, str]:
    head = model.model[-1]
    return {"layout": LAYOUT, "imgsz": str(imgsz), "num_classes": str(head.nc),
            "arch": str(getattr(model, "arch", "")), "width": str(getattr(model, "width", "")),
            "strides": json.dumps(list(head.stride))}


def _set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in sorted(values.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
