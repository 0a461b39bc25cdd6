"""A canonical fingerprint of an ONNX model: what it computes, not how the file was saved.

The artifact cache keys every artifact by the source model. Keying by the file's bytes
made a tool that only annotates the model (shape inference adding value_info, as NVIDIA
ModelOpt does in place; a new producer string; a doc string) invalidate every artifact.
The fingerprint hashes the graph and the weights with those annotations removed:

- ignored: value_info (in every graph), doc_string (everywhere), producer_name and
  producer_version, the model's domain and model_version, graph names, the shapes
  declared for graph outputs (their names and element types are kept), and metadata_props
  other than the keys the harness reads (HARNESS_METADATA);
- kept: ir_version, opset imports, functions, every node (op, domain, name, inputs,
  outputs, attributes), graph inputs with their shapes, initializers (weights, whether
  stored inside the file or as external data), and the harness's metadata keys.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
from onnx import numpy_helper

from bench.errors import ModelError

FINGERPRINT_VERSION = "onnx-canonical-v1"
# metadata_props keys the project's exporter writes and the harness may decode with.
HARNESS_METADATA = frozenset({"layout", "strides", "imgsz", "num_classes", "category_ids",
                              "names"})
_MEMO: dict[tuple[str, int, int], str] = {}


def model_fingerprint(path: str | Path) -> str:
    """sha256 hex of the model's canonical form; memoised on (path, size, mtime)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelError(f"model {path}: cannot read it ({exc.strerror or exc})") from None
    if path.is_dir():
        raise ModelError(f"model {path}: is a directory; expected an ONNX file")
    if stat.st_size == 0:
        raise ModelError(f"model {path}: empty file; expected an ONNX model")
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _MEMO:
        from bench.onnx_file import load_model

        _MEMO[memo] = model_proto_fingerprint(load_model(path))
    return _MEMO[memo]


def model_proto_fingerprint(model: onnx.ModelProto) -> str:
    """The fingerprint of a loaded model (external data already loaded). Modifies model."""
    canonicalise(model)
    digest = hashlib.sha256(FINGERPRINT_VERSION.encode())
    weights = list(model.graph.initializer)
    for tensor in weights:  # one at a time: no 2 GB protobuf limit, no big copy
        blob = tensor.SerializeToString(deterministic=True)
        digest.update(len(blob).to_bytes(8, "little"))
        digest.update(blob)
    del model.graph.initializer[:]
    digest.update(b"|graph|")
    digest.update(model.SerializeToString(deterministic=True))
    model.graph.initializer.extend(weights)
    return digest.hexdigest()


def canonicalise(model: onnx.ModelProto) -> onnx.ModelProto:
    """Strip, in place, everything that does not change what the model computes."""
    for name in ("doc_string", "producer_name", "producer_version", "domain",
                 "model_version"):
        model.ClearField(name)
    kept = sorted((p.key, p.value) for p in model.metadata_props if p.key in HARNESS_METADATA)
    del model.metadata_props[:]
    for key, value in kept:
        model.metadata_props.add(key=key, value=value)
    _strip_graph(model.graph)
    for function in model.functions:
        function.ClearField("doc_string")
        for node in function.node:
            _strip_node(node)
    return model


def _strip_graph(graph: onnx.GraphProto) -> None:
    for name in ("doc_string", "name"):
        graph.ClearField(name)
    del graph.value_info[:]
    for output in graph.output:
        if output.type.HasField("tensor_type"):
            output.type.tensor_type.ClearField("shape")
    for info in [*graph.input, *graph.output]:
        info.ClearField("doc_string")
    for tensor in graph.initializer:
        _canonical_tensor(tensor)
    for node in graph.node:
        _strip_node(node)


def _canonical_tensor(tensor: onnx.TensorProto) -> None:
    """One storage form: raw little-endian bytes inside the message (external data loaded)."""
    for name in ("doc_string", "data_location", "external_data"):
        tensor.ClearField(name)
    if tensor.raw_data or tensor.data_type == onnx.TensorProto.STRING:
        return
    try:  # float_data, int32_data, ...: the same values as raw bytes
        canonical = numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name)
    except Exception:  # an element type numpy cannot hold: hash it as stored
        return
    tensor.CopyFrom(canonical)


def _strip_node(node: onnx.NodeProto) -> None:
    node.ClearField("doc_string")
    for attr in node.attribute:
        attr.ClearField("doc_string")
        if attr.HasField("g"):
            _strip_graph(attr.g)
        for sub in attr.graphs:
            _strip_graph(sub)
