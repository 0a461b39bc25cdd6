"""Dense layouts: one row (or column) of box, scores per anchor, before any NMS.

They go through YOLOv7's test-time post-processing: score = objectness x class score,
confidence threshold, multi-label (one candidate per class above threshold), class-aware
NMS, max_det per image. Each layout says how to read its candidates twice: in numpy for
the reference (`candidates`), and as ONNX nodes for ONNX Runtime's NMS kernel
(`ort_nodes`, run by bench.eval.decode_ort), which decodes a whole batch in one call.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from bench.eval.decode_ort import DenseNms
from bench.eval.layouts.base import (
    MAX_NMS,
    DecodeOptions,
    Detections,
    OutputLayout,
    Outputs,
    select,
    xywh_to_xyxy,
)

_BIG = 1 << 62


def _i64(name: str, values: list[int]) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def _slices() -> list[onnx.TensorProto]:
    return [_i64("c0", [0]), _i64("c4", [4]), _i64("c5", [5]), _i64("cbig", [_BIG]),
            _i64("ax1", [1])]


class DenseLayout(OutputLayout):
    """A single 3-D output holding every anchor's box (cx, cy, w, h) and scores.

    Subclasses give `candidates` (numpy), `ort_nodes` and `ort_dims` (the graph), and
    `boxes_xywh`; the decoding itself is shared.
    """

    ort_dims: tuple[str, str, str] = ("B", "N", "K")
    center_point_box = 1  # boxes are cx, cy, w, h

    def candidates(self, pred: np.ndarray, conf: float) -> tuple[np.ndarray, np.ndarray]:
        """One image's candidate boxes xywh [n, 4] and class scores [n, C] (numpy)."""
        raise NotImplementedError

    def ort_nodes(self, one_class: bool) -> tuple[list, list]:
        """Initializers and nodes from input `pred` (and `conf` [1]) to `boxes` [B, N, 4]
        and `scores` [B, C, N]."""
        raise NotImplementedError

    def boxes_xywh(self, pred: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """One image's boxes (cx, cy, w, h) at anchor indices rows."""
        raise NotImplementedError

    def one_class(self, pred: np.ndarray) -> bool:
        """Whether the batch is of a one-class model scored by objectness alone."""
        return False

    def _three(self, outputs: Outputs) -> list[str]:
        return [n for n, a in outputs.items() if np.ndim(a) == 3]

    def decode(self, outputs: Outputs, names: tuple[str, ...], batch_size: int,
               options: DecodeOptions) -> list[Detections]:
        pred = np.asarray(outputs[names[0]], np.float32)
        if options.reference:
            return [self.reference(pred[b], options) for b in range(batch_size)]
        dense = DenseNms(self, pred, options.conf, options.iou, options.max_det)
        dets = []
        for b in range(pred.shape[0]):
            if dense.candidates[b] > MAX_NMS:  # YOLOv7's cap applies: the reference does it
                dets.append(self.reference(pred[b], options))
                continue
            rows, cls, scores = dense.picks(b)
            dets.append(Detections.make(xywh_to_xyxy(self.boxes_xywh(pred[b], rows)),
                                        scores, cls))
        return dets

    def reference(self, pred: np.ndarray, options: DecodeOptions) -> Detections:
        """One image decoded by the numpy reference."""
        xywh, scores = self.candidates(pred, options.conf)
        return select(xywh_to_xyxy(xywh), scores, options)


class RawLayout(DenseLayout):
    """[B, N, 5+C]: cx, cy, w, h, objectness, class scores (YOLOv5 / YOLOv7 --grid)."""

    name = "raw"
    description = "[B,N,5+C]"

    def matches(self, outputs: Outputs, num_classes: int | None) -> tuple[str, ...] | None:
        threes = self._three(outputs)
        if num_classes is None:
            if len(threes) == 1:
                shape = np.shape(outputs[threes[0]])
                return (threes[0],) if 6 <= shape[2] < shape[1] else None
            return None
        # [B, 4+C, 5+C] would fit yolov8 too; YOLOv7's raw layout wins (registered first).
        fits = [n for n in threes if np.shape(outputs[n])[2] == 5 + num_classes]
        return (fits[0],) if fits else None

    def num_classes(self, outputs: Outputs, names: tuple[str, ...]) -> int | None:
        return int(np.shape(outputs[names[0]])[2]) - 5

    def one_class(self, pred: np.ndarray) -> bool:
        return pred.shape[2] == 6

    def candidates(self, pred: np.ndarray, conf: float) -> tuple[np.ndarray, np.ndarray]:
        pred = pred[pred[:, 4] > conf]
        # One-class models train no class score (YOLOv7 uses objectness alone there).
        cls = pred[:, 4:5] if pred.shape[1] == 6 else pred[:, 5:] * pred[:, 4:5]
        return pred[:, :4], cls

    def boxes_xywh(self, pred: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return pred[rows, :4]

    def ort_nodes(self, one_class: bool) -> tuple[list, list]:
        node = helper.make_node
        # Channels first: every slice and product below then runs over contiguous rows of N.
        nodes = [
            node("Transpose", ["pred"], ["pred_t"], perm=[0, 2, 1]),
            node("Slice", ["pred_t", "c0", "c4", "ax1"], ["xywh_t"]),
            node("Transpose", ["xywh_t"], ["boxes"], perm=[0, 2, 1]),
            node("Slice", ["pred_t", "c4", "c5", "ax1"], ["obj"]),
        ]
        if one_class:  # one-class models train no class score: objectness alone
            nodes.append(node("Identity", ["obj"], ["scores"]))
            return _slices(), nodes
        # Rows with objectness <= conf are dropped as YOLOv7 drops them: their scores
        # become 0, which no conf >= 0 lets through.
        nodes += [
            node("Slice", ["pred_t", "c5", "cbig", "ax1"], ["cls"]),
            node("Greater", ["obj", "conf"], ["row_ok"]),
            node("Cast", ["row_ok"], ["row_mask"], to=TensorProto.FLOAT),
            node("Mul", ["obj", "row_mask"], ["obj_kept"]),
            node("Mul", ["cls", "obj_kept"], ["scores"]),
        ]
        return _slices(), nodes


class Yolov8Layout(DenseLayout):
    """[B, 4+C, N]: cx, cy, w, h, class scores, no objectness (YOLOv8 and later)."""

    name = "yolov8"
    description = "[B,4+C,N]"
    ort_dims = ("B", "K", "N")

    def matches(self, outputs: Outputs, num_classes: int | None) -> tuple[str, ...] | None:
        threes = self._three(outputs)
        if num_classes is None:
            if len(threes) == 1:
                shape = np.shape(outputs[threes[0]])
                return (threes[0],) if 5 <= shape[1] <= shape[2] else None
            return None
        fits = [n for n in threes if np.shape(outputs[n])[1] == 4 + num_classes]
        return (fits[0],) if fits else None

    def num_classes(self, outputs: Outputs, names: tuple[str, ...]) -> int | None:
        return int(np.shape(outputs[names[0]])[1]) - 4

    def candidates(self, pred: np.ndarray, conf: float) -> tuple[np.ndarray, np.ndarray]:
        pred = pred.T
        pred = pred[pred[:, 4:].max(axis=1) > conf] if pred.shape[0] else pred
        return pred[:, :4], pred[:, 4:]

    def boxes_xywh(self, pred: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return pred[:4, rows].T

    def ort_nodes(self, one_class: bool) -> tuple[list, list]:
        node = helper.make_node
        return _slices(), [
            node("Slice", ["pred", "c0", "c4", "ax1"], ["xywh_t"]),
            node("Transpose", ["xywh_t"], ["boxes"], perm=[0, 2, 1]),
            node("Slice", ["pred", "c4", "cbig", "ax1"], ["scores"]),
        ]
