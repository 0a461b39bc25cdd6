"""Strict stand-ins for the `tensorrt` Python module, one per release line (8.6, 10.x, 11.x).

Each exposes only what that line's bindings expose, as NVIDIA documents them:
- 8.6: NetworkDefinitionCreationFlag.EXPLICIT_BATCH (the ONNX parser refuses an implicit-
  batch network), BuilderFlag.FP16/INT8, IBuilderConfig.int8_calibrator and
  set_calibration_profile, IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator;
- 10.x: as 8.6, EXPLICIT_BATCH deprecated and ignored, STRONGLY_TYPED added;
- 11.x: no EXPLICIT_BATCH, no BuilderFlag.FP16/INT8, no int8_calibrator,
  set_calibration_profile or implicit calibrator classes (they raise AttributeError).

Behaviour modelled on the real one: set_timing_cache returns False for a cache from
another device or version (and get_timing_cache then returns None); the parser fails on
ops it does not know and reports errors; implicit calibration runs at the calibration
profile's OPT shape (profile 0 where none is set), ignores get_batch_size, reads OPT-shape
bytes from each pointer get_batch returns, and swallows an exception raised in get_batch
as "no more batches"; execute_async_v3 returns False unless every I/O tensor has an
address, the input shape is set, and the stream is live. The "network" computes
out = 2 * images and score = per-image sum, reading and writing the fake GPU's memory.
"""

from __future__ import annotations

import enum
import json
import types
from dataclasses import dataclass, field

import numpy as np
import onnx
from strict_cuda import FakeGpu

KNOWN_OPS = {"Mul", "ReduceSum", "QuantizeLinear", "DequantizeLinear", "Cast", "Identity"}


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


@dataclass
class Log:
    """What the stand-in was asked to do, for tests to inspect."""

    builds: int = 0
    calibration_shapes: list = field(default_factory=list)
    calibration_batches: int = 0
    swallowed: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    timing_refused: int = 0


def fake_tensorrt(version: str, gpu: FakeGpu) -> types.ModuleType:
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.log = Log()
    trt.DataType, trt.TensorIOMode, trt.MemoryPoolType = DataType, TensorIOMode, MemoryPoolType
    trt.nptype = lambda dtype: {DataType.FLOAT: np.float32, DataType.HALF: np.float16,
                                DataType.INT8: np.int8, DataType.INT32: np.int32}[dtype]

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = 0, 1, 2, 3, 4

        def __init__(self, min_severity: int = 2):
            self.min_severity = min_severity

    trt.Logger = Logger
    trt.NetworkDefinitionCreationFlag = _network_flags(major)
    trt.BuilderFlag = _builder_flags(major)
    network_cls = _network_class()
    trt.OnnxParser = _parser_class(major, trt)
    trt.Builder = _builder_class(major, trt, gpu, network_cls)
    trt.Runtime = _runtime_class(trt, gpu)
    if major < 11:
        trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (_CalibratorBase,), {})
        trt.IInt8MinMaxCalibrator = type("IInt8MinMaxCalibrator", (_CalibratorBase,), {})
    return trt


class _CalibratorBase:
    def __init__(self):  # the trampoline classes must be initialised explicitly
        self._initialised = True


def _network_flags(major: int):
    if major >= 11:
        return types.SimpleNamespace(STRONGLY_TYPED=1)
    if major >= 10:
        return types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
    return types.SimpleNamespace(EXPLICIT_BATCH=0)


def _builder_flags(major: int):
    common = {"REFIT": 5, "DEBUG": 6, "GPU_FALLBACK": 7}
    if major < 11:
        common.update(FP16=0, INT8=1)
    return types.SimpleNamespace(**common)


def _network_class():
    class Network:
        def __init__(self, flags: int, explicit: bool):
            self.flags, self.explicit = flags, explicit
            self.inputs: list = []
            self.outputs: list[str] = []
            self.has_qdq = False

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        @property
        def num_outputs(self) -> int:
            return len(self.outputs)

        def get_input(self, index: int):
            return self.inputs[index]

    return Network


