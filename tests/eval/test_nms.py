import numpy as np
import pytest

from bench.eval import nms as nms_module
from bench.eval.nms import batched_nms, iou_matrix, nms


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference(boxes, scores, classes, iou):
    """Brute force: by descending score, keep a box unless a kept one of its class overlaps."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if all(classes[k] != classes[i] or _iou(boxes[i], boxes[k]) <= iou for k in kept):
            kept.append(i)
    return kept


def _random_boxes(rng, n, lo=-20.0, hi=300.0):
    xy = rng.uniform(lo, hi, size=(n, 2))
    wh = rng.uniform(1, 80, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


@pytest.mark.parametrize("seed", range(5))
def test_batched_nms_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, 300)
    scores = rng.random(300).round(2)  # rounding makes ties, resolved by input order
    classes = rng.integers(0, 4, 300)
    got = batched_nms(boxes, scores, classes, iou=0.5).tolist()
    assert got == _reference(boxes, scores, classes, 0.5)
    assert 0 < len(got) < 300


def test_agnostic_nms_matches_brute_force():
    rng = np.random.default_rng(9)
    boxes = _random_boxes(rng, 200)
    scores = rng.random(200)
    assert nms(boxes, scores, 0.65).tolist() == _reference(boxes, scores, np.zeros(200), 0.65)


def test_max_keep_truncates_the_full_result():
    rng = np.random.default_rng(1)
    boxes, scores, classes = _random_boxes(rng, 100), rng.random(100), rng.integers(0, 3, 100)
    full = batched_nms(boxes, scores, classes, 0.65)
    assert batched_nms(boxes, scores, classes, 0.65, max_keep=7).tolist() == full[:7].tolist()


def test_classes_do_not_suppress_each_other():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]], float)
    scores = np.array([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, np.array([0, 1, 0])).tolist() == [0, 1]
    assert nms(boxes, scores).tolist() == [0]
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0)).tolist() == []


def test_iou_values():
    box = np.array([[0.0, 0.0, 10.0, 10.0]])
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 3]], float)
    np.testing.assert_allclose(iou_matrix(box, others), [[1.0, 50 / 150, 0.0, 0.0]])


def _one_by_one(boxes, scores, iou):
    """Vectorised box-by-box greedy NMS, the textbook loop."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        keep.append(int(order[0]))
        rest = order[1:]
        order = rest[iou_matrix(boxes[order[:1]], boxes[rest])[0] <= iou]
    return keep


@pytest.mark.parametrize("n, iou", [(1500, 0.65), (3000, 0.3)])
def test_many_candidates_span_several_blocks(n, iou):
    assert n > 2 * nms_module._BLOCK
    rng = np.random.default_rng(n)
    boxes = _random_boxes(rng, n, 0, 200)
    scores = rng.random(n).astype(np.float32)
    got = nms(boxes, scores, iou).tolist()
    assert got == _one_by_one(boxes, scores, iou)
    assert nms(boxes, scores, iou, max_keep=300).tolist() == got[:300]


def test_brute_force_across_blocks():
    rng = np.random.default_rng(3)
    boxes = _random_boxes(rng, 1100, 0, 400)
    scores = rng.random(1100).round(3)
    classes = rng.integers(0, 3, 1100)
    got = batched_nms(boxes, scores, classes, iou=0.45).tolist()
    assert got == _reference(boxes, scores, classes, 0.45)
