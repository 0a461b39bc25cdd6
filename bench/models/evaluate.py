"""COCO mAP of a PyTorch detector during training, with the suite's own pieces
(bench.data letterbox, bench.eval decoding, NMS and COCOeval), so the figure recorded in
the manifest is measured the way the suites measure the exported model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.data.coco import CocoDataset
from bench.data.letterbox import letterbox
from bench.eval.coco_eval import evaluate as coco_evaluate
from bench.eval.coco_eval import to_coco_results
from bench.eval.decode import DEFAULT_CONF, DEFAULT_MAX_DET, decode_outputs
from bench.eval.nms import DEFAULT_IOU

PROTOCOL = {"conf": DEFAULT_CONF, "iou": DEFAULT_IOU, "max_det": DEFAULT_MAX_DET,
            "letterbox_pad": 114}


@dataclass(frozen=True)
class EvalResult:
    map: float      # AP@[.5:.95]
    map50: float
    num_images: int
    num_detections: int


@torch.no_grad()
def predict(model: torch.nn.Module, ds: CocoDataset, imgsz: int, batch: int = 32,
            max_det: int = DEFAULT_MAX_DET) -> list[dict]:
    """COCO-format detections of ``model`` (switched to eval mode) on every image of ds."""
    model.eval()
    results: list[dict] = []
    ids = ds.image_ids
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        placed = [letterbox(ds.load_rgb(i), imgsz) for i in chunk]
        x = torch.from_numpy(np.stack([p for p, _ in placed]))
        outputs = {"output": model(x).numpy()}
        dets = decode_outputs(outputs, num_classes=ds.num_classes, max_det=max_det)
        for image_id, (_, box), det in zip(chunk, placed, dets):
            results += to_coco_results(image_id, det, box, ds.class_to_category)
    return results


def evaluate(model: torch.nn.Module, ds: CocoDataset, imgsz: int) -> EvalResult:
    """Predict on every image of ds and score it with pycocotools."""
    results = predict(model, ds, imgsz)
    metrics = coco_evaluate(ds.coco, results, ds.image_ids)
    return EvalResult(metrics["map"], metrics["map50"], len(ds), len(results))
