"""One frozen configuration object.

Precedence: command-line option > environment (BENCH_<KEY>) > [tool.bench] in the
pyproject.toml of the working directory > default. Unknown keys are rejected, and every
value is checked once here so that the rest of the harness can trust it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.engines.registry import backend_names
from bench.errors import ConfigError
from bench.power.registry import source_names
from bench.variants import all_variants, default_variants, qat_inits, registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # JetPack 6 ships Python 3.10
    import tomli as tomllib

# Variant names come from the registry (bench.variants); these are its built-in entries.
ORT_VARIANTS = default_variants()
ALL_VARIANTS = all_variants()
BACKENDS = backend_names()  # the built-in ones; the registry is the truth
DEVICES = ("cpu", "cuda")
QDQ_PROFILES = ("tensorrt", "cpu")
POWER_SOURCES = source_names()  # "auto" and the registered sources
KEEP_FLOAT_FLAGS = ("first_conv", "head", "decode")
EVALUATORS = ("numpy", "faster", "pycocotools")
QAT_PLANS = ("keep-float", "auto")  # what int8-qat keeps float: --keep-float, or int8-auto's
MAX_IMGSZ = 4096  # above this a letterboxed batch alone takes gigabytes


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bench"


@dataclass(frozen=True)
class BenchConfig:
    """Everything a run needs to know. Paths None mean "the embedded default"."""

    model: Path | None = None
    coco: Path | None = None
    coco_split: str | None = None
    calib: Path | None = None
    calib_count: int = 64
    eval_count: int | None = None
    backend: str = "onnxruntime"
    device: str = "cpu"
    variants: tuple[str, ...] = field(default_factory=default_variants)
    imgsz: int | None = None
    batch: int = 1
    eval_batch: int = 1
    eval_streams: int | None = None
    threads: int | None = None
    conf: float = 0.001
    iou: float = 0.65
    max_det: int = 300
    percentile: float = 99.99
    qdq_profile: str | None = None
    keep_float: tuple[str, ...] = KEEP_FLOAT_FLAGS
    power: str = "auto"
    power_interval_s: float = 0.05
    bench_rounds: int = 60
    bench_warmup: int = 5
    results_dir: Path = Path("results")
    baseline: Path = Path("results/baseline.json")
    cache_dir: Path = field(default_factory=default_cache_dir)
    floor_fp16: float = 0.99
    floor_int8: float = 0.95
    floor_qat: float = 0.99
    map_tolerance: float = 0.005
    latency_tolerance: float = 0.05
    latency_blocks: int = 15
    reference_every: int = 2
    fail_inconclusive: bool = False
    evaluator: str = "numpy"
    coco_lenient: bool = False
    qat_init: str = "best"
    qat_plan: str = "keep-float"
    qat_iters: int | None = None
    qat_epochs: float | None = None
    qat_minutes: float | None = None
    qat_images: int = 512
    qat_lr: float = 5e-4
    qat_scales: bool = True
    progress: bool = True
    num_classes: int | None = None
    class_map: Path | None = None
    diagnose: bool = False

    def __post_init__(self) -> None:
        _check_choice("backend", self.backend, backend_names())
        _check_choice("device", self.device, DEVICES)
        _check_choice("power", self.power, source_names())
        _check_choice("qat_init", self.qat_init, qat_inits())
        _check_choice("qat_plan", self.qat_plan, QAT_PLANS)
        _check_choice("evaluator", self.evaluator, EVALUATORS)
        if self.qdq_profile is not None:
            _check_choice("qdq_profile", self.qdq_profile, QDQ_PROFILES)
        for name in self.variants:
            _check_choice("variants", name, tuple(registry()))
        if not self.variants:
            raise ConfigError("option variants: got an empty list; expected at least one variant")
        repeated = sorted({v for v in self.variants if self.variants.count(v) > 1})
        if repeated:
            raise ConfigError(f"option variants: {repeated[0]!r} given twice; "
                              "expected each variant once")
        _check_positive(self, ("calib_count", "batch", "eval_batch", "max_det", "bench_rounds",
                               "latency_blocks", "reference_every",
                               "qat_images", "power_interval_s", "qat_lr"))
        _check_positive(self, ("eval_count", "eval_streams", "imgsz", "threads", "qat_iters",
                               "qat_epochs", "qat_minutes"), optional=True)
        if self.bench_warmup < 0:
            raise ConfigError(f"option bench_warmup: got {self.bench_warmup}; expected >= 0")
        if not 0.0 < self.percentile <= 100.0:
            raise ConfigError(f"option percentile: got {self.percentile}; expected 0 < p <= 100")
        for name in ("conf", "iou", "floor_fp16", "floor_int8", "floor_qat"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"option {name}: got {value}; expected a value in [0, 1]")
        if self.imgsz is not None and self.imgsz % 32:
            raise ConfigError(f"option imgsz: got {self.imgsz}; expected a multiple of 32")
        if self.imgsz is not None and self.imgsz > MAX_IMGSZ:
            raise ConfigError(f"option imgsz: got {self.imgsz}; expected at most {MAX_IMGSZ}")
        if not 0.0 <= self.map_tolerance < 1.0:
            raise ConfigError(f"option map_tolerance: got {self.map_tolerance}; expected an "
                              "absolute mAP drop in [0, 1)")
        if not 0.0 <= self.latency_tolerance < 10.0:
            raise ConfigError(f"option latency_tolerance: got {self.latency_tolerance}; "
                              "expected a relative growth in [0, 10), e.g. 0.10 for 10 %")

    @property
    def profile(self) -> str:
        """The Q/DQ profile: as configured, else what the backend runs fast."""
        if self.qdq_profile:
            return self.qdq_profile
        return "cpu" if self.backend == "onnxruntime" and self.device == "cpu" else "tensorrt"

    def with_(self, **changes: Any) -> BenchConfig:
        return dataclasses.replace(self, **changes)


def _check_choice(option: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"option {option}: got {value!r}; expected one of {', '.join(allowed)}")


def _check_positive(cfg: BenchConfig, names: tuple[str, ...], optional: bool = False) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is None and optional:
            continue
        if value is None or value <= 0:
            raise ConfigError(f"option {name}: got {value!r}; expected a positive number")


FIELDS = {f.name: f for f in dataclasses.fields(BenchConfig)}

HELP = {
    "model": "FP32 ONNX to benchmark (default: the embedded default detector)",
    "coco": "COCO folder: annotations/instances_<split>.json + <split>/ images "
            "(default: the embedded generated dataset)",
    "coco_split": "split of --coco to evaluate, e.g. val2017 (default: the only one, or val*)",
    "calib": "calibration images: a COCO folder or an image folder, never the evaluation "
             "images (default: the default dataset's train split, or --coco's train split)",
    "calib_count": "number of calibration images",
    "eval_count": "evaluate only the first N images (quick subset; default: all)",
    "backend": "runtime: onnxruntime, tensorrt or torch",
    "device": "cpu or cuda",
    "variants": "comma-separated variants to run: " + ", ".join(ALL_VARIANTS),
    "imgsz": "square network input size (default: from the model or its manifest, else 640)",
    "batch": "batch size of the latency pass",
    "eval_batch": "batch size of the accuracy pass",
    "eval_streams": "inferences the accuracy pass runs at once (ONNX Runtime on the CPU: "
                    "sessions of cores/streams threads; default: as many as cores, up to 4; "
                    "1 = the latency session itself); outputs are the same either way",
    "threads": "intra-op CPU threads of the engine (default: the runtime's choice)",
    "conf": "confidence threshold of the accuracy pass (YOLOv7 protocol: 0.001)",
    "iou": "NMS IoU threshold of the accuracy pass (YOLOv7 protocol: 0.65)",
    "max_det": "detections kept per image (YOLOv7 protocol: 300)",
    "percentile": "percentile of |x| for int8-percentile",
    "qdq_profile": "Q/DQ profile: tensorrt (s8 activations) or cpu (u8 activations, "
                   "what ORT CPU runs fast); default follows the backend",
    "keep_float": "what stays in float: first_conv, head, decode and/or node-name globs",
    "power": "power source: auto, jtop, nvml, rapl or none",
    "power_interval_s": "power sampling interval in seconds",
    "bench_rounds": "timed rounds of the latency pass",
    "bench_warmup": "untimed warm-up calls before the latency pass",
    "results_dir": "where runs/<id>/ and latest are written",
    "baseline": "stored baseline report to gate against",
    "cache_dir": "artifact cache (built variants, datasets, engines)",
    "floor_fp16": "fp16 mAP floor as a fraction of fp32's (MLPerf: 0.99)",
    "floor_int8": "int8 PTQ mAP floor as a fraction of fp32's (MLPerf: 0.95)",
    "floor_qat": "int8-qat mAP floor as a fraction of fp32's (MLPerf: 0.99)",
    "map_tolerance": "largest absolute mAP drop against the baseline",
    "latency_tolerance": "relative slowdown against the baseline that counts as a regression: "
                         "the whole confidence interval of probe-normalised latency now / "
                         "then must lie above 1 + this to fail (0.05 = 5 %)",
    "latency_blocks": "blocks the latency pass splits its rounds into, each followed by a "
                      "block of fp32 and of the speed probe (drift cancels between them)",
    "reference_every": "variant blocks timed between two blocks of fp32 and the speed probe "
                       "(1: R V R V ...; 2: R V V R V V ..., about a third less time)",
    "evaluator": "COCO evaluator: numpy (the default: this project's, vectorised; the same "
                 "floats as pycocotools, 2-4x faster than faster-coco-eval), "
                 "faster (faster-coco-eval) or pycocotools (the reference)",
    "coco_lenient": "drop invalid COCO annotations (non-positive boxes, unknown images or "
                    "categories) and count them in the report, instead of stopping",
    "fail_inconclusive": "fail the gate when a latency comparison with the baseline is "
                         "inconclusive (its interval straddles the tolerance)",
    "qat_init": "PTQ calibration QAT starts from: mse, max, entropy, percentile, or best",
    "qat_plan": "what int8-qat keeps float: keep-float (--keep-float only) or auto "
                 "(int8-auto's groups as well, int8-auto built or taken from the cache first; "
                 "the row fails if int8-auto cannot be built)",
    "qat_iters": "QAT optimiser steps of 8 images "
                 "(default: one pass over --qat-images, at least 100)",
    "qat_epochs": "QAT passes over the QAT images (instead of --qat-iters)",
    "qat_minutes": "QAT wall-clock budget in minutes (stops early)",
    "qat_images": "calibration-split images QAT distils on",
    "qat_lr": "QAT peak learning rate (Adam; warm-up over a tenth of the steps, then cosine)",
    "qat_scales": "learn the activation scales during QAT as well as the weights "
                  "(false keeps the PTQ calibration's scales)",
    "progress": "progress bars on calibration, QAT and evaluation",
    "num_classes": "classes the model predicts, when neither its output shape nor its "
                   "metadata tells (end-to-end and [N,7] NMS exports)",
    "class_map": "JSON file mapping the model's class index to a dataset category id, "
                 "e.g. {\"0\": 1, \"1\": 3} or [1, 3] (a model trained on a subset)",
    "diagnose": "INT8 rows: per-layer profile (ORT CPU; on tensorrt the engine's own layers, "
                "built DETAILED) with int8 %, and per-tensor SQNR (layers.csv) in the run folder",
}


def load_config(options: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None,
                pyproject: Path | None = Path("pyproject.toml")) -> BenchConfig:
    """Merge the four sources in precedence order; reject unknown keys."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    merged.update(_from_pyproject(pyproject))
    merged.update(_from_env(env))
    merged.update({k: v for k, v in (options or {}).items() if v is not None})
    _reject_unknown(merged, "option")
    return BenchConfig(**{k: coerce(k, v) for k, v in merged.items()})


