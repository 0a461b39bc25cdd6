"""Resolve what a run measures: the model, the evaluation set and the calibration set.

Paths left unset in the config mean the embedded default: the detector shipped in
bench/models/default and the generated dataset it was trained on (made on first use).

Everything about the model that can be refused is refused here, once, before any
variant is built: a file that is not an ONNX model, an input that is not one float32
image tensor, an op the backend cannot run (a TensorRT plugin on ONNX Runtime), a
dynamic input size the model does not tell, and a class count that differs from the
dataset's without a class map.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from bench.cache import file_sha256
from bench.config import BenchConfig
from bench.errors import ConfigError, InputDataError, ModelError
from bench.eval.layouts import graph as model_graph
from bench.onnx_file import check_model_file, load_model

DEFAULT_IMGSZ = 640
_NMS_LAYOUTS = ("end2end", "ort_nms")
_ORT_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc")


@dataclass(frozen=True)
class RunInputs:
    """The resolved model, datasets and input size of one run.

    num_classes: the classes the model predicts (None when only its outputs will tell);
    layout: the output layout read from the graph ('' when the shapes are dynamic);
    classes_from: where num_classes was read (for reports).
    """

    model_path: Path
    model_sha: str
    model_label: str
    dataset: Any  # bench.data.coco.CocoDataset (evaluation split)
    calib_source: Any  # CocoDataset (another split) or ImageFolder
    calib_label: str
    imgsz: int
    fixed_batch: int | None
    num_classes: int | None = None
    layout: str = ""
    classes_from: str = ""

    def calib_batches(self, count: int, batch: int = 1) -> Iterator[np.ndarray]:
        from bench.data.calibration import calibration_batches

        return calibration_batches(self.calib_source, count, self.imgsz, batch)


@dataclass(frozen=True)
class _Model:
    path: Path
    proto: onnx.ModelProto
    input_name: str
    dims: list[int | str | None]
    manifest: dict[str, Any]


def resolve_inputs(cfg: BenchConfig) -> RunInputs:
    """The run's inputs, every model and dataset check done; BenchError naming the culprit."""
    model = _model(cfg)
    _check_backend_ops(model, cfg.backend)
    imgsz = _imgsz(cfg, model)
    shapes = model_graph.shapes(model.proto)
    layout, from_shape = model_graph.layout_of(model.proto, shapes)
    if not layout and cfg.backend != "tensorrt":
        layout, from_shape = _probe_layout(model, imgsz)
    if layout == model_graph.UNKNOWN:
        raise ModelError(f"model {model.path}: unknown output layout: {_outputs_of(model)}; "
                         f"expected {_layouts_known()} (a YOLOv7 export needs --grid or "
                         "--end2end)")
    classes = _model_classes(cfg, model, shapes, from_shape)
    class_map = _class_map(cfg, model, classes)
    dataset, calib, calib_label = _datasets(cfg, class_map)
    _check_disjoint(calib, dataset)
    _check_classes(cfg, model, layout, classes, class_map, dataset)
    dims = model.dims
    return RunInputs(
        model_path=model.path, model_sha=file_sha256(model.path),
        model_label="embedded default" if cfg.model is None else model.path.name,
        dataset=dataset, calib_source=calib, calib_label=calib_label, imgsz=imgsz,
        fixed_batch=dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None,
        num_classes=classes.count if classes else None, layout=layout,
        classes_from=classes.source if classes else "")


# --- the model file ---------------------------------------------------------------------


def _model(cfg: BenchConfig) -> _Model:
    if cfg.model is None:
        from bench.models.default import default_model_path, load_manifest

        path, manifest = default_model_path(), load_manifest()
    else:
        path, manifest = check_model_file(Path(cfg.model), "option model"), {}
    proto = load_model(path, what="model")
    name, dims = _image_input(path, proto)
    return _Model(path, proto, name, dims, manifest)


