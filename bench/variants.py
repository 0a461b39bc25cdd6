"""The variant registry: variant name -> VariantSpec, the one source of truth.

Everything else derives from it: the variant list of the config and the suite, the QAT
inits, the accuracy floor of each row, what an engine is asked to build, what a variant
needs installed. Engines see a spec's artifact kind and calibrator, never its name.

- artifact: fp32 (the model as given), fp16 (half precision), qdq (a Q/DQ ONNX, explicit
  quantization) or trt-implicit (the FP32 ONNX, calibrated by TensorRT itself);
- builder: how bench.build makes the artifact (reference | fp16 | ptq | qat | reference);
- floor: the accuracy floor group (fp16 | int8 | qat; None for the reference itself);
- needs: runtimes beyond the backend that the variant needs (torch, tensorrt).

Adding a calibrator to bench.quant.calibrators.CALIBRATORS adds its int8-<name> variant.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import ConfigError
from bench.quant.calibrators import CALIBRATORS

ARTIFACT_KINDS = ("fp32", "fp16", "qdq", "trt-implicit")
INT8_ARTIFACTS = ("qdq", "trt-implicit")  # the rows --diagnose looks into
FLOOR_GROUPS = ("fp16", "int8", "qat")
REFERENCE = "fp32"


@dataclass(frozen=True)
class VariantSpec:
    """name: the report's row label; see the module docstring for the rest."""

    name: str
    artifact: str
    builder: str
    calibrator: str | None = None
    floor: str | None = None
    needs: frozenset[str] = frozenset()
    default: bool = True  # part of the default matrix on ONNX Runtime

    def __post_init__(self) -> None:
        if self.artifact not in ARTIFACT_KINDS:
            raise ConfigError(f"variant {self.name!r}: artifact {self.artifact!r}, "
                              f"expected one of {', '.join(ARTIFACT_KINDS)}")
        if self.floor is not None and self.floor not in FLOOR_GROUPS:
            raise ConfigError(f"variant {self.name!r}: floor {self.floor!r}, "
                              f"expected one of {', '.join(FLOOR_GROUPS)}")

    @property
    def is_reference(self) -> bool:
        return self.name == REFERENCE


def ptq_spec(calibrator: str) -> VariantSpec:
    return VariantSpec(f"int8-{calibrator}", "qdq", "ptq", calibrator, floor="int8")


_HEAD = (VariantSpec(REFERENCE, "fp32", "reference"),
         VariantSpec("fp16", "fp16", "fp16", floor="fp16"))
_TAIL = (VariantSpec("int8-qat", "qdq", "qat", floor="qat", needs=frozenset({"torch"})),
         VariantSpec("trt-entropy2", "trt-implicit", "reference", "entropy2", floor="int8",
                     needs=frozenset({"tensorrt"}), default=False),
         VariantSpec("trt-minmax", "trt-implicit", "reference", "minmax", floor="int8",
                     needs=frozenset({"tensorrt"}), default=False))
_EXTRA: dict[str, VariantSpec] = {}
# int8-auto (bench/diagnose/auto.py): the fewest groups float that meet 0.99 × FP32 (the QAT
# floor, hence floor "qat"); a search of minutes, so not in the default matrix.
_EXTRA["int8-auto"] = VariantSpec("int8-auto", "qdq", "auto", "max", floor="qat", default=False)


def registry() -> dict[str, VariantSpec]:
    """Every variant in report order: fp32 first (the reference of every delta)."""
    specs = (*_HEAD, *(ptq_spec(c) for c in CALIBRATORS), *_EXTRA.values(), *_TAIL)
    return {spec.name: spec for spec in specs}


def register_variant(spec: VariantSpec) -> None:
    """Add a variant that no calibrator implies (an extension point; see README)."""
    _EXTRA[spec.name] = spec


def spec_of(name: str) -> VariantSpec:
    specs = registry()
    if name not in specs:
        raise ConfigError(f"variant {name!r}: unknown; expected one of {', '.join(specs)}")
    return specs[name]


def all_variants() -> tuple[str, ...]:
    return tuple(registry())


def default_variants() -> tuple[str, ...]:
    return tuple(name for name, spec in registry().items() if spec.default)


def report_order(names: tuple[str, ...] | list[str]) -> list[str]:
    """names sorted as the registry lists them (fp32 first)."""
    order = all_variants()
    return sorted(names, key=order.index)


def qat_inits() -> tuple[str, ...]:
    """What int8-qat may start from: any calibrator, or the best one measured."""
    return (*CALIBRATORS, "best")
