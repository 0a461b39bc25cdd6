"""The PyTorch reference engine on the CPU, against ONNX Runtime on the same ONNX file."""

import importlib.util

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bench.engines.pytorch import TorchEngine, TorchOptions
from bench.errors import ConfigError, EngineUnavailable

HAS_INTERPRETER = importlib.util.find_spec("bench.models.onnx_torch") is not None
needs_interpreter = pytest.mark.skipif(not HAS_INTERPRETER,
                                       reason="bench.models.onnx_torch is not written yet")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def detector_like(path):
    """Conv -> SiLU -> (MaxPool, Conv) -> Concat, and a [B, N, C] head: two outputs."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([0, 12, -1], np.int64), "head_shape")]
    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Sigmoid", ["c1"], ["s1"]),
        helper.make_node("Mul", ["c1", "s1"], ["a1"]),
        helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[2, 2], strides=[1, 1],
                         pads=[0, 0, 1, 1]),
        helper.make_node("Conv", ["a1", "w2"], ["c2"]),
        helper.make_node("Concat", ["p1", "c2"], ["features"], axis=1),
        helper.make_node("Transpose", ["features"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["t", "head_shape"], ["head"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                      ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("head", TensorProto.FLOAT, ["batch", None, 12]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 12, 8, 8])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def ort_outputs(path, batch):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"images": batch}), strict=True))


@needs_interpreter
def test_cpu_outputs_equal_onnxruntime(tmp_path):
    path = detector_like(tmp_path / "tiny.onnx")
    batch = np.random.default_rng(1).random((2, 3, 16, 16), dtype=np.float32)
    expected = ort_outputs(path, batch)
    with TorchEngine(path, device="cpu") as engine:
        outputs = engine.infer(batch)
        assert engine.input_shape == ("batch", 3, 16, 16)
        info = engine.extra_info()
    assert list(outputs) == ["head", "features"]  # graph-output order
    for name, value in expected.items():
        assert outputs[name].dtype == np.float32 and outputs[name].shape == value.shape
        np.testing.assert_allclose(outputs[name], value, rtol=1e-5, atol=1e-5)
    assert info["precision"] == "fp32" and info["device"] == "cpu"
    assert "gpu_compute_ms_median" not in info  # no CUDA events on the CPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_unavailable_reason_here():
    assert TorchEngine.unavailable_reason("cuda") == "CUDA is not available to torch"
    assert TorchEngine.unavailable_reason("cuda:1") == "CUDA is not available to torch"
    with pytest.raises(EngineUnavailable, match="CUDA is not available to torch"):
        TorchEngine("unused.onnx", device="cuda").activate()


def test_device_and_precision_are_checked(tmp_path):
    assert TorchEngine.unavailable_reason("cpu") is None
    assert "expected 'cpu' or 'cuda[:N]'" in TorchEngine.unavailable_reason("tpu")
    with pytest.raises(EngineUnavailable, match="fp16 runs on CUDA only"):
        TorchEngine(tmp_path / "m.onnx", device="cpu",
                    options=TorchOptions(precision="fp16")).activate()
    with pytest.raises(ConfigError, match="'int8'"):
        TorchEngine(tmp_path / "m.onnx", options=TorchOptions(precision="int8")).activate()
    assert TorchEngine(tmp_path / "m.onnx").precision == "fp32"


@needs_interpreter
def test_half_module_runs_half_end_to_end(tmp_path):
    # The fp16 path of the engine (CUDA only there), exercised on the CPU's half kernels.
    from bench.models.onnx_torch import OnnxModule

    path = detector_like(tmp_path / "tiny.onnx")
    batch = np.random.default_rng(2).random((1, 3, 16, 16), dtype=np.float32)
    expected = ort_outputs(path, batch)
    module = OnnxModule(onnx.load(path)).eval().half()
    with torch.inference_mode():
        head, features = module(torch.from_numpy(batch))  # float32 in: cast to the weights
    assert head.dtype == torch.float16 and features.dtype == torch.float16
    np.testing.assert_allclose(features.float().numpy(), expected["features"], atol=2e-2)
    np.testing.assert_allclose(head.float().numpy(), expected["head"], atol=2e-2)
