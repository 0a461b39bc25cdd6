"""What TensorRT is asked to build, per variant and per TensorRT version.

Pure logic, no TensorRT import, so that it is unit-tested on any machine. The rules come
from NVIDIA's documentation:

- 8.6: networks need NetworkDefinitionCreationFlag.EXPLICIT_BATCH; precision comes from
  builder flags (weak typing); a Q/DQ network is explicitly quantized, and its INT8
  kernels are enabled by BuilderFlag.INT8.
- 10.x: EXPLICIT_BATCH is deprecated and ignored (networks are always explicit batch);
  builder flags as in 8.6; the implicit calibrators are deprecated since 10.1.
- 11.x: networks are always strongly typed; BuilderFlag.FP16 / INT8 and the implicit
  calibrators (IInt8EntropyCalibrator2, IInt8MinMaxCalibrator) were removed. FP16 must come
  from an FP16 ONNX, INT8 from Q/DQ nodes.

Weakly typed INT8 builds also set FP16 so that the layers left unquantized (the detect head,
SiLU tails) run in half precision, as `trtexec --int8 --fp16` does; without it they run in
FP32 and an INT8 engine can be slower than the FP16 one.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from bench.errors import ConfigError, EngineUnavailable

QDQ_VARIANTS = ("int8-max", "int8-entropy", "int8-percentile", "int8-mse", "int8-qat")
IMPLICIT_CALIBRATORS = {
    "trt-entropy2": "IInt8EntropyCalibrator2",
    "trt-minmax": "IInt8MinMaxCalibrator",
}
KNOWN_VARIANTS = ("fp32", "fp16", *QDQ_VARIANTS, *IMPLICIT_CALIBRATORS)
OLDEST_SUPPORTED = (8, 6)
DEFAULT_WORKSPACE_BYTES = 1 << 30
DEFAULT_IMAGE_SIZE = 640


@dataclass(frozen=True)
class TrtVersion:
    major: int
    minor: int
    text: str


def parse_trt_version(text: str) -> TrtVersion:
    """'10.3.0.30' -> TrtVersion(10, 3, '10.3.0.30'); ConfigError if it is not N.N[...]."""
    match = re.fullmatch(r"(\d+)\.(\d+)(\.\d+)*([.+-]\w+)*", str(text).strip())
    if not match:
        raise ConfigError(f"TensorRT version {text!r}: expected a version like '10.3.0'")
    return TrtVersion(int(match.group(1)), int(match.group(2)), str(text).strip())


@dataclass(frozen=True)
class BuilderSettings:
    """Everything that decides the engine's bytes besides the model and the GPU.

    onnx says which artifact the engine must be built from: "fp32" (the model as given),
    "fp16" (an FP16 ONNX; TensorRT 11 has no FP16 flag) or "qdq" (a Q/DQ ONNX).
    Names in network_flags / builder_flags are members of TensorRT's
    NetworkDefinitionCreationFlag / BuilderFlag enums.
    """

    variant: str
    trt_major: int
    onnx: str
    network_flags: tuple[str, ...] = ()
    builder_flags: tuple[str, ...] = ()
    strongly_typed: bool = False
    calibrator: str | None = None
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1
    image_size: int = DEFAULT_IMAGE_SIZE

    @property
    def needs_calibrator(self) -> bool:
        return self.calibrator is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def builder_settings(variant: str, trt_version: str, *, batch: int = 1,
                     max_batch: int | None = None,
                     workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
                     image_size: int = DEFAULT_IMAGE_SIZE) -> BuilderSettings:
    """The builder settings of one variant under one TensorRT version.

    Raises ConfigError for an unknown variant or bad sizes, EngineUnavailable where the
    installed TensorRT cannot build the variant (too old, or a removed calibrator).
    """
    version = parse_trt_version(trt_version)
    _check_supported(version)
    kind = variant_kind(variant)
    sizes = _sizes(batch, max_batch, workspace_bytes, image_size)
    if version.major >= 11:
        return _strongly_typed(variant, kind, version, sizes)
    return _weakly_typed(variant, kind, version, sizes)


def variant_kind(variant: str) -> str:
    """'fp32' | 'fp16' | 'qdq' | 'implicit'; ConfigError for a name we do not know."""
    if variant in ("fp32", "fp16"):
        return variant
    if variant in QDQ_VARIANTS:
        return "qdq"
    if variant in IMPLICIT_CALIBRATORS:
        return "implicit"
    raise ConfigError(f"tensorrt variant {variant!r}: expected one of {', '.join(KNOWN_VARIANTS)}")


def _check_supported(version: TrtVersion) -> None:
    if (version.major, version.minor) < OLDEST_SUPPORTED:
        raise EngineUnavailable(f"tensorrt {version.text} is older than 8.6, the oldest "
                                "version this engine supports (execute_async_v3, named tensors)")


def _sizes(batch: int, max_batch: int | None, workspace: int, image_size: int) -> dict:
    max_batch = batch if max_batch is None else max_batch
    if batch < 1 or max_batch < batch:
        raise ConfigError(f"tensorrt batch sizes: got batch={batch}, max_batch={max_batch}; "
                          "expected 1 <= batch <= max_batch")
    if workspace < 1 << 20 or image_size < 32:
        raise ConfigError(f"tensorrt workspace {workspace} B / image size {image_size}: "
                          "expected at least 1 MiB and 32 pixels")
    return {"min_batch": 1, "opt_batch": batch, "max_batch": max_batch,
            "workspace_bytes": workspace, "image_size": image_size}


def _weakly_typed(variant: str, kind: str, version: TrtVersion, sizes: dict) -> BuilderSettings:
    network = ("EXPLICIT_BATCH",) if version.major < 10 else ()
    flags = {"fp32": (), "fp16": ("FP16",), "qdq": ("INT8", "FP16"), "implicit": ("INT8", "FP16")}
    return BuilderSettings(variant=variant, trt_major=version.major,
                           onnx="qdq" if kind == "qdq" else "fp32",
                           network_flags=network, builder_flags=flags[kind],
                           calibrator=IMPLICIT_CALIBRATORS.get(variant), **sizes)


def _strongly_typed(variant: str, kind: str, version: TrtVersion, sizes: dict) -> BuilderSettings:
    if kind == "implicit":
        raise EngineUnavailable(
            f"tensorrt {version.text} removed implicit INT8 calibration "
            f"({IMPLICIT_CALIBRATORS[variant]}); use the Q/DQ variants (int8-entropy, int8-max)")
    # The network flag is ignored in 11 (always strongly typed), so none is passed.
    return BuilderSettings(variant=variant, trt_major=version.major, onnx=kind,
                           strongly_typed=True, **sizes)


def deprecation_note(settings: BuilderSettings) -> str | None:
    """A line for the report when the variant uses an API TensorRT has deprecated."""
    if settings.needs_calibrator and settings.trt_major >= 10:
        return f"{settings.calibrator} is deprecated since TensorRT 10.1 (removed in 11)"
    return None


def profile_shapes(input_shape: tuple, settings: BuilderSettings) -> tuple[tuple, ...] | None:
    """(min, opt, max) shapes of an optimization profile, or None for a static input.

    input_shape is the network's NCHW input as TensorRT reports it (-1 for dynamic dims);
    the batch dim spans min/opt/max batch, dynamic H and W take settings.image_size.
    """
    dims = tuple(int(d) for d in input_shape)
    if len(dims) != 4:
        raise ConfigError(f"tensorrt input shape {dims}: expected 4-D NCHW")
    if all(d > 0 for d in dims):
        return None
    channels = dims[1] if dims[1] > 0 else 3
    chw = (channels, *(d if d > 0 else settings.image_size for d in dims[2:]))
    if dims[0] > 0:
        return ((dims[0], *chw),) * 3
    return tuple((b, *chw) for b in (settings.min_batch, settings.opt_batch, settings.max_batch))
