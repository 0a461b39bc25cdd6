"""What every output layout shares: detections, decode options, the layout interface and
YOLOv7's candidate selection (multi-label, class-aware NMS, max_det)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bench.eval.nms import DEFAULT_IOU, batched_nms

DEFAULT_CONF = 0.001
DEFAULT_MAX_DET = 300
MAX_NMS = 30000  # candidates kept for NMS, highest scores first, as YOLOv7 does

Outputs = Mapping[str, np.ndarray]


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
class DecodeOptions:
    """The test-time protocol: confidence threshold, NMS IoU, detections per image;
    reference=True decodes dense layouts with the numpy reference instead of ONNX Runtime."""

    conf: float = DEFAULT_CONF
    iou: float = DEFAULT_IOU
    max_det: int = DEFAULT_MAX_DET
    reference: bool = False


class OutputLayout:
    """One output layout: which outputs it reads, their batch size, and their decoding.

    A new layout subclasses this, sets `name` and `description`, and is registered with
    bench.eval.layouts.register_layout (one line in that package's __init__).
    """

    name = "abstract"
    description = ""

    def matches(self, outputs: Outputs, num_classes: int | None) -> tuple[str, ...] | None:
        """The names of the outputs this layout reads, in its own order, or None.

        num_classes: the dataset's class count, when known (to tell apart layouts that
        only the class count separates); None when decoding without a dataset.
        """
        raise NotImplementedError

    def batch(self, outputs: Outputs, names: tuple[str, ...]) -> int:
        """The batch size the outputs hold (default: the first output's first dim)."""
        return int(np.shape(outputs[names[0]])[0])

    def decode(self, outputs: Outputs, names: tuple[str, ...], batch_size: int,
               options: DecodeOptions) -> list[Detections]:
        """Per-image detections, boxes xyxy in network-input pixels."""
        raise NotImplementedError

    def num_classes(self, outputs: Outputs, names: tuple[str, ...]) -> int | None:
        """The class count the output shapes tell, or None when they do not (after NMS)."""
        return None

    def checks_batch(self) -> bool:
        """Whether every output read carries the batch as its first dim."""
        return True


def describe(outputs: Outputs) -> str:
    return ", ".join(f"{name} {list(np.shape(a))}" for name, a in outputs.items())


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    half = xywh[:, 2:4] / 2
    return np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)


def select(boxes: np.ndarray, class_scores: np.ndarray, options: DecodeOptions) -> Detections:
    """The numpy reference: multi-label candidates above conf (at most MAX_NMS, the best,
    as YOLOv7 caps them), class-aware NMS, at most max_det. boxes xyxy [n, 4]."""
    rows, cls = np.nonzero(class_scores > options.conf)
    scores = class_scores[rows, cls]
    if scores.size > MAX_NMS:
        top_k = np.argsort(-scores, kind="stable")[:MAX_NMS]
        rows, cls, scores = rows[top_k], cls[top_k], scores[top_k]
    picked = boxes[rows]
    keep = batched_nms(picked, scores, cls, options.iou, max_keep=options.max_det)
    return Detections.make(picked[keep], scores[keep], cls[keep])


def top(det: Detections, options: DecodeOptions) -> Detections:
    """Detections above conf, best first, at most max_det (for outputs already after NMS)."""
    keep = np.nonzero(det.scores > options.conf)[0]
    keep = keep[np.argsort(-det.scores[keep], kind="stable")][: options.max_det]
    return Detections(det.boxes[keep], det.scores[keep], det.classes[keep])
