from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from bench.engines.ort import OrtEngine
from bench.errors import ModelError


def _conv_model(path: Path, input_shape=("batch", 3, 8, 8)) -> Path:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 3, 1, 1], np.ones(6, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["out"])], "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


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


def test_the_latency_session_stops_spinning_when_a_call_returns(tmp_path: Path):
    # What lets the latency pass interleave sessions without pausing (settle_pause_s 0):
    # infer()'s session spins only during a call; the accuracy streams never spin.
    engine = OrtEngine(_conv_model(tmp_path / "m.onnx"), options=OrtEngine.Options(threads=2))
    engine.activate()
    options = engine._session.get_session_options()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert OrtEngine.settle_pause_s == 0.0
    engine.infer_streams(2)
    for session in {id(s): s for s in engine._streams[(2, 1)]}.values():
        stream = session.get_session_options()
        assert stream.get_session_config_entry("session.intra_op.allow_spinning") == "0"
