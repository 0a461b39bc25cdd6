"""The TensorRT engine's wiring, run against a stand-in for the `tensorrt` module.

Real TensorRT cannot run on this machine (no GPU), so this stand-in implements the
documented Python API surface the engine uses (Builder, OnnxParser, IBuilderConfig,
Runtime, ICudaEngine named-tensor calls, IExecutionContext.execute_async_v3) over host
memory. It checks our orchestration: cache hit/miss, timing cache, flags applied, buffers
(re)bound per shape, outputs in order, calibrator fed, everything freed. It says nothing
about whether real TensorRT accepts these calls; that needs a GPU run.
"""

import itertools
import json
import sys
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import bench.engines.trt as trt_engine
from bench.engines.cuda_buffers import CudaBackend, DeviceBuffer
from bench.engines.trt import TrtEngine
from bench.errors import ConfigError, EngineUnavailable, InputDataError

MEMORY: dict[int, np.ndarray] = {}
_ADDRESSES = itertools.count(0x1000, 0x1000)


class HostBackend(CudaBackend):
    """CudaBackend over host memory: a device pointer is a key into MEMORY."""

    name = "host-fake"

    def __init__(self):
        self.closed = False

    def device_info(self):
        return "Fake GPU", "8.7"

    @property
    def stream_handle(self):
        return 42

    def alloc(self, nbytes):
        ptr = next(_ADDRESSES)
        MEMORY[ptr] = np.zeros(max(nbytes, 1), np.uint8)
        return DeviceBuffer(ptr, nbytes)

    def pinned(self, shape, dtype):
        return np.empty(shape, dtype)

    def to_device(self, dst, src):
        MEMORY[dst.ptr][: src.nbytes] = np.frombuffer(src.tobytes(), np.uint8)

    def to_host(self, dst, src):
        dst.reshape(-1).view(np.uint8)[:] = MEMORY[src.ptr][: dst.nbytes]

    def new_event(self):
        return {}

    def record(self, event):
        event["t"] = len(event)

    def elapsed_ms(self, start, end):
        return 1.5

    def synchronize(self):
        pass

    def free(self, buffer):
        del MEMORY[buffer.ptr]

    def close(self):
        self.closed = True


def fake_tensorrt(version: str) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.Logger = type("Logger", (), {"WARNING": 2, "VERBOSE": 4, "__init__": lambda s, lvl: None})
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.nptype = lambda dtype: np.float32
    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    if version.startswith(("8.", "10.")):
        trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {})
        trt.IInt8MinMaxCalibrator = type("IInt8MinMaxCalibrator", (), {})
    return trt


class Network:
    def __init__(self, flags):
        self.flags, self.inputs, self.outputs = flags, [], []

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, index):
        return self.inputs[index]


class OnnxParser:
    num_errors = 0

    def __init__(self, network, logger):
        self.network = network

    def parse_from_file(self, path):
        graph = onnx.load(path).graph
        dims = [d.dim_value or -1 for d in graph.input[0].type.tensor_type.shape.dim]
        self.network.inputs = [types.SimpleNamespace(name=graph.input[0].name, shape=dims)]
        self.network.outputs = [o.name for o in graph.output]
        return True


class TimingCache:
    def __init__(self, data):
        self.data = data

    def serialize(self):
        return self.data + b"+timing"


class Config:
    def __init__(self):
        self.flags, self.profiles, self.pool, self.int8_calibrator = [], [], None, None

    def set_memory_pool_limit(self, pool, size):
        self.pool = (pool, size)

    def set_flag(self, flag):
        self.flags.append(flag)

    def create_timing_cache(self, data):
        return TimingCache(bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing = cache

    def get_timing_cache(self):
        return self.timing

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)

    def set_calibration_profile(self, profile):
        self.calibration_profile = profile


class Builder:
    built = 0

    def __init__(self, logger):
        pass

    def create_network(self, flags):
        return Network(flags)

    def create_builder_config(self):
        return Config()

    def create_optimization_profile(self):
        return types.SimpleNamespace(set_shape=lambda name, *s: setattr(self, "shapes", s))

    def build_serialized_network(self, network, config):
        Builder.built += 1
        batches = _drain(config.int8_calibrator) if config.int8_calibrator else 0
        shapes = getattr(self, "shapes", None)
        return json.dumps({"input": network.inputs[0].name, "outputs": network.outputs,
                           "shape": network.inputs[0].shape, "flags": config.flags,
                           "network_flags": network.flags, "pool": config.pool,
                           "profile": shapes, "calibrated_batches": batches}).encode()


