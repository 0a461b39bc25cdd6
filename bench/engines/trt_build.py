"""Builds a serialized TensorRT engine from ONNX: the thin part that touches TensorRT.

Every decision (flags, typing, profile shapes) is made in trt_settings; this module only
applies it through the documented Python API: Builder, create_network, OnnxParser,
IBuilderConfig (set_flag, set_memory_pool_limit, profiling_verbosity, timing cache,
optimization profile, int8_calibrator and set_calibration_profile, which only TensorRT < 11
has) and build_serialized_network.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.engines.cuda_buffers import CudaBackend
from bench.engines.trt_settings import BuilderSettings, profile_shapes
from bench.errors import BenchError, EngineUnavailable, InputDataError, ModelError


@dataclass(frozen=True)
class BuildResult:
    """plan: the serialized engine; timing_cache: the cache to store (None when TensorRT
    kept none); timing_cache_status: loaded | empty | refused | unreadable (what became of
    the stored one); calibration: what the implicit calibrator read, where one ran."""

    plan: bytes
    timing_cache: bytes | None
    build_s: float
    timing_cache_status: str = "empty"
    calibration: dict[str, Any] | None = None


def build_engine_plan(trt: Any, logger: Any, onnx_path: Path, settings: BuilderSettings, *,
                      timing_cache: bytes = b"",
                      calibration: Iterable[np.ndarray] | None = None,
                      cuda: CudaBackend | None = None) -> BuildResult:
    """Parse onnx_path and build it with settings; ModelError when TensorRT refuses.

    calibration: NCHW float32 batches for an implicit calibrator (trt-implicit kinds);
    they are re-batched to the profile's OPT shape, the shape TensorRT calibrates at.
    An error while feeding them is raised here after the build, not swallowed.
    """
    start = time.perf_counter()
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, settings))
    parser = trt.OnnxParser(network, logger)
    _parse(parser, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    for name in settings.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if settings.profiling_verbosity is not None:  # DETAILED: the inspector's per-layer facts
        config.profiling_verbosity = getattr(trt.ProfilingVerbosity, settings.profiling_verbosity)
    status = _use_timing_cache(config, timing_cache)
    profile, opt_shape = _add_profile(builder, config, network, settings)
    feed = _attach_calibrator(trt, config, profile, opt_shape, settings, calibration, cuda)
    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if feed is not None:
            feed.close()
    if feed is not None and feed.error is not None:
        raise feed.error
    if plan is None:
        raise ModelError(f"model {onnx_path}: TensorRT could not build the {settings.kind} "
                         "engine (see the TensorRT log above)")
    cache = config.get_timing_cache()
    blob = bytes(cache.serialize()) if cache is not None else None
    return BuildResult(bytes(plan), blob, time.perf_counter() - start, status,
                       feed.summary() if feed is not None else None)
def network_flags(trt: Any, settings: BuilderSettings) -> int:
    flags = 0
    for name in settings.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    return flags


def _parse(parser: Any, onnx_path: Path) -> None:
    # parse_from_file (not parse(bytes)) so that external-data weights beside it are found.
    if parser.parse_from_file(str(onnx_path)):
        return
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    first = errors[0].splitlines()[0] if errors else "no error reported"
    raise ModelError(f"model {onnx_path}: TensorRT's ONNX parser failed "
                     f"({len(errors)} error(s); first: {first})")


def _use_timing_cache(config: Any, data: bytes) -> str:
    """Give the config the stored timing cache, or a fresh one when TensorRT refuses it.

    A cache from another device or TensorRT version makes set_timing_cache return False
    (and get_timing_cache None afterwards); a corrupt blob gives no cache at all. Either
    way the build starts from an empty cache, which then replaces the stored file.
    """
    status = "loaded" if data else "empty"
    try:
        cache = config.create_timing_cache(data) if data else None
    except Exception:  # TensorRT raises its own error types for a corrupt blob
        cache = None
    if data and cache is None:
        status = "unreadable"
    elif cache is not None and not config.set_timing_cache(cache, False):
        status, cache = "refused", None
    if cache is None:
        fresh = config.create_timing_cache(b"")
        if fresh is None or not config.set_timing_cache(fresh, False):
            return f"{status}; none used"
    return status


def _add_profile(builder: Any, config: Any, network: Any,
                 settings: BuilderSettings) -> tuple[Any, tuple[int, ...]]:
    """The optimization profile (None for a static input) and the OPT input shape."""
    if network.num_inputs != 1:
        raise ModelError(f"tensorrt network has {network.num_inputs} inputs; "
                         "expected 1 image input")
    tensor = network.get_input(0)
    shapes = profile_shapes(tuple(tensor.shape), settings)
    if shapes is None:
        return None, tuple(int(d) for d in tensor.shape)
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, *shapes)
    if config.add_optimization_profile(profile) < 0:
        raise ModelError(f"tensorrt input {tensor.name!r}: TensorRT refused the profile "
                         f"min/opt/max {shapes}")
    return profile, tuple(shapes[1])


def _attach_calibrator(trt: Any, config: Any, profile: Any, opt_shape: tuple[int, ...],
                       settings: BuilderSettings, calibration: Iterable[np.ndarray] | None,
                       cuda: CudaBackend | None) -> _CalibrationFeed | None:
    if not settings.needs_calibrator:
        return None
    if calibration is None or cuda is None:
        raise InputDataError(f"tensorrt {settings.kind} ({settings.calibrator}): needs "
                             "calibration batches (option calibration); none were given")
    calibrator = make_calibrator(trt, settings.calibrator, calibration, cuda, opt_shape)
    config.int8_calibrator = calibrator
    if profile is not None:
        config.set_calibration_profile(profile)
    return calibrator.feed


def make_calibrator(trt: Any, class_name: str, batches: Iterable[np.ndarray],
                    cuda: CudaBackend, shape: tuple[int, ...]) -> Any:
    """An instance of TensorRT's implicit calibrator class_name fed from batches.

    shape: the NCHW shape TensorRT calibrates at (the profile's OPT shape); the images of
    batches (NCHW arrays of any batch size, C/H/W as in shape) are regrouped into batches
    of exactly that shape, and a remainder short of one batch is left out. No
    calibration cache is kept: the built engine itself is cached.
    """
    base = getattr(trt, class_name, None)
    if base is None:
        raise EngineUnavailable(f"tensorrt {trt.__version__} has no {class_name}")
    return _calibrator_class(base)(_CalibrationFeed(batches, tuple(shape), cuda))


class _CalibrationFeed:
    """Regroups calibration images into OPT-shape batches in one device buffer.

    next_pointer() never raises: an error is kept in .error (the binding would swallow
    it and read it as "no more batches") and raised by build_engine_plan after the build.
    """

    def __init__(self, batches: Iterable[np.ndarray], shape: tuple[int, ...],
                 cuda: CudaBackend):
        self.batches, self.shape, self.cuda = iter(batches), shape, cuda
        self.host = cuda.pinned(shape, np.float32)
        self.device = cuda.alloc(self.host.nbytes)
        self.pending: list[np.ndarray] = []
        self.fed = self.images = 0
        self.error: BaseException | None = None

    def next_pointer(self) -> int | None:
        if self.error is not None:
            return None
        try:
            batch = self._next_batch()
        except Exception as exc:  # kept for build_engine_plan to raise
            self.error = exc if isinstance(exc, BenchError) else InputDataError(
                f"tensorrt calibration batch {self.fed + 1}: {type(exc).__name__}: {exc}")
            return None
        if batch is None:
            return None
        np.copyto(self.host, batch, casting="same_kind")
        self.cuda.to_device(self.device, self.host)
        self.cuda.synchronize()
        self.fed += 1
        return self.device.ptr

    def _next_batch(self) -> np.ndarray | None:
        want = self.shape[0]
        while sum(len(b) for b in self.pending) < want:
            batch = next(self.batches, None)
            if batch is None:
                if self.fed == 0:
                    raise InputDataError(
                        f"tensorrt calibration set has {self.images} image(s); TensorRT "
                        f"calibrates at the profile's OPT shape {self.shape}, so it needs "
                        f"at least {want}")
                return None
            batch = np.asarray(batch)
            if batch.ndim != 4 or tuple(batch.shape[1:]) != self.shape[1:]:
                raise InputDataError(f"tensorrt calibration batch has shape "
                                     f"{tuple(batch.shape)}; expected (N, "
                                     f"{', '.join(map(str, self.shape[1:]))}) to match the "
                                     f"OPT shape {self.shape}")
            self.images += len(batch)
            self.pending.append(batch)
        stacked = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending = [stacked[want:]] if len(stacked) > want else []
        return stacked[:want]

    def summary(self) -> dict[str, Any]:
        return {"calibration_shape": list(self.shape), "calibration_batches": self.fed,
                "calibration_images_read": self.images}

    def close(self) -> None:
        self.cuda.free(self.device)


def _calibrator_class(base: type) -> type:
    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self, feed: _CalibrationFeed):
            base.__init__(self)  # TensorRT's trampoline classes need the explicit init
            self.feed = feed

        def get_batch_size(self) -> int:
            # Ignored for explicit-batch networks (TensorRT uses the OPT shape), but kept
            # equal to it.
            return int(self.feed.shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            pointer = self.feed.next_pointer()
            return None if pointer is None else [pointer] * len(names)

        def read_calibration_cache(self) -> bytes | None:
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            return None

    return Calibrator
