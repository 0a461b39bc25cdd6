"""Build tiny ONNX graphs and compare OnnxModule with ONNX Runtime (CPU) on them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from bench.models.onnx_torch import OnnxModule

FLOAT = TensorProto.FLOAT


def make_model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    ir = 11 if opset >= 24 else 10 if opset >= 21 else 8
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=ir)
    return model


def single_input_model(nodes, shape: Sequence, outputs: dict[str, int], inits=(), opset=17,
                       input_type=FLOAT) -> onnx.ModelProto:
    """A graph with input x of shape [N, *shape] and the given output names/types."""
    x = helper.make_tensor_value_info("x", input_type, ["N", *shape])
    outs = [helper.make_tensor_value_info(n, t, None) for n, t in outputs.items()]
    return make_model(nodes, [x], outs, inits, opset)


def init(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def run_both(model: onnx.ModelProto, x: np.ndarray, module: OnnxModule | None = None):
    expected = session(model).run(None, {model.graph.input[0].name: x})
    module = module or OnnxModule(model)
    with torch.no_grad():
        got = module(torch.from_numpy(x))
    return expected, [g.numpy() for g in got]


def assert_same(expected, got, atol=1e-5, names=None) -> None:
    assert len(expected) == len(got)
    for i, (e, g) in enumerate(zip(expected, got)):
        label = names[i] if names else i
        assert g.shape == e.shape, f"output {label}: shape {g.shape} != {e.shape}"
        assert g.dtype == e.dtype, f"output {label}: dtype {g.dtype} != {e.dtype}"
        if np.issubdtype(e.dtype, np.floating):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=atol, err_msg=f"output {label}")
        else:
            np.testing.assert_array_equal(g, e, err_msg=f"output {label}")


def compare_batches(model: onnx.ModelProto, shape: Sequence[int], batches=(1, 3), seed=0,
                    scale=1.0, dtype=np.float32) -> None:
    """Same results from ORT and OnnxModule at each batch size, through one module."""
    module = OnnxModule(model)
    rng = np.random.default_rng(seed)
    names = [o.name for o in model.graph.output]
    for batch in batches:
        x = (rng.standard_normal((batch, *shape)) * scale).astype(dtype)
        expected, got = run_both(model, x, module)
        assert_same(expected, got, names=names)