def _drain(calibrator):
    assert calibrator.get_batch_size() == 2
    count = 0
    while (pointers := calibrator.get_batch(["images"])) is not None:
        assert MEMORY[pointers[0]].view(np.float32).max() == count  # batch `count` arrived
        count += 1
    return count


class Runtime:
    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, plan):
        try:
            return Engine(json.loads(bytes(plan)))
        except ValueError:
            return None


class Engine:
    def __init__(self, plan):
        self.plan = plan
        self.names = [plan["input"], *plan["outputs"]]

    @property
    def num_io_tensors(self):
        return len(self.names)

    def get_tensor_name(self, index):
        return self.names[index]

    def get_tensor_mode(self, name):
        return "INPUT" if name == self.plan["input"] else "OUTPUT"

    def get_tensor_shape(self, name):
        return self.plan["shape"] if name == self.plan["input"] else [-1]

    def get_tensor_dtype(self, name):
        return "float32"

    def create_execution_context(self):
        return Context(self.plan)


class Context:
    """Computes out = 2 * images and score = per-image sum, over MEMORY."""

    def __init__(self, plan):
        self.plan, self.addresses, self.shape = plan, {}, None

    def set_input_shape(self, name, shape):
        low, _, high = self.plan["profile"] or [self.plan["shape"]] * 3
        self.shape = tuple(shape)
        return all(lo <= s <= hi for lo, s, hi in zip(low, shape, high, strict=True))

    def get_tensor_shape(self, name):
        return {"images": self.shape, "out": self.shape, "score": (self.shape[0], 1)}[name]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def execute_async_v3(self, stream):
        assert stream == 42
        count = int(np.prod(self.shape))
        images = MEMORY[self.addresses["images"]].view(np.float32)[:count].reshape(self.shape)
        results = {"out": 2 * images, "score": images.sum(axis=(1, 2, 3)).reshape(-1, 1)}
        for name, value in results.items():
            MEMORY[self.addresses[name]][: value.nbytes] = np.frombuffer(
                value.astype(np.float32).tobytes(), np.uint8)
        return True


