"""YOLO test-time decoding (score, threshold, multi-label class-aware NMS) on ONNX Runtime.

The accuracy pass decodes every image at conf 0.001, where an image brings about a
thousand candidates: the greedy NMS loop in numpy (bench.eval.nms) then costs more than
half the network itself. ONNX Runtime, a core dependency, ships a compiled greedy NMS.
So one small graph per dense layout does the whole dense part for a batch, on one
thread that never spins (it shares the cores with the engine under test): the layout's
own nodes (bench.eval.layouts.dense: DenseLayout.ort_nodes) turn its output into boxes
and per-class scores, e.g.

  raw     [B, N, 5+C]: score = objectness x class score (objectness alone when C = 1),
          rows with objectness <= conf dropped, boxes cx, cy, w, h;
  yolov8  [B, 4+C, N]: score = class score, boxes cx, cy, w, h;

then NonMaxSuppression per image and class at (iou, conf), and for each image the count
of candidates, so that the caller can tell when YOLOv7's MAX_NMS cap would apply.
numpy only merges the classes in score order and keeps the first max_det.

The rule is the reference's (bench.eval.layouts.base.select, torchvision's): per class, boxes
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
from typing import Protocol

import numpy as np
import onnx
from onnx import TensorProto, helper

_OPSET = 17
_lock = threading.Lock()
_sessions: dict[tuple[str, bool], object] = {}


class DenseGraph(Protocol):
    """What a dense layout gives this module (bench.eval.layouts.dense.DenseLayout)."""

    name: str
    ort_dims: tuple[str, str, str]
    center_point_box: int

    def ort_nodes(self, one_class: bool) -> tuple[list, list]: ...

    def one_class(self, pred: np.ndarray) -> bool: ...


def _i64(name: str, values: list[int]) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def _graph(layout: DenseGraph, one_class: bool) -> bytes:
    inits, nodes = layout.ort_nodes(one_class)
    inits, nodes = list(inits), list(nodes)
    node = helper.make_node
    nodes += [
        node("NonMaxSuppression", ["boxes", "scores", "max_per_class", "iou", "conf"],
             ["selected"], center_point_box=layout.center_point_box),
        node("GatherND", ["scores", "selected"], ["selected_scores"]),
        node("Greater", ["scores", "conf"], ["is_candidate"]),
        node("Cast", ["is_candidate"], ["candidate_f"], to=TensorProto.FLOAT),
        node("Reshape", ["candidate_f", "bench_flat"], ["candidate_flat"]),
        node("ReduceSum", ["candidate_flat", "bench_ax1"], ["candidate_sum"], keepdims=0),
        node("Cast", ["candidate_sum"], ["candidates"], to=TensorProto.INT64),
    ]
    inits += [_i64("bench_flat", [0, -1]), _i64("bench_ax1", [1])]
    inputs = [
        helper.make_tensor_value_info("pred", TensorProto.FLOAT, list(layout.ort_dims)),
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
        helper.make_graph(nodes, f"bench_decode_{layout.name}", inputs, outputs, inits),
        opset_imports=[helper.make_opsetid("", _OPSET)],
        producer_name="bench",
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _session(layout: DenseGraph, one_class: bool):
    key = (layout.name, one_class)
    with _lock:
        if key not in _sessions:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            _sessions[key] = ort.InferenceSession(
                _graph(layout, one_class), options, providers=["CPUExecutionProvider"]
            )
        return _sessions[key]


def _as_layout(layout: DenseGraph | str) -> DenseGraph:
    if not isinstance(layout, str):
        return layout
    from bench.eval.layouts import DenseLayout, get_layout

    found = get_layout(layout)
    if not isinstance(found, DenseLayout):
        raise ValueError(f"layout {layout!r} is not dense; expected a DenseLayout")
    return found


class DenseNms:
    """One batch of dense outputs, decoded and suppressed; per-image picks on demand.

    layout: a dense layout object (or its registered name, e.g. "raw")."""

    def __init__(self, layout: DenseGraph | str, pred: np.ndarray, conf: float, iou: float,
                 max_det: int):
        layout = _as_layout(layout)
        self.kind, self.max_det = layout.name, max_det
        feeds = {
            "pred": np.ascontiguousarray(pred, dtype=np.float32),
            # No class can bring more than max_det boxes into the first max_det overall.
            "max_per_class": np.array([max(max_det, 0)], np.int64),
            "iou": np.array([iou], np.float32),
            "conf": np.array([conf], np.float32),
        }
        session = _session(layout, layout.one_class(pred))
        selected, scores, self.candidates = session.run(None, feeds)
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
