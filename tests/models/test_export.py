"""ONNX export in the official --grid layout, checked with onnx.checker and ONNX Runtime."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bench.errors import ConfigError, ModelError
from bench.models.export import export_onnx, inline_initializer_identities
from bench.models.yolov7 import build_model

torch.set_num_threads(1)


def _session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("yolov7-tiny", num_classes=3, width=0.25).eval()
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    return model, export_onnx(model, path, imgsz=128, metadata={"names": '["a","b","c"]'})


def test_onnx_runtime_matches_pytorch(exported):
    model, path = exported
    x = torch.rand(2, 3, 128, 128)
    got = _session(path).run(["output"], {"images": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == want.shape == (2, 3 * (16 * 16 + 8 * 8 + 4 * 4), 8)
    assert np.abs(got[..., :4] - want[..., :4]).max() <= 1e-3
    assert np.abs(got[..., 4:] - want[..., 4:]).max() <= 1e-5


def test_interface_is_the_official_grid_layout(exported):
    _, path = exported
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version == 17
    (inp,), (out,) = graph.graph.input, graph.graph.output
    assert inp.name == "images" and out.name == "output"
    assert inp.type.tensor_type.elem_type == TensorProto.FLOAT
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert in_dims == ["batch", 3, 128, 128] and out_dims == ["batch", 1008, 8]
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["layout"] == "yolov7-grid" and meta["imgsz"] == "128"
    assert json.loads(meta["strides"]) == [8.0, 16.0, 32.0] and meta["names"] == '["a","b","c"]'


def test_batch_is_dynamic(exported):
    _, path = exported
    x = np.random.default_rng(0).random((3, 3, 128, 128), dtype=np.float32)
    assert _session(path).run(None, {"images": x})[0].shape == (3, 1008, 8)


def test_model_is_fused_and_conv_params_are_initializers(exported):
    _, path = exported
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert "BatchNormalization" not in ops and "Identity" not in ops
    inits = {t.name for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 58
    assert all(name in inits for n in convs for name in n.input[1:])


def test_equal_zero_biases_do_not_become_identity_nodes(tmp_path):
    # With zero BN shifts every fused bias is zero; the exporter would share one
    # initializer between convs of equal width through Identity nodes.
    model = build_model("yolov7-tiny", num_classes=2, width=0.25).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.zeros_(m.bias)
    graph = onnx.load(str(export_onnx(model, tmp_path / "zero.onnx", imgsz=64)))
    assert not [n for n in graph.graph.node if n.op_type == "Identity"]
    names = [t.name for t in graph.graph.initializer]
    assert len(names) == len(set(names))


def _shared_bias_graph() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(2, np.float32), "b")
    w2 = numpy_helper.from_array(np.full((2, 2, 1, 1), 0.5, np.float32), "w2")
    nodes = [helper.make_node("Identity", ["b"], ["b1"]),
             helper.make_node("Identity", ["b"], ["b2"]),
             helper.make_node("Conv", ["x", "w", "b1"], ["y1"]),
             helper.make_node("Conv", ["y1", "w2", "b2"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])
    graph = helper.make_graph(nodes, "g", [x], [y], [w, b, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_inline_initializer_identities_on_a_hand_built_graph(tmp_path):
    model = _shared_bias_graph()
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    onnx.save(model, str(tmp_path / "before.onnx"))
    before = _session(tmp_path / "before.onnx").run(None, {"x": x})[0]
    assert inline_initializer_identities(model) == 2
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Conv", "Conv"]
    assert sorted(t.name for t in model.graph.initializer) == ["b1", "b2", "w", "w2"]
    onnx.save(model, str(tmp_path / "after.onnx"))
    np.testing.assert_array_equal(_session(tmp_path / "after.onnx").run(None, {"x": x})[0], before)


def test_imgsz_must_be_a_multiple_of_32(tmp_path):
    with pytest.raises(ConfigError, match="imgsz 100"):
        export_onnx(build_model("yolov7-tiny", width=0.25), tmp_path / "m.onnx", imgsz=100)


def test_unwritable_destination_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="missing-dir"):
        export_onnx(build_model("yolov7-tiny", width=0.25), tmp_path / "missing-dir" / "m.onnx",
                    imgsz=64)


def test_export_leaves_the_model_unfused(exported):
    model, _ = exported
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
