from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from bench.engines.ort import OrtEngine, OrtOptions
from bench.errors import ModelError


def _conv_model(path: Path, input_shape=("batch", 3, 8, 8)) -> Path:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 3, 1, 1], np.ones(6, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["out"])], "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_infer_returns_named_outputs(tmp_path: Path):
    model = _conv_model(tmp_path / "m.onnx")
    with OrtEngine(model, options=OrtOptions(threads=1)) as engine:
        out = engine.infer(np.ones((2, 3, 8, 8), np.float32))
        assert list(out) == ["out"] and out["out"].shape == (2, 2, 8, 8)
        assert np.allclose(out["out"], 3.0)
        assert engine.input_shape == ("batch", 3, 8, 8)
    assert not engine.active


def test_missing_and_corrupt_models_name_the_file(tmp_path: Path):
    with pytest.raises(ModelError, match="missing.onnx: file not found"):
        OrtEngine(tmp_path / "missing.onnx").activate()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ModelError, match="bad.onnx: onnxruntime cannot load it"):
        OrtEngine(bad).activate()


def test_non_4d_input_is_rejected(tmp_path: Path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["out"])], "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    model = tmp_path / "m3.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    with pytest.raises(ModelError, match="expected 4-D"):
        OrtEngine(model).activate()


def test_unavailable_reason_names_the_provider():
    assert OrtEngine.unavailable_reason("cpu") is None
    assert "CUDAExecutionProvider" in OrtEngine.unavailable_reason("cuda")
