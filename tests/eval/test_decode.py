import numpy as np
import pytest

from bench.errors import InputDataError, ModelError
from bench.eval.decode import (
    END2END,
    ORT_NMS,
    RAW,
    YOLOV8,
    Detections,
    decode_outputs,
    detect_layout,
)

C = 3  # classes


def _row(cx, cy, w, h, obj, cls):
    return [cx, cy, w, h, obj, *cls]


def _raw_batch() -> np.ndarray:
    img0 = [
        _row(50, 50, 20, 20, 0.9, [0.0, 0.9, 0.0]),  # class 1, score 0.81
        _row(51, 50, 20, 20, 0.8, [0.0, 0.9, 0.0]),  # class 1, 0.72, IoU ~0.9 -> suppressed
        _row(51, 50, 20, 20, 0.8, [0.0, 0.0, 0.5]),  # class 2, 0.4: other class, kept
        _row(10, 10, 4, 4, 0.0005, [1.0, 1.0, 1.0]),  # objectness under conf -> dropped
        _row(100, 120, 10, 30, 0.5, [0.6, 0.0, 0.3]),  # multi-label: class 0 (0.3) and 2 (0.15)
    ]
    img1 = [_row(5, 5, 2, 2, 0.0, [0, 0, 0])] * 5
    return np.array([img0, img1], dtype=np.float32)


def _assert_image0(det: Detections):
    order = np.argsort(-det.scores)
    assert det.classes[order].tolist() == [1, 2, 0, 2]
    np.testing.assert_allclose(det.scores[order], [0.81, 0.4, 0.3, 0.15], rtol=1e-6)
    np.testing.assert_allclose(det.boxes[order][0], [40, 40, 60, 60])
    np.testing.assert_allclose(det.boxes[order][2], [95, 105, 105, 135])


def test_raw_layout_yolov7_postprocessing():
    outputs = {"output": _raw_batch()}
    assert detect_layout(outputs, C).kind == RAW
    dets = decode_outputs(outputs, batch_size=2, num_classes=C)
    _assert_image0(dets[0])
    assert len(dets[1]) == 0 and dets[1].boxes.shape == (0, 4)


def test_raw_grid_export_with_auxiliary_head_outputs():
    outputs = {"output": _raw_batch(), "528": np.zeros((2, 3, 4, 4, 5 + C), np.float32)}
    layout = detect_layout(outputs, C)
    assert layout.kind == RAW and layout.names == ("output",)


def test_max_det_and_conf():
    dets = decode_outputs({"output": _raw_batch()}, batch_size=2, num_classes=C, max_det=2)
    assert sorted(dets[0].scores.tolist()) == pytest.approx([0.4, 0.81])
    dets = decode_outputs({"output": _raw_batch()}, batch_size=2, num_classes=C, conf=0.35)
    assert sorted(dets[0].classes.tolist()) == [1, 2]


def test_yolov8_layout():
    raw = _raw_batch()
    v8 = np.concatenate([raw[..., :4], raw[..., 5:] * raw[..., 4:5]], axis=-1).transpose(0, 2, 1)
    v8 = np.ascontiguousarray(np.concatenate([v8] * 3, axis=2))  # N = 15 > 4 + C
    v8[:, :, 5:] = 0  # only the first copy scores
    outputs = {"output0": v8}
    assert detect_layout(outputs, C).kind == YOLOV8
    dets = decode_outputs(outputs, batch_size=2, num_classes=C)
    _assert_image0(dets[0])
    assert len(dets[1]) == 0


def _end2end(names=("num_dets", "det_boxes", "det_scores", "det_classes")):
    boxes = np.zeros((2, 5, 4), np.float32)
    boxes[0, :2] = [[1, 2, 3, 4], [5, 6, 7, 8]]
    boxes[1, 0] = [9, 9, 19, 19]
    scores = np.array([[0.9, 0.2, 0.7, 0.7, 0.7], [0.5, 0, 0, 0, 0]], np.float32)  # past n: padding
    classes = np.array([[2, 0, 1, 1, 1], [1, 0, 0, 0, 0]], np.int32)
    num = np.array([[2], [1]], np.int32)
    return dict(zip(names, (num, boxes, scores, classes), strict=True))