def _parser_class(major: int, trt):
    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, index: int) -> str:
            return self.errors[index]

        def parse(self, data: bytes) -> bool:  # noqa: ARG002 - not used by the engine
            self.errors.append("parse(bytes) cannot find external weights; use parse_from_file")
            return False

        def parse_from_file(self, path: str) -> bool:
            if not self.network.explicit:
                self.errors.append("ERROR: The ONNX parser only supports networks with an "
                                   "explicit batch dimension (EXPLICIT_BATCH)")
                return False
            try:
                graph = onnx.load(path).graph
            except Exception as exc:
                self.errors.append(f"failed to parse {path}: {exc}")
                return False
            unknown = sorted({n.op_type for n in graph.node} - KNOWN_OPS)
            if unknown:
                self.errors.append(f"In node 0: No importer registered for op: {unknown[0]}")
                return False
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1
                         for d in graph.input[0].type.tensor_type.shape.dim)
            self.network.inputs = [types.SimpleNamespace(name=graph.input[0].name, shape=dims)]
            self.network.outputs = [o.name for o in graph.output]
            self.network.has_qdq = any(n.op_type == "QuantizeLinear" for n in graph.node)
            return True

    return OnnxParser


class TimingCache:
    def __init__(self, owner: str, entries: int):
        self.owner, self.entries = owner, entries

    def serialize(self) -> bytes:
        return f"TC|{self.owner}|{self.entries}".encode()


def _config_class(major: int, trt, owner: str):
    slots = ["flags", "pool", "profiles", "_timing", "calibration_profile"]
    if major < 11:
        slots.append("int8_calibrator")

    class Config:
        __slots__ = tuple(slots)

        def __init__(self):
            self.flags, self.pool, self.profiles, self._timing = set(), None, [], None
            self.calibration_profile = None
            if major < 11:
                self.int8_calibrator = None

        def set_memory_pool_limit(self, pool, size: int) -> None:
            if pool not in MemoryPoolType or size <= 0:
                raise TypeError(f"set_memory_pool_limit: bad pool {pool!r} / size {size}")
            self.pool = (pool, size)

        def set_flag(self, flag) -> None:
            if flag not in vars(trt.BuilderFlag).values():
                raise TypeError(f"set_flag: {flag!r} is not a BuilderFlag")
            self.flags.add(flag)

        def create_timing_cache(self, data: bytes):
            data = bytes(data)
            if not data:
                return TimingCache(owner, 0)
            parts = data.decode(errors="replace").split("|")
            if len(parts) != 3 or parts[0] != "TC" or not parts[2].isdigit():
                return None  # the real builder logs "invalid timing cache" and gives None
            return TimingCache(parts[1], int(parts[2]))

        def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
            if cache.owner != owner and not ignore_mismatch:
                trt.log.timing_refused += 1
                return False
            self._timing = cache
            return True

        def get_timing_cache(self):
            return self._timing

        def add_optimization_profile(self, profile) -> int:
            if not profile.valid():
                return -1
            self.profiles.append(profile)
            return len(self.profiles) - 1

        if major < 11:
            def set_calibration_profile(self, profile) -> bool:
                self.calibration_profile = profile
                return True

    return Config


class Profile:
    def __init__(self):
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name: str, min, opt, max) -> None:  # noqa: A002 - TensorRT's names
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

    def get_shape(self, name: str):
        return self.shapes[name]

    def valid(self) -> bool:
        return all(all(a <= b <= c for a, b, c in zip(*s, strict=True))
                   for s in self.shapes.values())


def _builder_class(major: int, trt, gpu: FakeGpu, network_cls):
    owner = f"{trt.__version__}/{gpu.names[0]}"
    config_cls = _config_class(major, trt, owner)

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags: int = 0):
            known = 0
            for bit in vars(trt.NetworkDefinitionCreationFlag).values():
                known |= 1 << bit
            if flags & ~known:
                raise TypeError(f"create_network: unknown flag bits {flags:#x}")
            explicit = major >= 10 or bool(flags & (1 << trt.NetworkDefinitionCreationFlag
                                                    .EXPLICIT_BATCH))
            return network_cls(flags, explicit)

        def create_builder_config(self):
            return config_cls()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.log.builds += 1
            tensor = network.inputs[0]
            dynamic = any(d < 0 for d in tensor.shape)
            if dynamic and not config.profiles:
                trt.log.errors.append("network has dynamic inputs but no optimization profile")
                return None
            calibrated = _calibrate(trt, gpu, network, config, major)
            if calibrated is None:
                return None
            if config._timing is not None:
                config._timing.entries += 1
            plan = {"version": trt.__version__, "input": tensor.name, "shape": tensor.shape,
                    "outputs": network.outputs, "flags": sorted(int(f) for f in config.flags),
                    "network_flags": network.flags, "pool": config.pool[1] if config.pool else None,
                    "profile": config.profiles[0].get_shape(tensor.name) if config.profiles
                    else None, "calibrated_batches": calibrated}
            return memoryview(json.dumps(plan).encode())

    return Builder


