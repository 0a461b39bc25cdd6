"""What TensorRT is asked to build, per artifact kind and per TensorRT version.

Pure logic, no TensorRT import, so that it is unit-tested on any machine. The rules come
from NVIDIA's documentation:

- 8.6: networks need NetworkDefinitionCreationFlag.EXPLICIT_BATCH; precision comes from
  builder flags (weak typing); a Q/DQ network is explicitly quantized, and its INT8
  kernels are enabled by BuilderFlag.INT8.
- 10.x: EXPLICIT_BATCH is deprecated and ignored (networks are always explicit batch);
  builder flags as in 8.6; the implicit calibrators are deprecated since 10.1, and the
  precision flags (weak typing) since 10.12 (precision_flag_note says so in the report).
- 11.x: networks are always strongly typed; BuilderFlag.FP16 / INT8 and the implicit
  calibrators (IInt8EntropyCalibrator2, IInt8MinMaxCalibrator) were removed. FP16 must come
  from an FP16 ONNX, INT8 from Q/DQ nodes.

The profiling verbosity (ProfilingVerbosity.DETAILED for --diagnose) is documented as
changing what the plan records about its layers, for the engine inspector ("layer names and
layer parameters") and NVTX, not what they run; the plan bytes differ all the same, so it is
part of the settings and of the engine cache key.

Weakly typed INT8 builds also set FP16 so that the layers left unquantized (the detect head,
SiLU tails) run in half precision, as `trtexec --int8 --fp16` does; without it they run in
FP32 and an INT8 engine can be slower than the FP16 one.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from bench.errors import ConfigError, EngineUnavailable

# Engines see an artifact kind, never a variant name: a new calibrator's int8-<name>
# variant is a "qdq" artifact and builds here with no list to update.

# The artifact kinds of bench.variants.ARTIFACT_KINDS that TensorRT builds.
KINDS = ("fp32", "fp16", "qdq", "trt-implicit")
# The implicit calibrators by the calibrator name a trt-implicit variant carries.
IMPLICIT_CALIBRATORS = {
    "entropy2": "IInt8EntropyCalibrator2",
    "minmax": "IInt8MinMaxCalibrator",
}
OLDEST_SUPPORTED = (8, 6)
DEFAULT_WORKSPACE_BYTES = 1 << 30
DEFAULT_IMAGE_SIZE = 640
# Members of TensorRT's ProfilingVerbosity (8.6 through 11); LAYER_NAMES_ONLY is its default.
PROFILING_VERBOSITIES = ("LAYER_NAMES_ONLY", "DETAILED", "NONE")


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

    kind is the variant's artifact kind (fp32 | fp16 | qdq | trt-implicit); onnx says
    which ONNX the engine must be built from: "fp32" (the model as given), "fp16" (an FP16
    ONNX; TensorRT 11 has no FP16 flag) or "qdq" (a Q/DQ ONNX).
    Names in network_flags / builder_flags are members of TensorRT's
    NetworkDefinitionCreationFlag / BuilderFlag enums; profiling_verbosity is a member of
    ProfilingVerbosity, None leaving TensorRT's default (LAYER_NAMES_ONLY).
    """

    kind: str
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
    profiling_verbosity: str | None = None

    @property
    def needs_calibrator(self) -> bool:
        return self.calibrator is not None

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (the engine cache key hashes it). profiling_verbosity is
        left out while None, so engines cached before it existed keep their keys."""
        fields = asdict(self)
        if fields["profiling_verbosity"] is None:
            del fields["profiling_verbosity"]
        return fields


def builder_settings(kind: str, trt_version: str, *, calibrator: str | None = None,
                     batch: int = 1, max_batch: int | None = None,
                     workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
                     image_size: int = DEFAULT_IMAGE_SIZE,
                     profiling_verbosity: str | None = None) -> BuilderSettings:
    """The builder settings of one artifact kind under one TensorRT version.

    calibrator: the calibrator name of a trt-implicit variant (entropy2 | minmax);
    profiling_verbosity: a ProfilingVerbosity member name (DETAILED for --diagnose).
    Raises ConfigError for an unknown kind, calibrator or verbosity or bad sizes,
    EngineUnavailable where the installed TensorRT cannot build it (too old, or a removed
    calibrator).
    """
    version = parse_trt_version(trt_version)
    _check_supported(version)
    trt_class = _calibrator_class(kind, calibrator)
    sizes = _sizes(batch, max_batch, workspace_bytes, image_size)
    if profiling_verbosity not in (None, *PROFILING_VERBOSITIES):
        raise ConfigError(f"tensorrt profiling verbosity {profiling_verbosity!r}: expected one "
                          f"of {', '.join(PROFILING_VERBOSITIES)}")
    sizes["profiling_verbosity"] = profiling_verbosity
    if version.major >= 11:
        return _strongly_typed(kind, trt_class, version, sizes)
    return _weakly_typed(kind, trt_class, version, sizes)


def _calibrator_class(kind: str, calibrator: str | None) -> str | None:
    """TensorRT's class for a trt-implicit calibrator; ConfigError for what we do not know."""
    if kind not in KINDS:
        raise ConfigError(f"tensorrt artifact kind {kind!r}: expected one of {', '.join(KINDS)}")
    if kind != "trt-implicit":
        return None
    if calibrator not in IMPLICIT_CALIBRATORS:
        raise ConfigError(f"tensorrt implicit calibrator {calibrator!r}: expected one of "
                          f"{', '.join(IMPLICIT_CALIBRATORS)}")
    return IMPLICIT_CALIBRATORS[calibrator]


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


