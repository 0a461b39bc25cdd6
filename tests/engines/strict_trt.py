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
out = 2 * images and score = per-image sum, reading and writing the fake GPU's memory (a
test model's Conv must be the 1x1 one with weights 2 * I that computes the same).

Layer facts, as documented for 8.6 through 11 (Python API EngineInspector, IProfiler,
IExecutionContext; NvInferRuntime.h): IBuilderConfig.profiling_verbosity takes a
ProfilingVerbosity (LAYER_NAMES_ONLY by default) and the engine keeps it
(ICudaEngine.profiling_verbosity). engine.create_engine_inspector() answers
get_engine_information / get_layer_information(i, LayerInformationFormat.JSON) with
{"Layers": [...], "Bindings": [names]}: layer objects (Name, LayerType, Inputs/Outputs with
Name, Location, Dimensions, Format/Datatype, Origin on a Reformat, Metadata "[ONNX Layer:
...]", TacticName, TacticValue) when built DETAILED, bare names by default, none with NONE
(an assumption: NVIDIA says only that nothing is printed). Without an execution context,
dynamic dims read -1 and only the data type is shown ("Int8"); with one whose shapes are
set, dims are concrete and the format is spelled out. 11.x answers "I/O Tensors" objects
instead of "Bindings" and splits Format/Datatype into "Format" and "DataType" (the split is
documented; those two names are this stand-in's reading of NVIDIA's I/O Tensors example).
The builder's "layers": each Q becomes a Reformat of Origin QDQ, each DQ folds into the
layers reading it (their names joined with " + ", as TensorRT names fused layers), a
weakly typed FP16 or calibrated INT8 build converts the input and FP16 outputs through
"Reformatting CopyNode" layers. An IProfiler subclass must call IProfiler.__init__ (the
trampoline); with context.profiler set, execute_async_v3 reports each layer's time once
per run (layer names, decimal indices under NONE) unless enqueue_emits_profile is False,
when report_to_profiler() reports the previous enqueue's. nvtx_verbosity defaults to the
build's verbosity and cannot be raised above it.
"""

from __future__ import annotations

import enum
import json
import types
from dataclasses import dataclass, field

import numpy as np
import onnx
from strict_cuda import FakeGpu

KNOWN_OPS = {"Conv", "Mul", "ReduceSum", "QuantizeLinear", "DequantizeLinear", "Cast",
             "Identity"}


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


class ProfilingVerbosity(enum.IntEnum):  # kLAYER_NAMES_ONLY = 0, kNONE = 1, kDETAILED = 2
    LAYER_NAMES_ONLY = 0
    NONE = 1
    DETAILED = 2


class LayerInformationFormat(enum.IntEnum):
    ONELINE = 0
    JSON = 1


class IProfiler:
    """The trampoline base: a subclass must call IProfiler.__init__ and override
    report_layer_time (pybind11 raises on a pure virtual call)."""

    def __init__(self):
        self._initialised = True

    def report_layer_time(self, layer_name: str, ms: float) -> None:
        raise RuntimeError('Tried to call pure virtual function "IProfiler::reportLayerTime"')


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
    trt.ProfilingVerbosity, trt.LayerInformationFormat = ProfilingVerbosity, LayerInformationFormat
    trt.IProfiler = IProfiler
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
    trt.Runtime = _runtime_class(trt, gpu, major)
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
            self.nodes: list[tuple] = []  # (TensorRT name, op, activation inputs, outputs, to)

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
            inits = {t.name for t in graph.initializer}
            self.network.nodes = [  # unnamed nodes: "node_of_<output>", as onnx-tensorrt does
                (n.name or f"node_of_{n.output[0]}", n.op_type,
                 [i for i in n.input if i and i not in inits], list(n.output),
                 next((a.i for a in n.attribute if a.name == "to"), None)) for n in graph.node]
            return True

    return OnnxParser


class TimingCache:
    def __init__(self, owner: str, entries: int):
        self.owner, self.entries = owner, entries

    def serialize(self) -> bytes:
        return f"TC|{self.owner}|{self.entries}".encode()


def _config_class(major: int, trt, owner: str):
    slots = ["flags", "pool", "profiles", "_timing", "calibration_profile", "_verbosity"]
    if major < 11:
        slots.append("int8_calibrator")

    class Config:
        __slots__ = tuple(slots)

        def __init__(self):
            self.flags, self.pool, self.profiles, self._timing = set(), None, [], None
            self.calibration_profile = None
            self._verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
            if major < 11:
                self.int8_calibrator = None

        @property
        def profiling_verbosity(self):
            return self._verbosity

        @profiling_verbosity.setter
        def profiling_verbosity(self, value) -> None:
            if not isinstance(value, ProfilingVerbosity):
                raise TypeError(f"profiling_verbosity: {value!r} is not a ProfilingVerbosity")
            self._verbosity = value

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
                    else None, "calibrated_batches": calibrated,
                    "profiling_verbosity": int(config.profiling_verbosity),
                    "layers": _engine_layers(network, _weak_type(trt, config, calibrated))}
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


def _weak_type(trt, config, calibrated: int) -> str | None:
    """What a weakly typed build runs the unquantized layers in: INT8 after implicit
    calibration, FP16 with BuilderFlag.FP16, else None (as typed)."""
    flags = vars(trt.BuilderFlag)
    if calibrated:
        return "INT8"
    return "FP16" if "FP16" in flags and flags["FP16"] in config.flags else None


_LAYER_TYPES = {"Conv": "CaskConvolution", "Mul": "PointWise", "ReduceSum": "Reduce",
                "Cast": "Cast"}


def _engine_layers(network, weak: str | None) -> list[dict]:
    """The stand-in builder's layers (see the module docstring), in a plan-internal form:
    tensors as [name, data type]; formats are spelled out when inspected."""
    dtype = {network.inputs[0].name: "FP32"}
    folded: dict[str, tuple[str, str]] = {}  # DQ output -> (its input, the DQ's name)
    weights: dict[str, str] = {}  # a weight's DQ output -> the DQ's name
    layers: list[dict] = []
    for name, op, inputs, outputs, to in network.nodes:
        if op in ("DequantizeLinear", "Identity"):
            if inputs:
                folded[outputs[0]] = (inputs[0], name)
            else:  # of an initializer: a quantized weight, folded into the layer using it
                weights[outputs[0]] = name
            continue
        parts = [weights[t] for t in inputs[1:] if t in weights]
        read = []
        for tensor in inputs[:1]:  # the activation the layer computes on
            if tensor in folded:
                tensor, dq = folded[tensor]
                parts.append(dq)
            if weak and dtype.get(tensor) == "FP32" and op != "QuantizeLinear":
                tensor = _reformat(layers, dtype, tensor, weak, f"Input Tensor 0 to {name}")
            read.append([tensor, dtype.get(tensor, "FP32")])
        parts.append(name)
        layer_name = " + ".join(parts)
        if op == "QuantizeLinear":
            out_type, kind, origin = "INT8", "Reformat", "QDQ"
        elif op == "Cast":
            out_type, kind, origin = ("FP16" if to == 10 else "FP32"), "Cast", ""
        else:
            first = read[0][1] if read else "FP32"
            out_type = "FP32" if first == "INT8" else first  # int8 kernels write float out
            kind, origin = _LAYER_TYPES[op], ""
        dtype[outputs[0]] = out_type
        layers.append({"name": layer_name, "type": kind, "origin": origin, "inputs": read,
                       "outputs": [[outputs[0], out_type]], "onnx": parts,
                       "tactic": f"stand_in_{kind.lower()}_{read[0][1].lower() if read else ''}"})
        if outputs[0] in network.outputs and out_type == "FP16":
            _reformat(layers, dtype, outputs[0], "FP32", f"Output Tensor 0 to {layer_name}")
    return layers


def _reformat(layers: list, dtype: dict, tensor: str, to: str, what: str) -> str:
    copy = f"Reformatted {what}"
    dtype[copy] = to
    layers.append({"name": f"Reformatting CopyNode for {what}", "type": "Reformat",
                   "origin": "REFORMAT", "inputs": [[tensor, dtype[tensor]]],
                   "outputs": [[copy, to]], "onnx": [], "tactic": "stand_in_reformat"})
    return copy


_FORMATS = {"FP32": ("Float", "Row major linear FP32"),
            "FP16": ("Half", "Channel major FP16 format where channel % 8 == 0"),
            "INT8": ("Int8", "Thirty-two wide channel vectorized row major Int8 format")}
_LAYER_MS = {"Reformat": 0.01, "CaskConvolution": 0.2, "PointWise": 0.05, "Reduce": 0.03,
             "Cast": 0.01}  # per image; an int8 layer takes half


def _layer_ms(layer: dict, images: int) -> float:
    ms = _LAYER_MS[layer["type"]] * images
    return ms / 2 if layer["inputs"] and layer["inputs"][0][1] == "INT8" else ms


def _runtime_class(trt, gpu: FakeGpu, major: int):
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
            return Engine(record, gpu, major)

    return Runtime


class Engine:
    def __init__(self, plan: dict, gpu: FakeGpu, major: int = 10):
        self.plan, self.gpu, self.major = plan, gpu, major
        self.names = [plan["input"], *plan["outputs"]]

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    @property
    def num_layers(self) -> int:
        return len(self.plan.get("layers", []))

    @property
    def profiling_verbosity(self) -> ProfilingVerbosity:
        return ProfilingVerbosity(self.plan.get("profiling_verbosity", 0))

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

    def create_engine_inspector(self):
        return Inspector(self)


def _output_shape(name: str, shape: tuple) -> tuple:
    return shape if name == "out" else (shape[0], 1)


class Inspector:
    """IEngineInspector over one engine (see the module docstring for its JSON)."""

    def __init__(self, engine: Engine):
        self.engine, self._context = engine, None

    @property
    def execution_context(self):
        return self._context

    @execution_context.setter
    def execution_context(self, context) -> None:
        if context is not None and not isinstance(context, Context):
            raise TypeError(f"execution_context: {context!r} is not an IExecutionContext")
        self._context = context

    def get_layer_information(self, layer_index: int, format) -> str | None:  # noqa: A002
        layers = self._layers(format)
        if not 0 <= int(layer_index) < self.engine.num_layers:
            return None  # the real one logs an error and returns nullptr
        return self._dump(layers[int(layer_index)] if layers else {}, format)

    def get_engine_information(self, format) -> str:  # noqa: A002 - TensorRT's name
        record = {"Layers": self._layers(format)}
        if self.engine.major >= 11:
            record["I/O Tensors"] = [
                {"Name": n, "IOMode": "Input" if n == self.engine.plan["input"] else "Output",
                 "DataType": "Float", "Dimensions": list(self._dims(n)), "Location": "Device",
                 "IsShapeInferenceIO": False} for n in self.engine.names]
        else:
            record["Bindings"] = list(self.engine.names)
        return self._dump(record, format)

    def _dump(self, record, format) -> str:  # noqa: A002
        if format == LayerInformationFormat.JSON:
            return json.dumps(record, indent=1)
        return "\n".join(str(layer if isinstance(layer, str) else layer["Name"])
                         for layer in record.get("Layers", [record]))

    def _layers(self, format) -> list:  # noqa: A002
        if not isinstance(format, LayerInformationFormat):
            raise TypeError(f"format: {format!r} is not a LayerInformationFormat")
        verbosity = self.engine.profiling_verbosity
        layers = self.engine.plan.get("layers", [])
        if verbosity == ProfilingVerbosity.NONE:
            return []
        if verbosity == ProfilingVerbosity.LAYER_NAMES_ONLY:
            return [layer["name"] for layer in layers]
        return [self._detailed(layer) for layer in layers]

    def _dims(self, tensor: str) -> tuple:
        context, plan = self._context, self.engine.plan
        shape = tuple(context.shape) if context is not None and context.shape else \
            tuple(plan["shape"])
        return (shape[0], 1) if tensor == "score" else shape

    def _tensor(self, tensor: str, dtype: str) -> dict:
        entry = {"Name": tensor, "Location": "Device", "Dimensions": list(self._dims(tensor))}
        known = self._context is not None and self._context.shape is not None
        short, spelled = _FORMATS[dtype]
        if self.engine.major >= 11:
            entry.update({"Format": spelled} if known else {})
            entry["DataType"] = short
        else:
            entry["Format/Datatype"] = spelled if known else short
        return entry

    def _detailed(self, layer: dict) -> dict:
        entry = {"Name": layer["name"], "LayerType": layer["type"],
                 "Inputs": [self._tensor(*t) for t in layer["inputs"]],
                 "Outputs": [self._tensor(*t) for t in layer["outputs"]]}
        if layer["origin"]:
            entry["Origin"] = layer["origin"]
        entry["Metadata"] = "\x1f".join(f"[ONNX Layer: {n}]" for n in layer["onnx"])
        entry.update({"TacticName": layer["tactic"], "TacticValue": "0x0000000000000000"})
        return entry


class Context:
    def __init__(self, engine: Engine):
        self.engine, self.addresses, self.shape = engine, {}, None
        self._profiler, self._pending = None, None
        self.enqueue_emits_profile = True
        self._nvtx = engine.profiling_verbosity
        static = tuple(engine.plan["shape"])
        if all(d > 0 for d in static):
            self.shape = static

    @property
    def profiler(self):
        return self._profiler

    @profiler.setter
    def profiler(self, value) -> None:
        if value is not None and not isinstance(value, IProfiler):
            raise TypeError(f"profiler: {value!r} is not an IProfiler")
        if value is not None and not getattr(value, "_initialised", False):
            raise TypeError("IProfiler.__init__() must be called when overriding __init__")
        self._profiler, self._pending = value, None

    @property
    def nvtx_verbosity(self) -> ProfilingVerbosity:
        return self._nvtx

    @nvtx_verbosity.setter
    def nvtx_verbosity(self, value) -> None:
        if not isinstance(value, ProfilingVerbosity):
            raise TypeError(f"nvtx_verbosity: {value!r} is not a ProfilingVerbosity")
        order = [ProfilingVerbosity.NONE, ProfilingVerbosity.LAYER_NAMES_ONLY,
                 ProfilingVerbosity.DETAILED]
        if order.index(value) <= order.index(self.engine.profiling_verbosity):
            self._nvtx = value  # "may not be raised above" the build's

    def report_to_profiler(self) -> bool:
        if self._profiler is None:
            return False
        if self.enqueue_emits_profile:
            return True  # the enqueue reported already
        if self._pending is None or self._pending[0] not in self.engine.gpu.streams:
            return False
        self._report(self._pending[1])
        self._pending = None
        return True

    def _report(self, times: list[tuple[str, float]]) -> None:
        for name, ms in times:
            self._profiler.report_layer_time(name, ms)

    def _layer_times(self) -> list[tuple[str, float]]:
        none = self.engine.profiling_verbosity == ProfilingVerbosity.NONE
        return [(str(i) if none else layer["name"], _layer_ms(layer, self.shape[0]))
                for i, layer in enumerate(self.engine.plan.get("layers", []))]

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
        if self._profiler is not None:
            if self.enqueue_emits_profile:  # enqueue is then synchronous and reports itself
                self._report(self._layer_times())
            else:
                self._pending = (int(stream_handle), self._layer_times())
        return True
