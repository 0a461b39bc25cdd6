"""What an op builder knows about its node at construction time, and tensor conversions."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from bench.errors import ModelError

# A kernel takes the node's inputs positionally (None for an omitted optional input) and
# returns one tensor or a tuple with one tensor per requested output.
Kernel = Callable[..., "torch.Tensor | tuple[torch.Tensor, ...]"]

TORCH_DTYPES: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.UINT16: torch.uint16,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.UINT32: torch.uint32,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.UINT64: torch.uint64,
    onnx.TensorProto.BOOL: torch.bool,
}


def torch_dtype(onnx_type: int, where: str) -> torch.dtype:
    """The torch dtype of an ONNX element type, or ModelError naming `where`."""
    if onnx_type not in TORCH_DTYPES:
        name = onnx.TensorProto.DataType.Name(onnx_type)
        raise ModelError(f"{where}: element type {name} is not supported; expected a float, "
                         "integer or bool type")
    return TORCH_DTYPES[onnx_type]


def tensor_from_proto(proto: onnx.TensorProto, where: str) -> torch.Tensor:
    """A torch copy of an ONNX TensorProto (initializer or attribute)."""
    dtype = torch_dtype(proto.data_type, where)
    array = numpy_helper.to_array(proto)
    if dtype == torch.bfloat16:  # numpy has no bfloat16; go through its bit pattern
        return torch.from_numpy(np.ascontiguousarray(array).view(np.uint16).copy()).view(dtype)
    return torch.from_numpy(np.array(array, copy=True))


def to_ints(value: torch.Tensor | Sequence[int]) -> list[int]:
    """A shape-like tensor (or list) as a list of Python ints."""
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in value]


def attribute_values(node: onnx.NodeProto) -> dict[str, Any]:
    """The node's attributes as Python values (strings decoded, tensors as torch)."""
    values: dict[str, Any] = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = tensor_from_proto(value, f"attribute {attr.name} of node '{node.name}'")
        values[attr.name] = value
    return values


@dataclass(frozen=True)
class NodeContext:
    """One node, its opset, its attributes and the graph facts its builder may need."""

    node: onnx.NodeProto
    opset: int
    known: Mapping[str, torch.Tensor] = field(default_factory=dict)
    consumers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, node: onnx.NodeProto, opset: int, known: Mapping[str, torch.Tensor],
           consumers: Mapping[str, tuple[str, ...]]) -> NodeContext:
        return cls(node, opset, known, consumers, attribute_values(node))

    @property
    def label(self) -> str:
        return f"{self.node.op_type} node '{self.node.name}'"

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def input_name(self, index: int) -> str:
        inputs = self.node.input
        return inputs[index] if index < len(inputs) else ""

    def const(self, index: int) -> torch.Tensor | None:
        """The value of input `index` when it is an initializer or Constant, else None."""
        return self.known.get(self.input_name(index))

    def error(self, problem: str) -> ModelError:
        return ModelError(f"{self.label}: {problem}")

    def require_outputs(self, most: int) -> None:
        """Refuse a node whose graph reads outputs this interpreter does not produce.

        An extra output that is named but read by nothing (an exporter's unused MaxPool
        indices, say) is fine: it is simply never produced.
        """
        used = [i for i, name in enumerate(self.node.output)
                if name and self.consumers.get(name)]
        if used and max(used) >= most:
            raise self.error(f"output {max(used)} is used but only the first {most} output(s) "
                             "are supported")

    def one_of(self, name: str, value: Any, allowed: Sequence[Any]) -> Any:
        if value not in allowed:
            raise self.error(f"attribute {name}={value!r} is not supported; expected one of "
                             f"{list(allowed)}")
        return value