def _from_pyproject(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        table = tomllib.loads(path.read_text()).get("tool", {}).get("bench", {})
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    normalised = {k.replace("-", "_"): v for k, v in table.items()}
    _reject_unknown(normalised, f"{path} [tool.bench] key")
    return normalised


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    found = {}
    for key, value in env.items():
        if key.startswith("BENCH_"):
            found[key[len("BENCH_"):].lower()] = value
    unknown = set(found) - set(FIELDS)
    if unknown:
        name = "BENCH_" + sorted(unknown)[0].upper()
        raise ConfigError(f"environment variable {name}: unknown setting; "
                          f"expected BENCH_<one of {', '.join(FIELDS).upper()}>")
    return found


def _reject_unknown(values: Mapping[str, Any], what: str) -> None:
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{what} {unknown[0]!r}: unknown; expected one of {', '.join(FIELDS)}")


def coerce(name: str, value: Any) -> Any:
    """Turn a string (env, CLI) or TOML value into the field's declared type."""
    hint = typing.get_type_hints(BenchConfig)[name]
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if optional and isinstance(value, str) and value.strip().lower() in ("", "none"):
        return None
    try:
        return _coerce_to(base, value)
    except (TypeError, ValueError):
        raise ConfigError(f"option {name}: got {value!r}; expected {_type_name(base)}") from None


def _coerce_to(base: Any, value: Any) -> Any:
    if typing.get_origin(base) is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(str(i).strip() for i in items if str(i).strip())
    if base is bool:
        if isinstance(value, bool):
            return value
        lowered = str(value).strip().lower()
        if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(value)
        return lowered in ("1", "true", "yes", "on")
    if base is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value)
    if base is Path:
        return Path(value).expanduser()
    return base(value)


def _type_name(base: Any) -> str:
    if typing.get_origin(base) is tuple:
        return "a comma-separated list"
    return {int: "an integer", float: "a number", bool: "true or false",
            Path: "a path", str: "a string"}.get(base, str(base))
