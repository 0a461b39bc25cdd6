"""YOLO test-time decoding (score, threshold, multi-label class-aware NMS) on ONNX Runtime.

The accuracy pass decodes every image at conf 0.001, where an image brings about a
thousand candidates: the greedy NMS loop in numpy (bench.eval.nms) then costs more than
half the network itself. ONNX Runtime, a core dependency, ships a compiled greedy NMS.
So one small graph per dense layout does the whole dense part for a batch, on one
thread that never spins (it shares the cores with the engine under test):

  raw     [B, N, 5+C]: score = objectness x class score (objectness alone when C = 1),
          rows with objectness <= conf dropped, boxes cx, cy, w, h;
  yolov8  [B, 4+C, N]: score = class score, boxes cx, cy, w, h;

then NonMaxSuppression per image and class at (iou, conf), and for each image the count
of candidates, so that the caller can tell when YOLOv7's MAX_NMS cap would apply.
numpy only merges the classes in score order and keeps the first max_det.

The rule is the reference's (bench.eval.decode._select, torchvision's): per class, boxes
in descending score order, each kept unless a kept box of its class overlaps it by
IoU > iou; the first max_det in global score order (ties: lower row, then lower class).
tests/eval/test_decode_ort.py checks that both agree. Two differences remain, both at the
edge of float arithmetic: the kernel takes IoU in float32, as torchvision does, the
reference in float64, so a pair within ~1e-7 of the threshold may go either way; and
boxes of one class with exactly equal scores leave the kernel's heap in an unspecified
order (torchvision's sort does not fix it either), where the reference takes lower rows
first.
"""

from __future__ import annotations

import threading

import numpy as np
import onnx
from onnx import TensorProto, helper

RAW, YOLOV8 = "raw", "yolov8"
_OPSET = 17
_BIG = 1 << 62
_lock = threading.Lock()
_sessions: dict[tuple[str, bool], object] = {}


def _i64(name: str, values: list[int]) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def _dense_nodes(kind: str, one_class: bool) -> tuple[list, list]:
    """Nodes from `pred` to `boxes` [B, N, 4] (cx, cy, w, h) and `scores` [B, C, N]."""
    inits = [_i64("c0", [0]), _i64("c4", [4]), _i64("c5", [5]), _i64("cbig", [_BIG]),
             _i64("ax1", [1])]
    node = helper.make_node
    if kind == YOLOV8:
        return inits, [
            node("Slice", ["pred", "c0", "c4", "ax1"], ["xywh_t"]),
            node("Transpose", ["xywh_t"], ["boxes"], perm=[0, 2, 1]),
            node("Slice", ["pred", "c4", "cbig", "ax1"], ["scores"]),
        ]
    # Channels first: every slice and product below then runs over contiguous rows of N.
    nodes = [
        node("Transpose", ["pred"], ["pred_t"], perm=[0, 2, 1]),
        node("Slice", ["pred_t", "c0", "c4", "ax1"], ["xywh_t"]),
        node("Transpose", ["xywh_t"], ["boxes"], perm=[0, 2, 1]),
        node("Slice", ["pred_t", "c4", "c5", "ax1"], ["obj"]),
    ]
    if one_class:  # one-class models train no class score: objectness alone
        nodes.append(node("Identity", ["obj"], ["scores"]))
    else:
        # Rows with objectness <= conf are dropped as YOLOv7 drops them: their scores
        # become 0, which no conf >= 0 lets through.
        nodes += [
            node("Slice", ["pred_t", "c5", "cbig", "ax1"], ["cls"]),
            node("Greater", ["obj", "conf"], ["row_ok"]),
            node("Cast", ["row_ok"], ["row_mask"], to=TensorProto.FLOAT),
            node("Mul", ["obj", "row_mask"], ["obj_kept"]),
            node("Mul", ["cls", "obj_kept"], ["scores"]),
        ]
    return inits, nodes


def _graph(kind: str, one_class: bool) -> bytes:
    inits, nodes = _dense_nodes(kind, one_class)
    node = helper.make_node
    nodes += [
        node("NonMaxSuppression", ["boxes", "scores", "max_per_class", "iou", "conf"],
             ["selected"], center_point_box=1),
        node("GatherND", ["scores", "selected"], ["selected_scores"]),
        node("Greater", ["scores", "conf"], ["is_candidate"]),
        node("Cast", ["is_candidate"], ["candidate_f"], to=TensorProto.FLOAT),
        node("Reshape", ["candidate_f", "flat"], ["candidate_flat"]),
        node("ReduceSum", ["candidate_flat", "ax1"], ["candidate_sum"], keepdims=0),
        node("Cast", ["candidate_sum"], ["candidates"], to=TensorProto.INT64),
    ]
    inits.append(_i64("flat", [0, -1]))
    dense = ["B", "N", "K"] if kind == RAW else ["B", "K", "N"]
    inputs = [
        helper.make_tensor_value_info("pred", TensorProto.FLOAT, dense),
        helper.make_tensor_value_info("max_per_class", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1]),
        helper.make_tensor_value_info("conf", TensorProto.FLOAT, [1]),
    ]
    outputs = [
        helper.make_tensor_value_info("selected", TensorProto.INT64, ["S", 3]),
        helper.make_tensor_value_info("selected_scores", TensorProto.FLOAT, ["S"]),
        helper.make_tensor_value_info("candidates", TensorProto.INT64, ["B"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, f"bench_decode_{kind}", inputs, outputs, inits),
        opset_imports=[helper.make_opsetid("", _OPSET)],
        producer_name="bench",
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _session(kind: str, one_class: bool):
    key = (kind, one_class)
    with _lock:
        if key not in _sessions:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            _sessions[key] = ort.InferenceSession(
                _graph(kind, one_class), options, providers=["CPUExecutionProvider"]
            )
        return _sessions[key]


class DenseNms:
    """One batch of dense outputs, decoded and suppressed; per-image picks on demand."""

    def __init__(self, kind: str, pred: np.ndarray, conf: float, iou: float, max_det: int):
        if kind not in (RAW, YOLOV8):
            raise ValueError(f"dense layout {kind!r} unknown; expected {RAW!r} or {YOLOV8!r}")
        self.kind, self.max_det = kind, max_det
        one_class = kind == RAW and pred.shape[2] == 6
        feeds = {
            "pred": np.ascontiguousarray(pred, dtype=np.float32),
            # No class can bring more than max_det boxes into the first max_det overall.
            "max_per_class": np.array([max(max_det, 0)], np.int64),
            "iou": np.array([iou], np.float32),
            "conf": np.array([conf], np.float32),
        }
        selected, scores, self.candidates = _session(kind, one_class).run(None, feeds)
        order = np.argsort(selected[:, 0], kind="stable")  # by image; kernel order within
        self._selected, self._scores = selected[order], scores[order]
        self._bounds = np.searchsorted(self._selected[:, 0], np.arange(pred.shape[0] + 1))

    def picks(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image b's kept (rows, classes, scores), best first, at most max_det."""
        lo, hi = self._bounds[b], self._bounds[b + 1]
        cls, rows = self._selected[lo:hi, 1], self._selected[lo:hi, 2]
        scores = self._scores[lo:hi]
        order = np.lexsort((cls, rows, -scores))[: self.max_det]
        return rows[order], cls[order], scores[order]