def _image_input(path: Path, proto: onnx.ModelProto) -> tuple[str, list[int | str | None]]:
    """The single image input's name and dims; it must be float32 [batch, 3, H, W]."""
    graph = proto.graph
    weights = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise ModelError(f"model {path}: expected one image input, got "
                         f"{[i.name for i in inputs]}")
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        found = helper.tensor_dtype_to_string(tensor.elem_type).removeprefix("TensorProto.")
        raise ModelError(f"model {path}: input {inputs[0].name!r} has dtype {found.lower()}; "
                         "expected float32 (the FP32 model; the harness builds fp16 and int8 "
                         "variants itself)")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in tensor.shape.dim]
    if len(dims) != 4:
        raise ModelError(f"model {path}: input {inputs[0].name!r} has shape {dims}; "
                         "expected 4-D [batch, 3, height, width]")
    return inputs[0].name, dims


def _op_name(node: onnx.NodeProto) -> str:
    return f"{node.domain}::{node.op_type}" if node.domain else node.op_type


def _blocker(node: onnx.NodeProto, backend: str) -> str | None:
    """Why `backend` cannot run this node, with the fix; None when it can."""
    if backend == "tensorrt":
        return None
    if node.op_type.endswith("_TRT"):
        fix = ("run with --backend tensorrt, or export with --max-wh for ONNX Runtime's NMS"
               if "NMS" in node.op_type else "run with --backend tensorrt")
        return f"{node.op_type} is a TensorRT plugin: {fix}"
    if backend == "onnxruntime":
        if node.domain not in _ORT_DOMAINS:
            return (f"{_op_name(node)} is a custom op (domain {node.domain!r}) that ONNX "
                    "Runtime does not have: export without it, or run with --backend tensorrt "
                    "if it is a TensorRT plugin")
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            return f"{node.op_type} is not an ONNX op: export with standard ONNX ops"
    if backend == "torch":
        from bench.models.onnx_ops import OPS

        # Constant nodes are folded by the interpreter itself (bench.models.onnx_torch).
        if node.domain not in ("", "ai.onnx") or node.op_type not in (*OPS, "Constant"):
            return (f"{_op_name(node)} is not supported by the torch backend's ONNX "
                    "interpreter: run with --backend onnxruntime")
    return None


def _check_backend_ops(model: _Model, backend: str) -> None:
    """One ModelError for the first op type the backend cannot load, with the fix."""
    seen: set[tuple[str, str]] = set()
    for node in model.proto.graph.node:
        if (node.domain, node.op_type) in seen:
            continue
        seen.add((node.domain, node.op_type))
        reason = _blocker(node, backend)
        if reason:
            count = sum(n.op_type == node.op_type for n in model.proto.graph.node)
            raise ModelError(f"model {model.path}: {reason} (node {node.name or '?'!r}"
                             f"{f' and {count - 1} more' if count > 1 else ''}; "
                             f"backend {backend})")


def _outputs_of(model: _Model) -> str:
    dims = model_graph.shapes(model.proto)
    return ", ".join(f"{o.name} {[d if d else '?' for d in dims.get(o.name, [])]}"
                     for o in model.proto.graph.output)


def _layouts_known() -> str:
    from bench.eval.layouts import LAYOUTS

    return ", ".join(layout.description or layout.name for layout in LAYOUTS.values())


def _probe_layout(model: _Model, imgsz: int) -> tuple[str, int | None]:
    """Output dims not static (a dynamic batch or H/W export): run the model once on a
    blank image with ONNX Runtime, so the layout and class count are known before any
    variant; a model that cannot run at imgsz is refused here, not in every row."""
    import onnxruntime as ort

    from bench.errors import first_line

    batch = model.dims[0] if isinstance(model.dims[0], int) and model.dims[0] > 0 else 1
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.proto.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        values = session.run(None, {model.input_name: np.zeros((batch, 3, imgsz, imgsz),
                                                                np.float32)})
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
        raise ModelError(f"model {model.path}: ONNX Runtime cannot run it at {imgsz}x{imgsz} "
                         f"({first_line(exc)}); give --imgsz the size it was exported at"
                         ) from None
    return model_graph.layout_of_outputs(dict(zip(names, values, strict=True)))