@pytest.mark.parametrize(
    "names",
    [
        ("num_dets", "det_boxes", "det_scores", "det_classes"),
        ("num_detections", "detection_boxes", "detection_scores", "detection_classes"),
        ("a", "b", "c", "d"),  # no telling names: shapes and dtypes decide
    ],
)
def test_end2end_layout(names):
    outputs = _end2end(names)
    layout = detect_layout(outputs, C)
    assert layout.kind == END2END and layout.names == names
    dets = decode_outputs(outputs, batch_size=2, num_classes=C)
    assert dets[0].classes.tolist() == [2, 0] and dets[0].scores.tolist() == pytest.approx(
        [0.9, 0.2]
    )
    np.testing.assert_allclose(dets[0].boxes, [[1, 2, 3, 4], [5, 6, 7, 8]])
    assert dets[1].classes.tolist() == [1] and len(dets[1]) == 1


def test_end2end_class_out_of_range():
    outputs = _end2end()
    outputs["det_classes"][0, 0] = 7
    with pytest.raises(InputDataError, match=r"'det_classes' holds class index 7.* 3 categories"):
        decode_outputs(outputs, batch_size=2, num_classes=C)


def test_ort_nms_layout():
    rows = np.array(
        [[0, 1, 2, 3, 4, 1, 0.5], [1, 10, 10, 20, 20, 0, 0.9], [0, 5, 5, 9, 9, 2, 0.8]], np.float32
    )
    outputs = {"output": rows}
    assert detect_layout(outputs, C).kind == ORT_NMS
    dets = decode_outputs(outputs, batch_size=3, num_classes=C)
    assert dets[0].classes.tolist() == [2, 1] and dets[0].scores.tolist() == pytest.approx(
        [0.8, 0.5]
    )
    np.testing.assert_allclose(dets[1].boxes, [[10, 10, 20, 20]])
    assert len(dets[2]) == 0
    empty = decode_outputs({"output": np.zeros((0, 7), np.float32)}, batch_size=1, num_classes=C)
    assert len(empty[0]) == 0


def test_nan_names_the_tensor():
    raw = _raw_batch()
    raw[1, 2, 3] = np.nan
    with pytest.raises(ModelError, match=r"output 'output' \[2, 5, 8\] holds 1 NaN"):
        decode_outputs({"output": raw}, batch_size=2, num_classes=C)


@pytest.mark.parametrize(
    "shape, model_classes", [((1, 25200, 85), 80), ((1, 84, 8400), 80), ((1, 100, 6), 1)]
)
def test_class_count_mismatch_names_both_counts(shape, model_classes):
    with pytest.raises(
        InputDataError, match=f"predicts {model_classes} classes, but the dataset has 8"
    ):
        detect_layout({"output": np.zeros(shape, np.float32)}, 8)


def test_unknown_layout_lists_outputs():
    outputs = {"p3": np.zeros((1, 3, 8, 8, 85)), "p4": np.zeros((1, 3, 4, 4, 85))}
    with pytest.raises(ModelError, match=r"p3 \[1, 3, 8, 8, 85\], p4 \[1, 3, 4, 4, 85\]"):
        detect_layout(outputs, 80)


def test_batch_mismatch_is_a_model_error():
    with pytest.raises(ModelError, match="has batch 2, expected 4"):
        decode_outputs({"output": _raw_batch()}, batch_size=4, num_classes=C)


def test_one_class_model_uses_objectness():
    pred = np.array([[[10, 10, 4, 4, 0.7, 0.5]]], np.float32)
    (det,) = decode_outputs({"output": pred}, batch_size=1, num_classes=1)
    assert det.scores.tolist() == pytest.approx([0.7]) and det.classes.tolist() == [0]


def test_without_dataset_counts_the_shapes_decide():
    raw = np.concatenate([_raw_batch(), np.zeros((2, 15, 5 + C), np.float32)], axis=1)
    dets = decode_outputs({"output": raw})  # [2, 20, 8]: batch size and classes from the shape
    assert len(dets) == 2
    _assert_image0(dets[0])
    rows = np.array([[1, 1, 2, 3, 4, 0, 0.5]], np.float32)
    assert len(decode_outputs({"output": rows})) == 2  # batch index 1 -> two images
    v8 = np.zeros((1, 4 + 80, 8400), np.float32)
    assert detect_layout({"output0": v8}).kind == YOLOV8
