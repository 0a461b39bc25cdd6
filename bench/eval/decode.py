"""Decoding of detector outputs, for every layout that real exports produce.

The layouts are a registry (bench.eval.layouts: raw [B,N,5+C], yolov8 [B,4+C,N],
end2end num_dets/det_boxes/det_scores/det_classes, ort_nms [N,7]); this module picks the
layout that fits a batch of outputs, checks them (finite values, batch size, class
indices against the dataset's class count) and hands them to the layout's decoder.
Boxes come back xyxy in network-input pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bench.errors import InputDataError, ModelError
from bench.eval.layouts import LAYOUTS, get_layout
from bench.eval.layouts.base import (
    DEFAULT_CONF,
    DEFAULT_MAX_DET,
    MAX_NMS,
    DecodeOptions,
    Detections,
    OutputLayout,
    describe,
    xywh_to_xyxy,
)
from bench.eval.nms import DEFAULT_IOU

RAW, YOLOV8, END2END, ORT_NMS = "raw", "yolov8", "end2end", "ort_nms"

__all__ = ["DEFAULT_CONF", "DEFAULT_IOU", "DEFAULT_MAX_DET", "END2END", "MAX_NMS", "ORT_NMS",
           "RAW", "YOLOV8", "Detections", "Layout", "check_class_usage", "check_finite",
           "decode_outputs", "describe", "detect_layout", "xywh_to_xyxy"]


@dataclass(frozen=True)
class Layout:
    """A recognised output layout and the output names it reads, in its own order."""

    kind: str
    names: tuple[str, ...]

    @property
    def decoder(self) -> OutputLayout:
        return get_layout(self.kind)


def _expected() -> str:
    described = [layout.description or layout.name for layout in LAYOUTS.values()]
    return ", ".join(described[:-1]) + " or " + described[-1] if len(described) > 1 \
        else "".join(described)


def _raise_class_mismatch(name: str, shape: tuple, num_classes: int) -> None:
    _, rows, cols = shape
    model_classes, layout = (cols - 5, "[B,N,5+C]") if cols < rows else (rows - 4, "[B,4+C,N]")
    raise InputDataError(
        f"model output {name!r} {list(shape)} read as {layout} predicts {model_classes} classes,"
        f" but the dataset has {num_classes} categories; give --class-map FILE (model class"
        " index -> category id) or the model's own dataset"
    )


def detect_layout(outputs: Mapping[str, np.ndarray], num_classes: int | None = None) -> Layout:
    """Which registered layout these outputs are in; ModelError listing them if none fits.

    With num_classes (the dataset's), a dense output whose class count differs is an
    InputDataError naming both counts.
    """
    for layout in LAYOUTS.values():
        names = layout.matches(outputs, num_classes)
        if names:
            return Layout(layout.name, tuple(names))
    threes = [n for n, a in outputs.items() if np.ndim(a) == 3]
    if num_classes is not None and len(threes) == 1:
        _raise_class_mismatch(threes[0], np.shape(outputs[threes[0]]), num_classes)
    raise ModelError(
        f"unknown output layout: {describe(outputs)}; expected {_expected()}"
        " (a YOLOv7 export needs --grid or --end2end)"
    )


# --- checks -----------------------------------------------------------------------------


def check_finite(outputs: Mapping[str, np.ndarray], names: tuple[str, ...]) -> None:
    for name in names:
        arr = outputs[name]
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            nan, inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
            raise ModelError(
                f"output {name!r} {list(arr.shape)} holds {nan} NaN and {inf} Inf values"
            )


def _check_batch(
    outputs: Mapping[str, np.ndarray], names: tuple[str, ...], batch_size: int
) -> None:
    for name in names:
        shape = np.shape(outputs[name])
        if shape[0] != batch_size:
            raise ModelError(
                f"output {name!r} {list(shape)} has batch {shape[0]}, expected {batch_size}"
            )


def _check_classes(det: Detections, name: str, num_classes: int) -> None:
    if len(det) and (det.classes.min() < 0 or det.classes.max() >= num_classes):
        bad = int(det.classes.max() if det.classes.max() >= num_classes else det.classes.min())
        raise InputDataError(
            f"model output {name!r} holds class index {bad}, but the dataset has"
            f" {num_classes} categories; give --class-map FILE (model class index ->"
            " category id) or the model's own dataset"
        )


def check_class_usage(classes: np.ndarray, num_classes: int, *, min_detections: int = 200,
                      what: str = "model") -> str | None:
    """A warning when a pass's predicted class indices (every image's, together) never
    reach the upper half of the dataset's num_classes: the mark of a model trained on
    fewer classes than the dataset has (an 8-class model scored on COCO's 80), whose
    class i is then read as category i. None when nothing looks wrong or too few
    detections tell."""
    classes = np.asarray(classes).reshape(-1)
    if num_classes < 4 or classes.size < min_detections:
        return None
    highest = int(classes.max())
    if highest + 1 > num_classes // 2:
        return None
    return (f"{what} predicted only class indices 0..{highest} of the dataset's {num_classes}"
            f" over {classes.size} detections: likely trained on {highest + 1} classes; give"
            " --class-map FILE (model class index -> category id) or --num-classes")


# --- decoding ---------------------------------------------------------------------------


def decode_outputs(
    outputs: Mapping[str, np.ndarray],
    *,
    batch_size: int | None = None,
    num_classes: int | None = None,
    conf: float = DEFAULT_CONF,
    iou: float = DEFAULT_IOU,
    max_det: int = DEFAULT_MAX_DET,
    layout: Layout | None = None,
    reference: bool = False,
) -> list[Detections]:
    """Per-image detections for one batch of outputs (name -> array, in model order).

    batch_size: the images in the batch (default: read from the outputs; an [N,7] output
    cannot tell trailing images without detections). num_classes: the dataset's class
    count, checked against the model's when given. Dense layouts are decoded in float32
    by ONNX Runtime's NMS kernel (bench.eval.decode_ort); reference=True uses the numpy
    reference instead, as does an image past YOLOv7's MAX_NMS candidates.
    """
    layout = layout or detect_layout(outputs, num_classes)
    decoder = layout.decoder
    check_finite(outputs, layout.names)
    batch_size = decoder.batch(outputs, layout.names) if batch_size is None else batch_size
    if decoder.checks_batch():
        _check_batch(outputs, layout.names, batch_size)
    options = DecodeOptions(conf=conf, iou=iou, max_det=max_det, reference=reference)
    dets = decoder.decode(outputs, layout.names, batch_size, options)
    if num_classes is not None:
        for det in dets:
            _check_classes(det, layout.names[-1], num_classes)
    return dets