def _weakly_typed(kind: str, calibrator: str | None, version: TrtVersion,
                  sizes: dict) -> BuilderSettings:
    network = ("EXPLICIT_BATCH",) if version.major < 10 else ()
    flags = {"fp32": (), "fp16": ("FP16",), "qdq": ("INT8", "FP16"),
             "trt-implicit": ("INT8", "FP16")}
    return BuilderSettings(kind=kind, trt_major=version.major,
                           onnx="qdq" if kind == "qdq" else "fp32",
                           network_flags=network, builder_flags=flags[kind],
                           calibrator=calibrator, **sizes)


def _strongly_typed(kind: str, calibrator: str | None, version: TrtVersion,
                    sizes: dict) -> BuilderSettings:
    if kind == "trt-implicit":
        raise EngineUnavailable(
            f"tensorrt {version.text} removed implicit INT8 calibration "
            f"({calibrator}); use the Q/DQ variants (int8-entropy, int8-max)")
    # 11 has no EXPLICIT_BATCH and is always strongly typed, so no network flag is passed.
    return BuilderSettings(kind=kind, trt_major=version.major, onnx=kind,
                           strongly_typed=True, **sizes)


def deprecation_notes(settings: BuilderSettings, trt_version: str) -> list[str]:
    """Lines for the report where a build uses an API the TensorRT in use has deprecated."""
    notes = []
    if settings.needs_calibrator and settings.trt_major >= 10:
        notes.append(f"{settings.calibrator} is deprecated since TensorRT 10.1 "
                     "(removed in 11)")
    note = precision_flag_note(trt_version, settings.builder_flags)
    if note:
        notes.append(note)
    return notes


def deprecation_note(settings: BuilderSettings, trt_version: str | None = None) -> str | None:
    """The notes of deprecation_notes as one line, None when there are none."""
    version = trt_version or f"{settings.trt_major}.0"
    notes = deprecation_notes(settings, version)
    return "; ".join(notes) if notes else None


def precision_flag_note(trt_version: str, builder_flags: tuple[str, ...] = ("FP16",)) -> str | None:
    """The report's note on TensorRT 10.12+ deprecating the precision builder flags.

    TensorRT 10.12 deprecated weak typing (BuilderFlag.FP16 / INT8) in favour of strongly
    typed networks, and 11.0 removed it; JetPack 7 ships 10.13. None when the version is
    older than 10.12, 11+ (where the flags are gone and never set), or no precision flag
    is set.
    """
    version = parse_trt_version(trt_version)
    used = [flag for flag in builder_flags if flag in ("FP16", "INT8")]
    if not used or version.major != 10 or version.minor < 12:
        return None
    names = "/".join(f"BuilderFlag.{flag}" for flag in used)
    return (f"TensorRT {version.text} deprecates {names} (since 10.12; removed in 11): "
            "this engine is weakly typed; TensorRT 11 builds FP16 from an FP16 ONNX and INT8 "
            "only from Q/DQ")


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
