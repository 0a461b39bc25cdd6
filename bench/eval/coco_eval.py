"""Detections -> COCO results JSON -> pycocotools COCOeval -> a metrics dict."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bench.data.letterbox import Letterbox, unletterbox_boxes
from bench.errors import InputDataError
from bench.eval.decode import Detections

# Names for COCOeval.stats[0:9], in its order.
METRIC_KEYS = (
    "map",
    "map50",
    "map75",
    "map_small",
    "map_medium",
    "map_large",
    "ar1",
    "ar10",
    "ar100",
)


def to_coco_results(
    image_id: int, det: Detections, box: Letterbox, class_to_category: Sequence[int]
) -> list[dict]:
    """One image's detections as COCO result entries, in original-image coordinates."""
    if len(det) and det.classes.max() >= len(class_to_category):
        raise InputDataError(
            f"class index {int(det.classes.max())} has no category:"
            f" the mapping covers {len(class_to_category)} classes"
        )
    xyxy = unletterbox_boxes(det.boxes, box.ratio, box.pad, box.orig_shape)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1).round(3)
    return [
        {
            "image_id": int(image_id),
            "category_id": int(class_to_category[int(c)]),
            "bbox": [float(v) for v in b],
            "score": round(float(s), 5),
        }
        for b, s, c in zip(xywh, det.scores, det.classes, strict=True)
    ]


def write_results(path: Path, results: list[dict]) -> Path:
    """Write results as a COCO results JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(results, f)
    os.replace(tmp, path)
    return path


def zero_metrics() -> dict[str, float]:
    return dict.fromkeys(METRIC_KEYS, 0.0)


def evaluate(
    coco_gt: COCO, results: list[dict], image_ids: Sequence[int] | None = None
) -> dict[str, float]:
    """COCO bbox metrics of results against coco_gt, over image_ids (default: all).

    A metric COCOeval cannot define (no ground truth in that size range) is NaN; with no
    detections at all every metric is 0.
    """
    if not results:
        return zero_metrics()
    with contextlib.redirect_stdout(io.StringIO()):
        # loadRes adds keys to the entries it is given; hand it copies.
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: _defined(v) for k, v in zip(METRIC_KEYS, ev.stats[: len(METRIC_KEYS)], strict=True)}


def _defined(value: float) -> float:
    return float(value) if value >= 0 else math.nan