def write_model(path, *, qdq=False):
    inits, nodes, source = [], [], "images"
    if qdq:
        inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                 numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes = [helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        source = "dq"
    inits.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    inits.append(numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"))
    nodes += [helper.make_node("Mul", [source, "two"], ["out"]),
              helper.make_node("ReduceSum", [source, "axes"], ["score"], keepdims=0)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 4, 4]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def fake(monkeypatch):
    def install(version="10.3.0.30"):
        monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(version))
        backends = []
        monkeypatch.setattr(trt_engine, "cuda_unavailable_reason", lambda index: None)
        monkeypatch.setattr(trt_engine, "load_cuda_backend",
                            lambda index, prefer: backends.append(HostBackend()) or backends[-1])
        return backends
    MEMORY.clear()
    return install


def test_builds_then_reuses_the_cached_engine(tmp_path, fake):
    backends = fake()
    model = write_model(tmp_path / "m.onnx")
    batch = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    built_before = Builder.built
    with TrtEngine(model, variant="fp16", batch=2, max_batch=4, cache_dir=tmp_path) as engine:
        outputs = engine.infer(batch)
        info = engine.extra_info()
    assert list(outputs) == ["out", "score"]
    np.testing.assert_array_equal(outputs["out"], 2 * batch)
    np.testing.assert_allclose(outputs["score"][:, 0], batch.sum(axis=(1, 2, 3)))
    assert info["engine_cache"] == "built" and Builder.built == built_before + 1
    assert info["builder_flags"] == ["FP16"] and info["gpu"] == "Fake GPU"
    assert info["gpu_compute_ms_median"] == 1.5 and info["gpu_compute_calls"] == 1
    assert backends[0].closed and MEMORY == {}  # every device buffer freed
    engines = tmp_path
    assert len(list(engines.glob("*.engine"))) == 1 and len(list(engines.glob("*.json"))) == 1
    assert [p.read_bytes() for p in (engines / "timing").iterdir()] == [b"+timing"]

    with TrtEngine(model, variant="fp16", batch=2, max_batch=4, cache_dir=tmp_path) as again:
        assert again.extra_info()["engine_cache"] == "hit"
        np.testing.assert_array_equal(again.infer(batch)["out"], 2 * batch)
    assert Builder.built == built_before + 1


def test_plan_records_the_settings_applied(tmp_path, fake):
    fake("8.6.2.3")
    model = write_model(tmp_path / "q.onnx", qdq=True)
    with TrtEngine(model, variant="int8-max", batch=2, max_batch=8, workspace_mib=64,
                        cache_dir=tmp_path) as engine:
        plan = engine._engine.plan
    assert plan["flags"] == ["INT8", "FP16"]
    assert plan["network_flags"] == 1  # 1 << EXPLICIT_BATCH on TensorRT 8.6
    assert plan["pool"] == ["WORKSPACE", 64 << 20]
    assert plan["profile"] == [[1, 3, 4, 4], [2, 3, 4, 4], [8, 3, 4, 4]]


def test_rebinds_per_batch_shape_and_rejects_shapes_outside_the_profile(tmp_path, fake):
    fake()
    model = write_model(tmp_path / "m.onnx")
    with TrtEngine(model, batch=2, max_batch=4, cache_dir=tmp_path) as engine:
        assert engine.input_shape == (None, 3, 4, 4)
        for size in (1, 4, 2):
            batch = np.full((size, 3, 4, 4), size, np.float32)
            assert engine.infer(batch)["score"].shape == (size, 1)
        assert len(MEMORY) == 3  # one input and two outputs bound, older ones freed
        with pytest.raises(InputDataError, match="outside the engine's profile"):
            engine.infer(np.zeros((5, 3, 4, 4), np.float32))


def test_stale_or_corrupt_cache_is_rebuilt(tmp_path, fake):
    fake()
    model = write_model(tmp_path / "m.onnx")
    TrtEngine(model, cache_dir=tmp_path).activate().deactivate()
    plan = next(tmp_path.glob("*.engine"))
    plan.write_bytes(b"corrupt")
    with TrtEngine(model, cache_dir=tmp_path) as engine:
        assert engine.extra_info()["engine_cache"] == "built"
    fake("10.8.0.43")  # a TensorRT upgrade: a new key, so a new engine beside the old one
    with TrtEngine(model, cache_dir=tmp_path) as engine:
        assert engine.extra_info()["engine_cache"] == "built"
    assert len(list(tmp_path.glob("*.engine"))) == 2


def test_implicit_calibrator_is_fed_every_batch(tmp_path, fake):
    fake("10.3.0.30")
    model = write_model(tmp_path / "m.onnx")
    batches = [np.full((2, 3, 4, 4), i, np.float32) for i in range(3)]
    with TrtEngine(model, variant="trt-minmax", calibration=batches, calibration_id="c3",
                        batch=2, cache_dir=tmp_path) as engine:
        assert engine._engine.plan["calibrated_batches"] == 3
        info = engine.extra_info()
    assert info["calibrator"] == "IInt8MinMaxCalibrator" and "deprecated" in info["deprecation"]
    assert MEMORY == {}
    with pytest.raises(InputDataError, match="option calibration"):
        TrtEngine(model, variant="trt-entropy2", cache_dir=tmp_path).activate()


def test_trt11_refuses_what_it_cannot_build(tmp_path, fake):
    backends = fake("11.0.0.10")
    model = write_model(tmp_path / "m.onnx")
    with pytest.raises(EngineUnavailable, match="removed implicit INT8 calibration"):
        TrtEngine(model, variant="trt-entropy2", cache_dir=tmp_path).activate()
    assert "removed" in TrtEngine.variant_unavailable_reason("trt-minmax")
    with pytest.raises(ConfigError, match="no float16 weights"):
        TrtEngine(model, variant="fp16", cache_dir=tmp_path).activate()
    assert all(backend.closed for backend in backends) and MEMORY == {}


def test_default_cache_dir_and_artifact_kind(tmp_path, fake, monkeypatch):
    fake("11.0.0.10")
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "root"))
    model = write_model(tmp_path / "m.onnx")
    with TrtEngine(model, variant="fp32") as engine:
        assert engine.extra_info()["strongly_typed"] is True
    assert len(list((tmp_path / "root" / "engines").glob("*.engine"))) == 1
    assert TrtEngine.artifact_kind("fp16") == "fp16"  # TensorRT 11: no FP16 flag
    assert TrtEngine.artifact_kind("int8-mse") == "qdq"
    with pytest.raises(EngineUnavailable, match="removed implicit"):
        TrtEngine.artifact_kind("trt-entropy2")
    fake("10.3.0.30")
    assert TrtEngine.artifact_kind("fp16") == "fp32"  # built with BuilderFlag.FP16
