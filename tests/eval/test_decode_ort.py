"""The ONNX Runtime decode path against the numpy reference, on data made to stress NMS."""

import numpy as np
import pytest

from bench.eval.decode import RAW, YOLOV8, Detections, decode_outputs
from bench.eval.layouts import base, dense


def _clustered(rng, n: int, classes: int) -> np.ndarray:
    """[n, 5+C] raw rows: boxes in tight clusters (heavy overlap), scores over decades."""
    centres = rng.uniform(20, 300, size=(max(1, n // 12), 2))
    pick = rng.integers(0, len(centres), n)
    xy = centres[pick] + rng.normal(0, 3, size=(n, 2))
    wh = rng.uniform(8, 60, size=(n, 1)) * rng.uniform(0.8, 1.25, size=(n, 2))
    obj = 10 ** rng.uniform(-4, 0, size=(n, 1))
    cls = rng.uniform(0, 1, size=(n, classes))
    return np.concatenate([xy, wh, obj, cls], axis=1).astype(np.float32)


def _same(a: Detections, b: Detections) -> bool:
    return (
        np.array_equal(a.classes, b.classes)
        and np.array_equal(a.scores, b.scores)
        and np.array_equal(a.boxes, b.boxes)
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", [RAW, YOLOV8])
def test_matches_the_numpy_reference(seed, kind):
    rng = np.random.default_rng(seed)
    pred = np.stack([_clustered(rng, 700, 5) for _ in range(3)])  # [3, 700, 10]
    if kind == YOLOV8:  # [B, 4+C, N]: no objectness, class scores as they are
        pred = np.ascontiguousarray(np.delete(pred, 4, axis=2).transpose(0, 2, 1))
    out = {"output": pred}
    for max_det in (300, 25):
        fast = decode_outputs(out, num_classes=5, max_det=max_det, iou=0.5)
        ref = decode_outputs(out, num_classes=5, max_det=max_det, iou=0.5, reference=True)
        assert [len(d) for d in fast] == [len(d) for d in ref]
        assert all(_same(a, b) for a, b in zip(fast, ref, strict=True))
        assert all(len(d) <= max_det for d in fast)
    # The data really exercises suppression: many candidates, far fewer kept.
    assert sum(len(d) for d in ref) < 0.5 * np.count_nonzero(
        (pred[..., 5:] * pred[..., 4:5] if kind == RAW else pred[:, 4:]) > 0.001
    )


def test_one_class_model_and_empty_images_match():
    rng = np.random.default_rng(9)
    # [B, N, 6]: a one-class model's class column is untrained; objectness is the score.
    pred = np.stack([_clustered(rng, 400, 1), np.zeros((400, 6), np.float32)])
    fast = decode_outputs({"output": pred}, num_classes=1)
    ref = decode_outputs({"output": pred}, num_classes=1, reference=True)
    assert len(fast[0]) > 0 and len(fast[1]) == 0
    assert all(_same(a, b) for a, b in zip(fast, ref, strict=True))


def test_past_max_nms_candidates_the_reference_caps_them(monkeypatch):
    rng = np.random.default_rng(3)
    pred = _clustered(rng, 500, 4)[None]
    candidates = np.count_nonzero(pred[0, :, 5:] * pred[0, :, 4:5] > 0.001)
    for module in (base, dense):  # the cap as the kernel path and the reference see it
        monkeypatch.setattr(module, "MAX_NMS", candidates // 2)
    calls = []
    real = dense.select
    monkeypatch.setattr(dense, "select", lambda *a: calls.append(1) or real(*a))
    capped = decode_outputs({"output": pred}, num_classes=4, max_det=10_000)[0]
    assert calls == [1]  # the image went to the reference, which applies the cap
    for module in (base, dense):
        monkeypatch.setattr(module, "MAX_NMS", candidates)
    full = decode_outputs({"output": pred}, num_classes=4, max_det=10_000)[0]
    assert calls == [1]  # at the cap exactly: the kernel path
    assert len(capped) < len(full)  # the cap dropped the lower half of the candidates
    assert capped.scores.min() > full.scores.min()


def test_default_model_outputs_match(tmp_path):
    """On the embedded detector's own outputs for generated images like its training set's."""
    from bench.data import synthetic
    from bench.data.coco import CocoDataset
    from bench.data.letterbox import letterbox
    from bench.engines.ort import OrtEngine
    from bench.models.default import default_model_path, load_manifest

    imgsz = load_manifest()["training"]["imgsz"]
    ds = CocoDataset.open(synthetic.generate(tmp_path, n_train=1, n_eval=4, progress=False), "val")
    batch = np.stack([letterbox(ds.load_rgb(i), imgsz)[0] for i in sorted(ds.image_ids)])
    with OrtEngine(default_model_path()) as engine:
        outputs = engine.infer(batch)
    fast = decode_outputs(outputs, num_classes=ds.num_classes)
    ref = decode_outputs(outputs, num_classes=ds.num_classes, reference=True)
    assert min(len(d) for d in ref) > 20
    assert all(_same(a, b) for a, b in zip(fast, ref, strict=True))