def _calibrate(trt, gpu: FakeGpu, network, config, major: int) -> int | None:
    """Run the implicit calibrator like TensorRT: OPT shape, get_batch until None."""
    calibrator = getattr(config, "int8_calibrator", None) if major < 11 else None
    if calibrator is None or network.has_qdq:
        return 0
    if not getattr(calibrator, "_initialised", False):
        trt.log.errors.append("calibrator trampoline not initialised (missing base __init__)")
        return None
    profile = config.calibration_profile or (config.profiles[0] if config.profiles else None)
    tensor = network.inputs[0]
    shape = profile.get_shape(tensor.name)[1] if profile else tensor.shape
    trt.log.calibration_shapes.append(tuple(shape))
    calibrator.get_batch_size()  # called, and ignored for explicit-batch networks
    nbytes = int(np.prod(shape)) * 4
    count = 0
    while True:
        try:
            pointers = calibrator.get_batch([tensor.name])
        except Exception as exc:  # the binding prints the error and reads it as "done"
            trt.log.swallowed.append(repr(exc))
            pointers = None
        if not pointers:
            break
        try:
            gpu.view(int(pointers[0]), nbytes)
        except (KeyError, IndexError) as exc:
            trt.log.errors.append(f"calibration batch read failed: {exc}")
            return None
        count += 1
    trt.log.calibration_batches += count
    if count == 0:
        trt.log.errors.append("calibration failed: no batches")
        return None
    return count


def _runtime_class(trt, gpu: FakeGpu):
    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, plan):
            try:
                record = json.loads(bytes(plan))
            except ValueError:
                return None
            if record.get("version") != trt.__version__:
                return None  # an engine is tied to the TensorRT version that built it
            return Engine(record, gpu)

    return Runtime


class Engine:
    def __init__(self, plan: dict, gpu: FakeGpu):
        self.plan, self.gpu = plan, gpu
        self.names = [plan["input"], *plan["outputs"]]

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name == self.plan["input"] else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple:
        shape = tuple(self.plan["shape"])
        return shape if name == self.plan["input"] else _output_shape(name, shape)

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType.FLOAT

    def create_execution_context(self):
        return Context(self)


def _output_shape(name: str, shape: tuple) -> tuple:
    return shape if name == "out" else (shape[0], 1)


class Context:
    def __init__(self, engine: Engine):
        self.engine, self.addresses, self.shape = engine, {}, None
        static = tuple(engine.plan["shape"])
        if all(d > 0 for d in static):
            self.shape = static

    def set_input_shape(self, name: str, shape) -> bool:
        shape = tuple(int(d) for d in shape)
        profile = self.engine.plan["profile"]
        low, _, high = profile if profile else [self.engine.plan["shape"]] * 3
        if name != self.engine.plan["input"] or len(shape) != len(low):
            return False
        if not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high, strict=True)):
            return False
        self.shape = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        shape = self.shape or tuple(self.engine.plan["shape"])
        return shape if name == self.engine.plan["input"] else _output_shape(name, shape)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if name not in self.engine.names:
            return False
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        if self.shape is None or set(self.addresses) != set(self.engine.names):
            return False  # "not all input dimensions / addresses are specified"
        if int(stream_handle) not in self.engine.gpu.streams:
            return False
        gpu, shape = self.engine.gpu, self.shape
        count = int(np.prod(shape))
        images = gpu.view(self.addresses[self.engine.plan["input"]], count * 4)
        images = images.view(np.float32).reshape(shape)
        results = {"out": 2 * images, "score": images.sum(axis=(1, 2, 3)).reshape(-1, 1)}
        for name in self.engine.plan["outputs"]:
            value = results[name].astype(np.float32)
            gpu.view(self.addresses[name], value.nbytes)[:] = value.reshape(-1).view(np.uint8)
        return True
