"""The output-layout registry: a new layout is one class plus one register_layout line,
and both decoding paths (numpy reference, ONNX Runtime kernel) pick it up."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from bench.errors import ModelError
from bench.eval.decode import check_class_usage, decode_outputs, detect_layout
from bench.eval.layouts import (
    LAYOUTS,
    DenseLayout,
    OutputLayout,
    register_layout,
    unregister_layout,
)
from bench.eval.layouts.base import select
from bench.eval.layouts.dense import _i64, _slices


class BoxesScoresLayout(OutputLayout):
    """Toy: two outputs, boxes [B, N, 4] xyxy and class scores [B, N, C] (no NMS yet)."""

    name = "toy_boxes_scores"
    description = "boxes [B,N,4] + scores [B,N,C]"

    def matches(self, outputs, num_classes):
        if set(outputs) != {"boxes", "scores"}:
            return None
        return ("boxes", "scores")

    def num_classes(self, outputs, names):
        return int(np.shape(outputs["scores"])[2])

    def decode(self, outputs, names, batch_size, options):
        boxes, scores = (np.asarray(outputs[n], np.float32) for n in names)
        return [select(boxes[b], scores[b], options) for b in range(batch_size)]


class XyxyDenseLayout(DenseLayout):
    """Toy dense layout [B, N, 4+C]: x0, y0, x1, y1, class scores; ONNX Runtime nodes too."""

    name = "toy_xyxy_dense"
    description = "[B,N,4+C] xyxy"
    center_point_box = 0  # NonMaxSuppression reads corners

    def matches(self, outputs, num_classes):
        return ("dets",) if list(outputs) == ["dets"] and np.ndim(outputs["dets"]) == 3 else None

    def candidates(self, pred, conf):
        keep = pred[:, 4:].max(axis=1) > conf
        xyxy = pred[keep, :4]
        return np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]],
                              axis=1), pred[keep, 4:]

    def boxes_xywh(self, pred, rows):
        xyxy = pred[rows, :4]
        return np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)

    def ort_nodes(self, one_class):
        node = helper.make_node
        return [*_slices(), _i64("ax2", [2])], [
            node("Slice", ["pred", "c0", "c4", "ax2"], ["boxes"]),
            node("Slice", ["pred", "c4", "cbig", "ax2"], ["cls"]),
            node("Transpose", ["cls"], ["scores"], perm=[0, 2, 1]),
        ]


@pytest.fixture
def toy_layouts():
    added = [register_layout(BoxesScoresLayout()), register_layout(XyxyDenseLayout())]
    yield added
    for layout in added:
        unregister_layout(layout.name)


def test_registry_holds_the_four_built_in_layouts_in_order():
    assert list(LAYOUTS)[:4] == ["end2end", "ort_nms", "raw", "yolov8"]


def test_a_toy_layout_registered_in_one_line_is_detected_and_decoded(toy_layouts):
    boxes = np.array([[[10, 10, 30, 30], [11, 10, 31, 30], [50, 50, 60, 70]]], np.float32)
    scores = np.array([[[0.9, 0.0], [0.8, 0.0], [0.0, 0.6]]], np.float32)
    outputs = {"boxes": boxes, "scores": scores}
    layout = detect_layout(outputs, 2)
    assert (layout.kind, layout.names) == ("toy_boxes_scores", ("boxes", "scores"))
    det = decode_outputs(outputs, num_classes=2)[0]
    assert det.classes.tolist() == [0, 1]  # the overlapping second box was suppressed
    np.testing.assert_allclose(det.scores, [0.9, 0.6])
    np.testing.assert_allclose(det.boxes[1], [50, 50, 60, 70])


def test_unregistered_layout_is_unknown_again(toy_layouts):
    unregister_layout("toy_boxes_scores")
    with pytest.raises(ModelError, match="unknown output layout: boxes .* expected .*"
                                         r"\[N,7\]"):
        detect_layout({"boxes": np.zeros((1, 3, 4)), "scores": np.zeros((1, 3, 2))}, 2)
    register_layout(BoxesScoresLayout())  # the fixture removes it again


def test_a_toy_dense_layout_decodes_alike_on_onnx_runtime_and_numpy(toy_layouts):
    rng = np.random.default_rng(5)
    corners = rng.uniform(0, 200, (2, 300, 2)).astype(np.float32)
    sizes = rng.uniform(5, 40, (2, 300, 2)).astype(np.float32)
    scores = rng.uniform(0, 1, (2, 300, 3)).astype(np.float32) ** 3
    pred = np.concatenate([corners, corners + sizes, scores], axis=2)
    fast = decode_outputs({"dets": pred}, num_classes=3)
    ref = decode_outputs({"dets": pred}, num_classes=3, reference=True)
    for a, b in zip(fast, ref, strict=True):
        assert len(a) == len(b) > 10
        order_a, order_b = np.argsort(-a.scores, kind="stable"), np.argsort(-b.scores,
                                                                            kind="stable")
        np.testing.assert_array_equal(a.classes[order_a], b.classes[order_b])
        np.testing.assert_allclose(a.boxes[order_a], b.boxes[order_b], atol=1e-3)


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="'raw' is already registered"):
        register_layout(type("Again", (OutputLayout,), {"name": "raw"})())


def test_register_before_puts_a_layout_ahead(toy_layouts):
    unregister_layout("toy_boxes_scores")
    register_layout(BoxesScoresLayout(), before="raw")
    assert list(LAYOUTS).index("toy_boxes_scores") == list(LAYOUTS).index("raw") - 1


def test_class_usage_flags_a_model_predicting_only_low_classes():
    rng = np.random.default_rng(0)
    subset = rng.integers(0, 8, 5000)  # an 8-class model scored on an 80-class dataset
    message = check_class_usage(subset, 80)
    assert message and "only class indices 0..7 of the dataset's 80" in message
    assert "--class-map" in message
    assert check_class_usage(rng.integers(0, 80, 5000), 80) is None
    assert check_class_usage(subset[:50], 80) is None  # too few detections to tell
