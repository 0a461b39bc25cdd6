"""Decoding of detector outputs, for every layout that real exports produce.

  raw      [B, N, 5+C]  cx, cy, w, h, objectness, class scores (YOLOv5 / YOLOv7 --grid)
  yolov8   [B, 4+C, N]  cx, cy, w, h, class scores, no objectness (YOLOv8 and later)
  end2end  num_dets [B,1], det_boxes [B,K,4] xyxy, det_scores [B,K], det_classes [B,K]
           (TensorRT EfficientNMS, YOLOv7 --end2end for TensorRT)
  ort_nms  [M, 7]  batch index, x0, y0, x1, y1, class, score (YOLOv7 --end2end for ORT)

The layout is told apart by output names and shapes. raw and yolov8 go through YOLOv7's
test-time post-processing: score = objectness x class score, confidence threshold,
multi-label (one candidate per class above threshold), class-aware NMS, max_det per
image. Boxes come back xyxy in network-input pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bench.errors import InputDataError, ModelError
from bench.eval.decode_ort import DenseNms
from bench.eval.nms import DEFAULT_IOU, batched_nms

DEFAULT_CONF = 0.001
DEFAULT_MAX_DET = 300
MAX_NMS = 30000  # candidates kept for NMS, highest scores first, as YOLOv7 does

RAW, YOLOV8, END2END, ORT_NMS = "raw", "yolov8", "end2end", "ort_nms"


@dataclass(frozen=True)
class Detections:
    """One image's detections: xyxy boxes [n, 4] in network-input pixels, scores, class indices."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.scores)
        if self.boxes.shape != (n, 4) or self.classes.shape != (n,):
            raise ValueError(
                f"detections disagree: boxes {self.boxes.shape}, scores ({n},),"
                f" classes {self.classes.shape}"
            )

    @classmethod
    def make(cls, boxes, scores, classes) -> Detections:
        return cls(
            np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(scores, np.float32).reshape(-1),
            np.asarray(classes, np.int64).reshape(-1),
        )

    @classmethod
    def empty(cls) -> Detections:
        return cls.make(np.zeros((0, 4)), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class Layout:
    """A recognised output layout and the output names it reads, in its own order."""

    kind: str
    names: tuple[str, ...]


def describe(outputs: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{name} {list(np.shape(a))}" for name, a in outputs.items())


# --- layout detection -----------------------------------------------------------------


def _find_by_name(outputs: Mapping[str, np.ndarray], key: str) -> str | None:
    found = [n for n in outputs if key in n.lower()]
    return found[0] if len(found) == 1 else None


def _end2end_by_name(outputs: Mapping[str, np.ndarray]) -> tuple[str, ...] | None:
    names = tuple(_find_by_name(outputs, k) for k in ("num", "box", "score", "class"))
    return names if None not in names and len(set(names)) == 4 else None


def _end2end_by_shape(outputs: Mapping[str, np.ndarray]) -> tuple[str, ...] | None:
    shapes = {n: np.shape(a) for n, a in outputs.items()}
    nums = [n for n, s in shapes.items() if len(s) == 2 and s[1] == 1]
    boxes = [n for n, s in shapes.items() if len(s) == 3 and s[2] == 4]
    if len(outputs) != 4 or len(nums) != 1 or len(boxes) != 1:
        return None
    k = shapes[boxes[0]][1]
    pair = [n for n, s in shapes.items() if len(s) == 2 and s[1] == k and n not in nums]
    if len(pair) != 2:
        return None
    # Integer output = classes; otherwise the plugin's order: scores before classes.
    if np.issubdtype(outputs[pair[0]].dtype, np.integer) and not np.issubdtype(
        outputs[pair[1]].dtype, np.integer
    ):
        pair.reverse()
    return (nums[0], boxes[0], pair[0], pair[1])


def _dense(outputs: Mapping[str, np.ndarray], num_classes: int | None) -> Layout | None:
    threes = [n for n, a in outputs.items() if np.ndim(a) == 3]
    if num_classes is None:  # no dataset to check against: the layout from the shape alone
        return (
            _dense_by_shape(threes[0], np.shape(outputs[threes[0]])) if len(threes) == 1 else None
        )
    for name in threes:
        _, rows, cols = np.shape(outputs[name])
        # [B, 4+C, 5+C] would fit both; YOLOv7's raw layout wins, being this harness's own.
        if cols == 5 + num_classes:
            return Layout(RAW, (name,))
        if rows == 4 + num_classes:
            return Layout(YOLOV8, (name,))
    if len(threes) == 1:
        _raise_class_mismatch(threes[0], np.shape(outputs[threes[0]]), num_classes)
    return None


def _dense_by_shape(name: str, shape: tuple) -> Layout:
    """[B, N, 5+C] when the last dim is the short one, else [B, 4+C, N]."""
    return Layout(RAW if shape[2] < shape[1] else YOLOV8, (name,))


def _raise_class_mismatch(name: str, shape: tuple, num_classes: int) -> None:
    _, rows, cols = shape
    model_classes, layout = (cols - 5, "[B,N,5+C]") if cols < rows else (rows - 4, "[B,4+C,N]")
    raise InputDataError(
        f"model output {name!r} {list(shape)} read as {layout} predicts {model_classes} classes,"
        f" but the dataset has {num_classes} categories"
    )


def detect_layout(outputs: Mapping[str, np.ndarray], num_classes: int | None = None) -> Layout:
    """Which layout these outputs are in; ModelError listing them if none fits.

    With num_classes (the dataset's), a dense output whose class count differs is an
    InputDataError naming both counts.
    """
    e2e = _end2end_by_name(outputs) if len(outputs) == 4 else None
    e2e = e2e or _end2end_by_shape(outputs)
    if e2e:
        return Layout(END2END, e2e)
    sevens = [n for n, a in outputs.items() if np.ndim(a) == 2 and np.shape(a)[1] == 7]
    if len(sevens) == 1 and len(outputs) == 1:
        return Layout(ORT_NMS, (sevens[0],))
    dense = _dense(outputs, num_classes)
    if dense:
        return dense
    raise ModelError(
        f"unknown output layout: {describe(outputs)}; expected [B,N,5+C], [B,4+C,N],"
        " end-to-end (num_dets, det_boxes, det_scores, det_classes) or [N,7]"
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
        raise InputDataError(
            f"model output {name!r} holds class index {int(det.classes.max())}, but the dataset has"
            f" {num_classes} categories"
        )


# --- decoders -----------------------------------------------------------------------------


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    half = xywh[:, 2:4] / 2
    return np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)


def _select(
    boxes: np.ndarray, class_scores: np.ndarray, conf: float, iou: float, max_det: int
) -> Detections:
    """The numpy reference: multi-label candidates above conf (at most MAX_NMS, the best,
    as YOLOv7 caps them), class-aware NMS, at most max_det."""
    rows, cls = np.nonzero(class_scores > conf)
    scores = class_scores[rows, cls]
    if scores.size > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        rows, cls, scores = rows[top], cls[top], scores[top]
    picked = boxes[rows]
    keep = batched_nms(picked, scores, cls, iou, max_keep=max_det)
    return Detections.make(picked[keep], scores[keep], cls[keep])


def _decode_raw(pred: np.ndarray, conf: float, iou: float, max_det: int) -> Detections:
    pred = pred[pred[:, 4] > conf]
    # One-class models train no class score (YOLOv7 uses objectness alone there).
    cls = pred[:, 4:5] if pred.shape[1] == 6 else pred[:, 5:] * pred[:, 4:5]
    return _select(xywh_to_xyxy(pred[:, :4]), cls, conf, iou, max_det)


def _decode_yolov8(pred: np.ndarray, conf: float, iou: float, max_det: int) -> Detections:
    pred = pred.T
    pred = pred[pred[:, 4:].max(axis=1) > conf] if pred.shape[0] else pred
    return _select(xywh_to_xyxy(pred[:, :4]), pred[:, 4:], conf, iou, max_det)


def _top(det: Detections, conf: float, max_det: int) -> Detections:
    keep = np.nonzero(det.scores > conf)[0]
    keep = keep[np.argsort(-det.scores[keep], kind="stable")][:max_det]
    return Detections(det.boxes[keep], det.scores[keep], det.classes[keep])


def _decode_end2end(outputs, names, b: int, conf: float, max_det: int) -> Detections:
    num, boxes, scores, classes = (outputs[n] for n in names)
    n = int(np.clip(num[b].reshape(-1)[0], 0, boxes.shape[1]))
    det = Detections.make(boxes[b, :n], scores[b, :n], np.rint(classes[b, :n]))
    return _top(det, conf, max_det)


def _decode_ort_nms(rows: np.ndarray, b: int, conf: float, max_det: int) -> Detections:
    mine = rows[np.rint(rows[:, 0]) == b]
    return _top(Detections.make(mine[:, 1:5], mine[:, 6], np.rint(mine[:, 5])), conf, max_det)


def _batch_of(outputs: Mapping[str, np.ndarray], layout: Layout) -> int:
    first = outputs[layout.names[0]]
    if layout.kind != ORT_NMS:
        return int(np.shape(first)[0])
    return int(first[:, 0].max()) + 1 if len(first) else 1


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
    check_finite(outputs, layout.names)
    batch_size = _batch_of(outputs, layout) if batch_size is None else batch_size
    if layout.kind != ORT_NMS:
        _check_batch(outputs, layout.names, batch_size)
    if layout.kind in (RAW, YOLOV8):
        outputs = {layout.names[0]: np.asarray(outputs[layout.names[0]], np.float32)}
    if layout.kind in (RAW, YOLOV8) and not reference:
        dets = _decode_dense(outputs[layout.names[0]], layout.kind, conf, iou, max_det)
    else:
        dets = [_decode_one(outputs, layout, b, conf, iou, max_det) for b in range(batch_size)]
    if num_classes is not None:
        for det in dets:
            _check_classes(det, layout.names[-1], num_classes)
    return dets


def _decode_dense(
    pred: np.ndarray, kind: str, conf: float, iou: float, max_det: int
) -> list[Detections]:
    dense = DenseNms(kind, pred, conf, iou, max_det)
    dets = []
    for b in range(pred.shape[0]):
        if dense.candidates[b] > MAX_NMS:  # YOLOv7's cap applies: the reference does it
            decode = _decode_raw if kind == RAW else _decode_yolov8
            dets.append(decode(pred[b], conf, iou, max_det))
            continue
        rows, cls, scores = dense.picks(b)
        xywh = pred[b, rows, :4] if kind == RAW else pred[b][:4, rows].T
        dets.append(Detections.make(xywh_to_xyxy(xywh), scores, cls))
    return dets


def _decode_one(
    outputs, layout: Layout, b: int, conf: float, iou: float, max_det: int
) -> Detections:
    if layout.kind == RAW:
        return _decode_raw(outputs[layout.names[0]][b], conf, iou, max_det)
    if layout.kind == YOLOV8:
        return _decode_yolov8(outputs[layout.names[0]][b], conf, iou, max_det)
    if layout.kind == END2END:
        return _decode_end2end(outputs, layout.names, b, conf, max_det)
    return _decode_ort_nms(outputs[layout.names[0]], b, conf, max_det)
