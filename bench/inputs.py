"""Resolve what a run measures: the model, the evaluation set and the calibration set.

Paths left unset in the config mean the embedded default: the detector shipped in
bench/models/default and the generated dataset it was trained on (made on first use).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bench.cache import file_sha256
from bench.config import BenchConfig
from bench.errors import ConfigError, InputDataError, ModelError

DEFAULT_IMGSZ = 640


@dataclass(frozen=True)
class RunInputs:
    """The resolved model, datasets and input size of one run."""

    model_path: Path
    model_sha: str
    model_label: str
    dataset: Any  # bench.data.coco.CocoDataset (evaluation split)
    calib_source: Any  # CocoDataset (another split) or ImageFolder
    calib_label: str
    imgsz: int
    fixed_batch: int | None

    def calib_batches(self, count: int, batch: int = 1) -> Iterator[np.ndarray]:
        from bench.data.calibration import calibration_batches

        return calibration_batches(self.calib_source, count, self.imgsz, batch)


def resolve_inputs(cfg: BenchConfig) -> RunInputs:
    model_path, manifest = _model(cfg)
    dims = _input_dims(model_path)
    dataset, calib, calib_label = _datasets(cfg)
    _check_disjoint(calib, dataset)
    imgsz = _imgsz(cfg, dims, manifest)
    return RunInputs(
        model_path=model_path, model_sha=file_sha256(model_path),
        model_label="embedded default" if cfg.model is None else model_path.name,
        dataset=dataset, calib_source=calib, calib_label=calib_label, imgsz=imgsz,
        fixed_batch=dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None)


def _model(cfg: BenchConfig) -> tuple[Path, dict[str, Any]]:
    if cfg.model is None:
        from bench.models.default import default_model_path, load_manifest

        return default_model_path(), load_manifest()
    path = Path(cfg.model)
    if not path.is_file():
        raise ModelError(f"option model: {path} does not exist; expected an ONNX file")
    return path, {}


def _input_dims(path: Path) -> list[int | str | None]:
    """The single image input's dims, read without loading the weights."""
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:
        raise ModelError(f"model {path}: not a readable ONNX file ({exc})") from None
    weights = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise ModelError(f"model {path}: expected one image input, got "
                         f"{[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ModelError(f"model {path}: input {inputs[0].name!r} has shape {dims}; "
                         "expected 4-D [batch, 3, height, width]")
    return dims


def _imgsz(cfg: BenchConfig, dims: list, manifest: dict[str, Any]) -> int:
    height, width = dims[2], dims[3]
    fixed = height if isinstance(height, int) and height > 0 else None
    if fixed and isinstance(width, int) and width != fixed:
        raise ModelError(f"model input is {height}x{width}; expected a square input")
    if cfg.imgsz and fixed and cfg.imgsz != fixed:
        raise ConfigError(f"option imgsz: got {cfg.imgsz}, but the model's input is fixed "
                          f"at {fixed}; expected {fixed} or no --imgsz")
    return cfg.imgsz or fixed or int(manifest.get("imgsz", DEFAULT_IMGSZ))


def _datasets(cfg: BenchConfig) -> tuple[Any, Any, str]:
    from bench.data.coco import CocoDataset

    if cfg.coco is None:
        if cfg.model is not None:
            raise ConfigError("option coco: not given; a user model needs --coco DIR "
                              "(the embedded dataset only fits the embedded model)")
        from bench.data.synthetic import ensure_default

        root = ensure_default(Path(cfg.cache_dir) / "datasets")
        evaluation = CocoDataset(root, split="val")
        return evaluation, _calib_source(cfg, root), "default train split"
    root = Path(cfg.coco)
    evaluation = CocoDataset(root, split=cfg.coco_split or _split_like(root, "val"))
    return evaluation, _calib_source(cfg, Path(cfg.coco)), str(cfg.calib or cfg.coco)


def _calib_source(cfg: BenchConfig, coco_root: Path) -> Any:
    from bench.data.coco import CocoDataset
    from bench.data.images import ImageFolder

    if cfg.calib is not None:
        path = Path(cfg.calib)
        if (path / "annotations").is_dir():
            return CocoDataset(path, split=_split_like(path, "train"))
        return ImageFolder(path)
    split = _split_like(coco_root, "train")
    if split is None:
        raise InputDataError(f"{coco_root}: no training split to calibrate on; "
                             "expected annotations/instances_train*.json or --calib DIR")
    return CocoDataset(coco_root, split=split)


def _split_like(root: Path, prefix: str) -> str | None:
    """The first split named prefix* (train2017, val2017, ...), or None."""
    names = sorted(p.stem.removeprefix("instances_")
                   for p in (root / "annotations").glob(f"instances_{prefix}*.json"))
    return names[0] if names else None


def _check_disjoint(calib: Any, evaluation: Any) -> None:
    from bench.data.calibration import check_disjoint

    check_disjoint(calib, evaluation)