# --- input size ---------------------------------------------------------------------------


def _imgsz(cfg: BenchConfig, model: _Model) -> int:
    height, width = model.dims[2], model.dims[3]
    fixed = height if isinstance(height, int) and height > 0 else None
    if fixed and isinstance(width, int) and width != fixed:
        raise ModelError(f"model {model.path}: input is {height}x{width}; "
                         "expected a square input")
    if fixed:
        if cfg.imgsz and cfg.imgsz != fixed:
            raise ConfigError(f"option imgsz: got {cfg.imgsz}, but the model's input is fixed "
                              f"at {fixed}; expected {fixed} or no --imgsz")
        return fixed
    return _dynamic_imgsz(cfg, model)


def _dynamic_imgsz(cfg: BenchConfig, model: _Model) -> int:
    """H and W dynamic: --imgsz, else what the model tells (a baked decode grid, metadata,
    the embedded default's manifest); else refused."""
    baked = model_graph.baked_imgsz(model.proto)
    if baked and cfg.imgsz and cfg.imgsz != baked:
        raise ConfigError(f"option imgsz: got {cfg.imgsz}, but model {model.path} has its "
                          f"decode grids baked for {baked}x{baked} (dynamic H/W in name only); "
                          f"expected {baked} or no --imgsz")
    told = (cfg.imgsz or baked or model_graph.metadata_imgsz(model.proto)
            or model.manifest.get("imgsz"))
    if told:
        return int(told)
    if cfg.model is None:
        return DEFAULT_IMGSZ
    raise ConfigError(f"option imgsz: model {model.path} has dynamic height and width "
                      f"({model.dims[2]}x{model.dims[3]}) and does not tell its size; "
                      "give --imgsz N (a multiple of 32, e.g. the size it was exported at)")


# --- classes ------------------------------------------------------------------------------


def _model_classes(cfg: BenchConfig, model: _Model, shapes: dict,
                   from_shape: int | None) -> model_graph.ClassCount | None:
    """The model's class count: its output shape, else an NMS op's scores, else metadata,
    else --num-classes. A --num-classes that contradicts the model is refused."""
    told = None
    if from_shape is not None:
        told = model_graph.ClassCount(from_shape, "its output shape")
    told = told or model_graph.nms_classes(model.proto, shapes) \
        or model_graph.metadata_classes(model.proto)
    if cfg.num_classes is not None and cfg.num_classes < 1:
        raise ConfigError(f"option num_classes: got {cfg.num_classes}; expected a positive "
                          "integer")
    if told and cfg.num_classes is not None and cfg.num_classes != told.count:
        raise ConfigError(f"option num_classes: got {cfg.num_classes}, but model {model.path} "
                          f"predicts {told.count} classes (from {told.source}); expected "
                          f"{told.count} or no --num-classes")
    if told is None and cfg.num_classes is not None:
        return model_graph.ClassCount(cfg.num_classes, "--num-classes")
    return told


