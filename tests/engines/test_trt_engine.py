"""The TensorRT engine on a machine without TensorRT or a GPU, and its GPU-free helpers."""

import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.engines.cuda_buffers import (
    MISSING_BINDINGS,
    available_bindings,
    cuda_unavailable_reason,
    load_cuda_backend,
)
from bench.engines.gpu_time import gpu_time_summary
from bench.engines.trt import (
    TrtEngine,
    TrtOptions,
    initial_input_shape,
    onnx_kind_mismatch,
    parse_cuda_device,
    tensorrt_unavailable_reason,
)
from bench.engines.trt_settings import builder_settings
from bench.errors import EngineUnavailable

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
no_trt = pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")


def conv_model(*, qdq: bool = False, half: bool = False) -> onnx.ModelProto:
    dtype = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    weight = np.ones((2, 3, 1, 1), np.float16 if half else np.float32)
    inits = [numpy_helper.from_array(weight, "w")]
    nodes, source = [], "images"
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        source = "dq"
    nodes.append(helper.make_node("Conv", [source, "w"], ["out"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", dtype,
                                                                         [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("out", dtype, [1, 2, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@no_trt
def test_unavailable_reason_is_one_line_naming_tensorrt():
    for device in ("cuda", "cuda:1", "cpu"):
        reason = TrtEngine.unavailable_reason(device)
        assert reason and "tensorrt" in reason and "\n" not in reason
    assert "pip install tensorrt" in TrtEngine.unavailable_reason()
    assert tensorrt_unavailable_reason() == TrtEngine.unavailable_reason("cuda")


@no_trt
def test_activate_raises_engine_unavailable(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(conv_model(), model)
    engine = TrtEngine(model, device="cuda", options=TrtOptions(kind="fp16", cache_dir=tmp_path))
    with pytest.raises(EngineUnavailable, match="tensorrt is not installed"):
        engine.activate()
    assert not engine.active
    with pytest.raises(EngineUnavailable), TrtEngine(model, options=TrtOptions(kind="qdq")):
        pass
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # nothing built or cached


@no_trt
def test_kind_reason_without_tensorrt():
    assert "tensorrt" in TrtEngine.kind_unavailable_reason("trt-implicit", "entropy2")


def test_engine_defaults_to_cuda_and_fp32(tmp_path):
    engine = TrtEngine(tmp_path / "m.onnx")
    assert engine.device == "cuda" and engine.options.kind == "fp32" and not engine.active
    assert engine.extra_info() == {} and engine.device_name() is None


def test_parse_cuda_device():
    assert parse_cuda_device("cuda") == 0
    assert parse_cuda_device("cuda:2") == 2
    for other in ("cpu", "gpu", "cuda:", "cuda:x", "tensorrt"):
        assert parse_cuda_device(other) is None


@pytest.mark.skipif(bool(available_bindings()), reason="a CUDA binding is installed here")
def test_no_cuda_bindings_reason_and_error():
    assert cuda_unavailable_reason() == MISSING_BINDINGS
    assert "pycuda" in MISSING_BINDINGS and "cuda-python" in MISSING_BINDINGS
    with pytest.raises(EngineUnavailable, match="neither pycuda nor cuda-python"):
        load_cuda_backend()
    with pytest.raises(EngineUnavailable, match="pycuda is not installed"):
        load_cuda_backend(prefer="pycuda")


def test_unknown_cuda_backend_is_rejected():
    with pytest.raises(EngineUnavailable, match="'cupy'"):
        load_cuda_backend(prefer="cupy")


def test_onnx_kind_mismatch_checks_the_artifact():
    plain, qdq, half = conv_model(), conv_model(qdq=True), conv_model(half=True)
    assert onnx_kind_mismatch(plain, "fp32") is None
    assert onnx_kind_mismatch(qdq, "qdq") is None
    assert onnx_kind_mismatch(half, "fp16") is None
    assert "no QuantizeLinear" in onnx_kind_mismatch(plain, "qdq")
    assert "no float16 weights" in onnx_kind_mismatch(plain, "fp16")
    assert "has Q/DQ nodes" in onnx_kind_mismatch(qdq, "fp32")


def test_initial_input_shape_uses_profile_opt():
    settings = builder_settings("fp16", "10.3.0", batch=8, max_batch=16, image_size=320)
    assert initial_input_shape((1, 3, 640, 640), settings) == (1, 3, 640, 640)
    assert initial_input_shape((-1, 3, 640, 640), settings) == (8, 3, 640, 640)
    assert initial_input_shape((-1, 3, -1, -1), settings) == (8, 3, 320, 320)


def test_gpu_time_summary():
    assert gpu_time_summary([]) == {}
    summary = gpu_time_summary([3.0, 1.0, 2.0, 10.0])
    assert summary["gpu_compute_ms_median"] == 2.5
    assert summary["gpu_compute_ms_mean"] == 4.0
    assert (summary["gpu_compute_ms_min"], summary["gpu_compute_ms_max"]) == (1.0, 10.0)
    assert summary["gpu_compute_calls"] == 4
