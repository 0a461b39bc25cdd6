"""Builds a serialized TensorRT engine from ONNX: the thin part that touches TensorRT.

Every decision (flags, typing, profile shapes) is made in trt_settings; this module only
applies it through the documented Python API: Builder, create_network, OnnxParser,
IBuilderConfig (set_flag, set_memory_pool_limit, timing cache, optimization profile,
int8_calibrator) and build_serialized_network.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.engines.cuda_buffers import CudaBackend
from bench.engines.trt_settings import BuilderSettings, profile_shapes
from bench.errors import EngineUnavailable, InputDataError, ModelError


@dataclass(frozen=True)
class BuildResult:
    plan: bytes
    timing_cache: bytes
    build_s: float


def build_engine_plan(trt: Any, logger: Any, onnx_path: Path, settings: BuilderSettings, *,
                      timing_cache: bytes = b"", calibrator: Any = None) -> BuildResult:
    """Parse onnx_path and build it with settings; ModelError when TensorRT refuses."""
    start = time.perf_counter()
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, settings))
    parser = trt.OnnxParser(network, logger)
    _parse(parser, onnx_path)
    config = _configure(trt, builder, network, settings, timing_cache, calibrator)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelError(f"model {onnx_path}: TensorRT could not build the {settings.variant} "
                         "engine (see the TensorRT log above)")
    cache = bytes(config.get_timing_cache().serialize())
    return BuildResult(bytes(plan), cache, time.perf_counter() - start)


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


def _configure(trt: Any, builder: Any, network: Any, settings: BuilderSettings,
               timing_cache: bytes, calibrator: Any) -> Any:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    for name in settings.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    config.set_timing_cache(_timing_cache(config, timing_cache), False)
    profile = _add_profile(builder, config, network, settings)
    if settings.needs_calibrator:
        if calibrator is None:
            raise InputDataError(f"tensorrt variant {settings.variant}: needs calibration "
                                 "batches (option calibration); none were given")
        config.int8_calibrator = calibrator
        if profile is not None:
            config.set_calibration_profile(profile)
    return config


def _timing_cache(config: Any, data: bytes) -> Any:
    # A stored cache that TensorRT cannot read only costs build time: start an empty one.
    try:
        cache = config.create_timing_cache(data)
    except Exception:  # TensorRT raises its own error types for a corrupt blob
        cache = None
    return cache if cache is not None else config.create_timing_cache(b"")


def _add_profile(builder: Any, config: Any, network: Any, settings: BuilderSettings) -> Any:
    if network.num_inputs != 1:
        raise ModelError(f"tensorrt network has {network.num_inputs} inputs; "
                         "expected 1 image input")
    tensor = network.get_input(0)
    shapes = profile_shapes(tuple(tensor.shape), settings)
    if shapes is None:
        return None
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, *shapes)
    config.add_optimization_profile(profile)
    return profile


def make_calibrator(trt: Any, class_name: str, batches: Iterable[np.ndarray],
                    cuda: CudaBackend) -> Any:
    """An instance of TensorRT's implicit calibrator class_name fed from batches.

    batches: NCHW float32 arrays of one shape (preprocessed calibration images). No
    calibration cache is kept: the built engine itself is cached.
    """
    base = getattr(trt, class_name, None)
    if base is None:
        raise EngineUnavailable(f"tensorrt {trt.__version__} has no {class_name}")
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        raise InputDataError(f"tensorrt calibrator {class_name}: the calibration set is empty")
    feed = _CalibrationFeed(itertools.chain([first], iterator), first.shape, cuda)
    return _calibrator_class(base)(feed)


class _CalibrationFeed:
    """Copies each calibration batch into one device buffer and hands out its address."""

    def __init__(self, batches: Iterable[np.ndarray], shape: tuple, cuda: CudaBackend):
        self.batches, self.shape, self.cuda = iter(batches), tuple(shape), cuda
        self.host = cuda.pinned(self.shape, np.float32)
        self.device = cuda.alloc(self.host.nbytes)

    def next_pointer(self) -> int | None:
        batch = next(self.batches, None)
        if batch is None:
            return None
        if tuple(batch.shape) != self.shape:
            raise InputDataError(f"tensorrt calibration batch has shape {tuple(batch.shape)}; "
                                 f"expected {self.shape} like the first one")
        np.copyto(self.host, batch, casting="same_kind")
        self.cuda.to_device(self.device, self.host)
        self.cuda.synchronize()
        return self.device.ptr

    def close(self) -> None:
        self.cuda.free(self.device)


def _calibrator_class(base: type) -> type:
    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self, feed: _CalibrationFeed):
            base.__init__(self)  # TensorRT's trampoline classes need the explicit init
            self.feed = feed

        def get_batch_size(self) -> int:
            return int(self.feed.shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            pointer = self.feed.next_pointer()
            return None if pointer is None else [pointer] * len(names)

        def read_calibration_cache(self) -> bytes | None:
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            return None

    return Calibrator
