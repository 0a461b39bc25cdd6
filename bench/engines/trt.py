"""TensorRT engine: builds (or reuses) an engine from ONNX, runs it with execute_async_v3.

The logic that needs no GPU lives in trt_settings (what to build), trt_cache (where it is
kept, when it is stale) and cuda_buffers (two CUDA bindings behind one interface); the
TensorRT calls themselves are in trt_build (building), here (running) and trt_profile (the
engine inspector and per-layer times of --diagnose).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.atomic import atomic_write_bytes
from bench.cache import file_sha256
from bench.engines.base import Batches, Engine
from bench.engines.cuda_buffers import CudaBackend, cuda_unavailable_reason, load_cuda_backend
from bench.engines.gpu_time import gpu_time_summary
from bench.engines.trt_build import build_engine_plan
from bench.engines.trt_cache import (
    EngineIdentity,
    engine_cache_dir,
    load_cached_engine,
    read_timing_cache,
    store_engine,
    timing_cache_path,
)
from bench.engines.trt_profile import LayerProfile, engine_information, time_layers
from bench.engines.trt_settings import (
    DEFAULT_IMAGE_SIZE,
    BuilderSettings,
    builder_settings,
    deprecation_notes,
    parse_trt_version,
    profile_shapes,
)
from bench.errors import BenchError, ConfigError, EngineUnavailable, InputDataError, ModelError
from bench.variants import INT8_ARTIFACTS

if TYPE_CHECKING:
    from bench.config import BenchConfig
    from bench.variants import VariantSpec

log = logging.getLogger(__name__)

NOT_INSTALLED = "tensorrt is not installed (pip install tensorrt, or JetPack's python3-libnvinfer)"


@dataclass(frozen=True)
class TensorSpec:
    """One I/O tensor of an engine as TensorRT reports it (-1 marks a dynamic dim)."""

    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: np.dtype


def parse_cuda_device(device: str) -> int | None:
    """'cuda' -> 0, 'cuda:1' -> 1; None for anything that is not a CUDA device."""
    match = re.fullmatch(r"cuda(?::(\d+))?", str(device).strip())
    return None if match is None else int(match.group(1) or 0)


def tensorrt_unavailable_reason() -> str | None:
    """None when a supported tensorrt imports here, else one line saying why not."""
    try:
        import tensorrt as trt
    except ImportError:
        return NOT_INSTALLED
    except Exception as exc:  # e.g. OSError: libnvinfer.so missing behind the wheel
        return f"tensorrt cannot be imported ({_first_line(exc)})"
    try:
        builder_settings("fp32", trt.__version__)  # the version check
    except BenchError as exc:
        return str(exc)
    return None


def onnx_kind_mismatch(model: Any, kind: str) -> str | None:
    """Why an onnx.ModelProto is not the artifact kind ('fp32'|'fp16'|'qdq') a build needs."""
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    has_half = any(t.data_type == 10 for t in model.graph.initializer)  # 10 = FLOAT16
    if kind == "qdq" and not has_qdq:
        return "has no QuantizeLinear/DequantizeLinear nodes; expected a Q/DQ ONNX"
    if kind == "fp16" and not has_half:
        return "has no float16 weights; TensorRT 11 builds FP16 only from an FP16 ONNX"
    if kind in ("fp32", "fp16") and has_qdq:
        return f"has Q/DQ nodes; expected a plain {kind.upper()} ONNX"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class TrtOptions:
    """What the TensorRT engine builds and how.

    kind           the artifact kind: fp32 | fp16 | qdq | trt-implicit
    calibrator     the implicit calibrator of a trt-implicit kind: entropy2 | minmax
    batch          the batch the engine is tuned for (profile OPT)
    max_batch      the largest batch a dynamic-batch engine accepts; None: batch
    image_size     H and W where the ONNX input has dynamic ones
    workspace_mib  builder workspace pool
    cache_dir      the folder engines are kept in; None: <root>/engines with root
                   $BENCH_CACHE_DIR, else $XDG_CACHE_HOME/bench, else ~/.cache/bench
    rebuild        ignore a cached engine
    calibration    NCHW float32 batches for trt-implicit (regrouped to the OPT shape)
    calibration_id a string naming that calibration set (part of the cache key)
    cuda_backend   "pycuda" | "cuda-python"; None: the first installed
    verbose        TensorRT's VERBOSE log
    profiling_verbosity  a ProfilingVerbosity member name the engine is built with
                   (DETAILED for --diagnose: per-layer precisions in the engine inspector);
                   None: TensorRT's default, layer names only
    """

    kind: str = "fp32"
    calibrator: str | None = None
    batch: int = 1
    max_batch: int | None = None
    image_size: int = DEFAULT_IMAGE_SIZE
    workspace_mib: int = 1024
    cache_dir: Path | None = None
    rebuild: bool = False
    calibration: Batches | None = field(default=None, compare=False, repr=False)
    calibration_id: str = ""
    cuda_backend: str | None = None
    verbose: bool = False
    profiling_verbosity: str | None = None


class TrtEngine(Engine):
    """Runs an ONNX model as a TensorRT engine on one CUDA device ("cuda" or "cuda:N")."""

    name = "tensorrt"
    Options = TrtOptions

    def __init__(self, model_path: Any, *, device: str = "cuda",
                 options: TrtOptions | None = None):
        super().__init__(model_path, device=device, options=options)
        self._gpu_ms: list[float] = []
        self._info: dict[str, Any] = {}
        self._cuda: CudaBackend | None = None

    @classmethod
    def from_config(cls, cfg: BenchConfig, spec: VariantSpec, artifact_path: Path, *,
                    calibration: Batches | None = None, calibration_id: str = "",
                    image_size: int | None = None, max_batch: int | None = None) -> TrtEngine:
        implicit = spec.artifact == "trt-implicit"
        options = TrtOptions(
            kind=spec.artifact, calibrator=spec.calibrator if implicit else None,
            batch=cfg.batch, max_batch=max(cfg.batch, max_batch or cfg.batch),
            image_size=image_size or DEFAULT_IMAGE_SIZE,
            cache_dir=Path(cfg.cache_dir) / "engines",
            calibration=calibration if implicit else None,
            calibration_id=calibration_id if implicit else "",
            profiling_verbosity="DETAILED" if cfg.diagnose and spec.artifact in INT8_ARTIFACTS
            else None)
        return cls(artifact_path, device=cls.device_for(cfg), options=options)

    @classmethod
    def device_for(cls, cfg: BenchConfig) -> str:
        return cfg.device if str(cfg.device).startswith("cuda") else "cuda"

    @classmethod
    def skip_reason(cls, cfg: BenchConfig, spec: VariantSpec) -> str | None:
        calibrator = spec.calibrator if spec.artifact == "trt-implicit" else None
        return cls.kind_unavailable_reason(spec.artifact, calibrator)

    @classmethod
    def unavailable_reason(cls, device: str = "cuda") -> str | None:
        reason = tensorrt_unavailable_reason()
        if reason:
            return reason
        index = parse_cuda_device(device)
        if index is None:
            return f"tensorrt runs on a CUDA device; got device {device!r} (expected 'cuda[:N]')"
        return cuda_unavailable_reason(index)

    @classmethod
    def artifact_kind(cls, kind: str, calibrator: str | None = None) -> str:
        """Which ONNX the installed TensorRT builds an artifact kind from: 'fp32', 'fp16'
        or 'qdq' ('fp16' only on TensorRT 11+, which has no FP16 builder flag).

        EngineUnavailable when TensorRT is missing or cannot build the kind.
        """
        reason = cls.kind_unavailable_reason(kind, calibrator)
        if reason:
            raise EngineUnavailable(reason)
        import tensorrt as trt

        return builder_settings(kind, trt.__version__, calibrator=calibrator).onnx

    @classmethod
    def kind_unavailable_reason(cls, kind: str, calibrator: str | None = None) -> str | None:
        """Why the installed TensorRT cannot build an artifact kind (e.g. trt-implicit on
        11), or None."""
        reason = tensorrt_unavailable_reason()
        if reason:
            return reason
        import tensorrt as trt

        try:
            builder_settings(kind, trt.__version__, calibrator=calibrator)
        except BenchError as exc:
            return str(exc)
        return None

    def runtime_version(self) -> str | None:
        try:
            import tensorrt as trt
        except ImportError:
            return None
        return str(trt.__version__)

    def device_name(self) -> str | None:
        return self._info.get("gpu")

    # -- lifecycle -------------------------------------------------------------------

    def _activate(self) -> None:
        import tensorrt as trt

        self._trt = trt
        self._logger = trt.Logger(trt.Logger.VERBOSE if self.options.verbose
                                  else trt.Logger.WARNING)
        self._cuda = load_cuda_backend(parse_cuda_device(self.device) or 0,
                                       self.options.cuda_backend)
        self._buffers: dict[str, Any] = {}
        try:
            with self._cuda.activation():
                self._open()
        except BaseException:
            self._release()
            raise

    def _deactivate(self) -> None:
        self._release()

    def _release(self) -> None:
        cuda = self._cuda
        if cuda is None:
            return
        with cuda.activation():
            self._free_buffers()
            # A context must go before its engine, an engine before its runtime.
            self._context = self._engine = self._runtime = None
            self._start = self._end = None
            cuda.close()
        self._cuda = None

    def _open(self) -> None:
        self._settings = self._builder_settings(self._trt.__version__)
        gpu, capability = self._cuda.device_info()
        identity = EngineIdentity(file_sha256(self.model_path), self._settings.kind,
                                  self._trt.__version__, gpu, capability, self._settings,
                                  self.options.calibration_id)
        self._runtime = self._trt.Runtime(self._logger)
        self._engine = self._load_engine(identity)
        self._context = self._engine.create_execution_context()
        if self._settings.profiling_verbosity == "DETAILED":
            # NVIDIA: building with DETAILED "will generally increase latency in enqueueV3()"
            # (its NVTX ranges); the measured runs keep the default level, names only.
            self._context.nvtx_verbosity = self._trt.ProfilingVerbosity.LAYER_NAMES_ONLY
        self._io = io_specs(self._trt, self._engine)
        self._input = _single_input(self._io, self.model_path.name)
        self._start, self._end = self._cuda.new_event(), self._cuda.new_event()
        self._bind(initial_input_shape(self._input.shape, self._settings))
        self._info = _static_info(self._trt.__version__, self._settings, identity, self._cuda)

    def _builder_settings(self, trt_version: str) -> BuilderSettings:
        opts = self.options
        return builder_settings(opts.kind, trt_version, calibrator=opts.calibrator,
                                batch=opts.batch, max_batch=opts.max_batch,
                                workspace_bytes=int(opts.workspace_mib) << 20,
                                image_size=opts.image_size,
                                profiling_verbosity=opts.profiling_verbosity)

    # -- the engine: cached or built -------------------------------------------------

    def _load_engine(self, identity: EngineIdentity) -> Any:
        cache_dir = Path(self.options.cache_dir) if self.options.cache_dir else engine_cache_dir()
        lookup = load_cached_engine(cache_dir, identity)
        if lookup.hit and not self.options.rebuild:
            engine = self._runtime.deserialize_cuda_engine(lookup.plan)
            if engine is not None:
                self._info_cache = {"engine_cache": "hit", "engine_bytes": len(lookup.plan)}
                return engine
            log.warning("cached engine %s did not deserialize; rebuilding", lookup.path.name)
        elif not lookup.hit:
            log.info("building TensorRT engine %s: %s", identity.key, lookup.reason)
        plan = self._build(cache_dir, identity)
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise ModelError(f"model {self.model_path}: TensorRT built an engine it cannot "
                             f"deserialize ({identity.key})")
        return engine

    def _build(self, cache_dir: Path, identity: EngineIdentity) -> bytes:
        self._check_artifact(identity.settings)
        timing = timing_cache_path(cache_dir, identity.trt_version, identity.gpu_name,
                                   identity.compute_capability)
        calibration = self.options.calibration
        result = build_engine_plan(self._trt, self._logger, self.model_path, identity.settings,
                                   timing_cache=read_timing_cache(timing),
                                   calibration=calibration() if calibration else None,
                                   cuda=self._cuda)
        if result.timing_cache is not None:  # replaces a refused or unreadable file too
            atomic_write_bytes(timing, result.timing_cache)
        store_engine(cache_dir, identity, result.plan, result.build_s)
        self._info_cache = {"engine_cache": "built", "engine_build_s": round(result.build_s, 3),
                            "engine_bytes": len(result.plan),
                            "timing_cache": result.timing_cache_status,
                            **(result.calibration or {})}
        return result.plan

    def _check_artifact(self, settings: BuilderSettings) -> None:
        from bench.onnx_file import load_model

        model = load_model(self.model_path, weights=False)
        mismatch = onnx_kind_mismatch(model, settings.onnx)
        if mismatch:
            raise ConfigError(f"tensorrt artifact kind {settings.kind}: model "
                              f"{self.model_path.name} {mismatch}")

    # -- buffers and inference -------------------------------------------------------

    def _bind(self, shape: tuple[int, ...]) -> None:
        """(Re)allocate pinned host and device buffers for one input shape."""
        self._free_buffers()
        if not self._context.set_input_shape(self._input.name, tuple(shape)):
            raise InputDataError(f"tensorrt input {self._input.name!r}: shape {tuple(shape)} "
                                 f"is outside the engine's profile (engine shape "
                                 f"{self._input.shape}; built for batch <= "
                                 f"{self._settings.max_batch}, image size "
                                 f"{self._settings.image_size})")
        for spec in self._io:
            dims = tuple(self._context.get_tensor_shape(spec.name))
            if any(d < 0 for d in dims):
                raise ModelError(f"tensorrt tensor {spec.name!r} has data-dependent shape "
                                 f"{dims}; not supported")
            host = self._cuda.pinned(dims, spec.dtype)
            device = self._cuda.alloc(host.nbytes)
            if self._context.set_tensor_address(spec.name, device.ptr) is False:
                raise ModelError(f"tensorrt tensor {spec.name!r}: set_tensor_address refused")
            self._buffers[spec.name] = (host, device)
        self._bound_shape = tuple(shape)

    def _free_buffers(self) -> None:
        for _host, device in getattr(self, "_buffers", {}).values():
            self._cuda.free(device)
        self._buffers = {}

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with self._cuda.activation():
            return self._run(np.asarray(batch))

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch.shape != self._bound_shape:
            self._bind(batch.shape)
        host, device = self._buffers[self._input.name]
        np.copyto(host, batch, casting="same_kind")
        cuda = self._cuda
        cuda.to_device(device, host)
        cuda.record(self._start)
        if not self._context.execute_async_v3(cuda.stream_handle):
            raise ModelError(f"model {self.model_path.name}: TensorRT execute_async_v3 failed "
                             f"(input shape {tuple(batch.shape)})")
        cuda.record(self._end)
        outputs = [spec.name for spec in self._io if not spec.is_input]
        for name in outputs:
            cuda.to_host(*self._buffers[name])
        cuda.synchronize()
        self._gpu_ms.append(cuda.elapsed_ms(self._start, self._end))
        # Copies: the pinned buffers are overwritten by the next call.
        return {name: self._buffers[name][0].copy() for name in outputs}

    @property
    def input_shape(self) -> tuple:
        return tuple(d if d >= 0 else None for d in self._input.shape)

    def reset_timings(self) -> None:
        """Forget the GPU times so far (e.g. between the accuracy and the latency pass)."""
        self._gpu_ms = []

    def profile_layers(self, batch: np.ndarray, *, runs: int = 10,
                       warmup: int = 2) -> LayerProfile:
        """The engine inspector's layers and each layer's time over `runs` inferences of
        batch (after `warmup`), through an IProfiler (bench.engines.trt_profile).

        Per-layer precisions are in the inspector's answer only when the engine was built
        with profiling_verbosity DETAILED. The profiled runs are not GPU times of the row.
        """
        if not self.active:
            raise BenchError(f"{self.name} engine for {self.model_path.name}: profile_layers() "
                             "before activate() (or after deactivate())")
        batch = np.asarray(batch)
        kept = list(self._gpu_ms)
        with self._cuda.activation():
            try:
                times = time_layers(self._trt, self._context, lambda: self._run(batch),
                                    runs=runs, warmup=warmup)
            finally:
                self._gpu_ms = kept
            info = engine_information(self._trt, self._engine, self._context)
        return LayerProfile(info, times, runs, tuple(batch.shape))

    def extra_info(self) -> dict[str, Any]:
        cache = getattr(self, "_info_cache", {})
        return {**self._info, **cache, **gpu_time_summary(self._gpu_ms)}


def io_specs(trt: Any, engine: Any) -> list[TensorSpec]:
    """The engine's I/O tensors in TensorRT's order (inputs first, outputs in model order)."""
    specs = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        specs.append(TensorSpec(name, is_input, tuple(engine.get_tensor_shape(name)), dtype))
    return specs


def _single_input(specs: list[TensorSpec], model: str) -> TensorSpec:
    inputs = [spec for spec in specs if spec.is_input]
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        shown = [(spec.name, spec.shape) for spec in inputs]
        raise ModelError(f"model {model}: expected one 4-D NCHW input, got {shown}")
    return inputs[0]


def initial_input_shape(engine_shape: tuple[int, ...], settings: BuilderSettings) -> tuple:
    """The shape buffers are first allocated for: the profile's opt shape if dynamic."""
    shapes = profile_shapes(engine_shape, settings)
    return tuple(engine_shape) if shapes is None else shapes[1]


def _static_info(trt_version: str, settings: BuilderSettings, identity: EngineIdentity,
                 cuda: CudaBackend) -> dict[str, Any]:
    info = {"trt_version": trt_version, "trt_major": parse_trt_version(trt_version).major,
            "kind": settings.kind, "builder_flags": list(settings.builder_flags),
            "strongly_typed": settings.strongly_typed, "calibrator": settings.calibrator,
            "engine_key": identity.key, "gpu": identity.gpu_name,
            "compute_capability": identity.compute_capability, "cuda_backend": cuda.name}
    if settings.profiling_verbosity:
        info["profiling_verbosity"] = settings.profiling_verbosity
    notes = deprecation_notes(settings, trt_version)
    return {**info, "deprecation": "; ".join(notes)} if notes else info