def load_class_map(path: Path) -> list[int]:
    """A class map file: JSON list [cat_of_class_0, ...] or object {"0": cat, ...}; the
    list it means, model class index -> dataset category id. InputDataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"option class_map: {path} not found; expected a JSON file")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputDataError(f"class map {path}: not valid JSON ({exc})") from None
    if isinstance(data, dict):
        try:
            data = {int(k): v for k, v in data.items()}
        except ValueError:
            raise InputDataError(f"class map {path}: keys must be model class indices "
                                 f"0..N-1, got {sorted(data)[:5]}") from None
        if sorted(data) != list(range(len(data))):
            raise InputDataError(f"class map {path}: keys must be 0..{len(data) - 1} "
                                 f"(every model class), got {sorted(data)[:10]}")
        data = [data[i] for i in range(len(data))]
    if not isinstance(data, list) or not data or \
            not all(isinstance(v, int) and not isinstance(v, bool) for v in data):
        raise InputDataError(f"class map {path}: expected a non-empty JSON list of category "
                             "ids or an object {\"class index\": category id}")
    return data


def _class_map(cfg: BenchConfig, model: _Model,
               classes: model_graph.ClassCount | None) -> list[int] | None:
    if cfg.class_map is None:
        return None
    class_map = load_class_map(cfg.class_map)
    if classes and len(class_map) != classes.count:
        raise InputDataError(f"class map {cfg.class_map}: maps {len(class_map)} classes, "
                             f"but model {model.path} predicts {classes.count} (from "
                             f"{classes.source}); expected one entry per model class")
    return class_map


def _check_classes(cfg: BenchConfig, model: _Model, layout: str,
                   classes: model_graph.ClassCount | None, class_map: list[int] | None,
                   dataset: Any) -> None:
    fix = ("give --class-map FILE (JSON: model class index -> category id) or evaluate on "
           "the model's own dataset (--coco DIR)")
    if class_map is not None:
        return  # its length was checked against the model, its ids against the dataset
    if classes is None:
        if layout in _NMS_LAYOUTS:
            raise ModelError(f"model {model.path}: its outputs come after NMS ({layout}) and "
                             "neither they nor its metadata tell how many classes it "
                             "predicts; give --num-classes N or --class-map FILE")
        return  # dense outputs with dynamic dims: checked against the outputs when it runs
    if classes.count != dataset.num_classes:
        raise InputDataError(f"model {model.path} predicts {classes.count} classes (from "
                             f"{classes.source}), but the dataset "
                             f"{dataset.annotation_path} has {dataset.num_classes} "
                             f"categories; {fix}")


# --- datasets -----------------------------------------------------------------------------


def _datasets(cfg: BenchConfig, class_map: list[int] | None) -> tuple[Any, Any, str]:
    from bench.data.coco import CocoDataset

    if cfg.coco is None:
        from bench.data.synthetic import ensure_default

        root = ensure_default(Path(cfg.cache_dir) / "datasets")
        evaluation = _with_map(CocoDataset, cfg, class_map, root, "val")
        return evaluation, _calib_source(cfg, root), "default train split"
    root = Path(cfg.coco)
    split = cfg.coco_split or _split_like(root, "val")
    evaluation = _with_map(CocoDataset, cfg, class_map, root, split)
    return evaluation, _calib_source(cfg, Path(cfg.coco)), str(cfg.calib or cfg.coco)


def _with_map(dataset_cls, cfg: BenchConfig, class_map, root: Path, split: str | None):
    try:
        return dataset_cls(root, split=split, class_map=class_map, lenient=cfg.coco_lenient)
    except InputDataError as exc:
        if class_map is None:
            raise
        detail = str(exc).removeprefix("class map ")
        raise InputDataError(f"class map {cfg.class_map}: {detail}") from None


def _calib_source(cfg: BenchConfig, coco_root: Path) -> Any:
    from bench.data.coco import CocoDataset
    from bench.data.images import ImageFolder

    if cfg.calib is not None:
        path = Path(cfg.calib)
        if (path / "annotations").is_dir():
            return CocoDataset(path, split=_split_like(path, "train"), lenient=cfg.coco_lenient)
        return ImageFolder(path)
    split = _split_like(coco_root, "train")
    if split is None:
        raise InputDataError(f"{coco_root}: no training split to calibrate on; "
                             "expected annotations/instances_train*.json or --calib DIR")
    return CocoDataset(coco_root, split=split, lenient=cfg.coco_lenient)


def _split_like(root: Path, prefix: str) -> str | None:
    """The first split named prefix* (train2017, val2017, ...), or None."""
    names = sorted(p.stem.removeprefix("instances_")
                   for p in (root / "annotations").glob(f"instances_{prefix}*.json"))
    return names[0] if names else None


def _check_disjoint(calib: Any, evaluation: Any) -> None:
    from bench.data.calibration import check_disjoint

    check_disjoint(calib, evaluation)
