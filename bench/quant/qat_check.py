"""int8-qat's keep check: the starting calibration or the trained weights, whichever agrees
better with the FP32 model on the held-out QAT images, as ONNX Runtime runs the Q/DQ model.

Label-free: the FP32 model's own detections on the held-out images are the ground truth,
taken at each score threshold of PSEUDO_THRESHOLDS; each candidate's detections (the
accuracy pass's conf, iou and max_det) are scored against them with the harness's COCO
evaluator (mAP@[.5:.95]), and the mean over the thresholds is its agreement. The trained
weights are kept only when they agree better than the start; a tie keeps the start.

Why not the head outputs' error the training minimises (bench.quant.qat._holdout_error):
it falls whenever training runs, including when the weights got worse. Measured on the
embedded default (AVX2 EPYC host, 2026-12-02, six int8-qat builds from four starts, two of
them at learning rates that hurt): the head error fell in all six (e.g. 0.0100 → 0.0049)
while the eval-set ΔmAP against the start was −0.0084 and −0.0173 in the two hurt builds;
the agreement on the 64 held-out images had the eval-set ΔmAP's sign in all six (−0.037
and −0.060 for the hurt ones, +0.0024…+0.012 for the four at +0.0004…+0.0035). Running
the real Q/DQ model also catches what the interpreter's fake quantization does not
simulate: the CPU's own INT8 arithmetic (int8 mAP differs between hosts with and without
VNNI) and an NMS baked into the export.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from bench.errors import ModelError

PSEUDO_THRESHOLDS = (0.1, 0.25, 0.5)
# Bumped when the check's rule changes: an artifact chosen by an older rule is not reused.
CHECK_VERSION = 1
_BATCH = 8  # images a run when the model's batch dimension is free


@dataclass(frozen=True)
class Agreement:
    """Each candidate's agreement with the FP32 model (mean pseudo-label mAP) on `images`
    held-out images; thresholds: the pseudo-label thresholds that had any box."""

    scores: Mapping[str, float]
    images: int
    thresholds: tuple[float, ...]

    @property
    def kept(self) -> str:
        """"trained" when it agrees strictly better than "initial", else "initial"."""
        return "trained" if self.scores["trained"] > self.scores["initial"] else "initial"


def engine_unavailable(model: onnx.ModelProto) -> str | None:
    """Why ONNX Runtime cannot run `model` on the CPU (e.g. a TensorRT plugin op inside),
    or None when it can: the check then runs on it."""
    try:
        _session(model)
    except Exception as exc:  # noqa: BLE001 - any load failure means: use the head check
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return None


def compare(fp32: onnx.ModelProto, candidates: Mapping[str, onnx.ModelProto],
            images: np.ndarray, *, fixed_batch: int | None, conf: float, iou: float,
            max_det: int) -> Agreement | None:
    """Agreement of every candidate with fp32 on images (letterboxed [N, 3, H, W], uint8
    pixels or floats in [0, 1]); None when fp32 detects nothing at the lowest threshold."""
    if len(images) == 0:
        return None
    settings = {"fixed_batch": fixed_batch, "conf": conf, "iou": iou, "max_det": max_det}
    teacher = _detections(fp32, images, **settings)
    found = {name: _detections(model, images, **settings) for name, model in candidates.items()}
    n_classes = 1 + max((int(d.classes.max()) for dets in (teacher, *found.values())
                         for d in dets if len(d)), default=0)
    size = images.shape[2:]
    truths = {tau: _pseudo_truth(teacher, tau, size, n_classes) for tau in PSEUDO_THRESHOLDS}
    truths = {tau: gt for tau, gt in truths.items() if gt.dataset["annotations"]}
    if not truths:
        return None
    scores = {name: float(np.mean([_map(gt, dets) for gt in truths.values()]))
              for name, dets in found.items()}
    return Agreement(scores, len(images), tuple(truths))


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _detections(model: onnx.ModelProto, images: np.ndarray, *, fixed_batch: int | None,
                conf: float, iou: float, max_det: int) -> list:
    """Per-image Detections of model on images, decoded as the accuracy pass decodes."""
    from bench.eval.decode import decode_outputs, detect_layout

    session = _session(model)
    name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    size = fixed_batch or _BATCH
    layout, found = None, []
    for start in range(0, len(images), size):
        real = min(size, len(images) - start)
        index = np.arange(start, start + (size if fixed_batch else real)) % len(images)
        batch = images[index]
        batch = batch.astype(np.float32) / 255.0 if batch.dtype == np.uint8 \
            else batch.astype(np.float32)
        got = dict(zip(outputs, session.run(None, {name: batch}), strict=True))
        layout = layout or detect_layout(got)
        dets = decode_outputs(got, batch_size=len(index), conf=conf, iou=iou,
                              max_det=max_det, layout=layout)
        found.extend(dets[:real])
    if len(found) != len(images):
        raise ModelError(f"int8-qat check: {len(found)} images decoded of {len(images)}")
    return found


def _pseudo_truth(teacher: list, tau: float, size: tuple[int, int], n_classes: int):
    """The FP32 detections scoring >= tau as a COCO ground truth (image i -> id i + 1,
    class c -> category c + 1), boxes in network-input pixels."""
    from bench.data.coco import coco_from_dict

    height, width = int(size[0]), int(size[1])
    annotations = []
    for i, det in enumerate(teacher):
        for box, cls in zip(det.boxes[det.scores >= tau], det.classes[det.scores >= tau],
                            strict=True):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": int(cls) + 1, "iscrowd": 0, "area": w * h,
                                "bbox": [float(box[0]), float(box[1]), w, h]})
    return coco_from_dict({
        "images": [{"id": i + 1, "width": width, "height": height} for i in range(len(teacher))],
        "categories": [{"id": c + 1, "name": str(c)} for c in range(n_classes)],
        "annotations": annotations})


def _map(truth, dets: list) -> float:
    from bench.eval.coco_eval import evaluate

    rows = [np.column_stack([np.full(len(d), i + 1), d.boxes[:, :2],
                             d.boxes[:, 2:] - d.boxes[:, :2], d.scores, d.classes + 1])
            for i, d in enumerate(dets) if len(d)]
    results = np.concatenate(rows).astype(np.float64) if rows else np.zeros((0, 7))
    return evaluate(truth, results, evaluator="numpy")["map"]
