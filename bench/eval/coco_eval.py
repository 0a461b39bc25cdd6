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


# Columns of a results array, as pycocotools' loadRes takes one.
RESULT_COLUMNS = ("image_id", "x", "y", "w", "h", "score", "category_id")


def to_coco_array(
    image_id: int, det: Detections, box: Letterbox, class_to_category: Sequence[int]
) -> np.ndarray:
    """One image's detections as an [n, 7] results array (RESULT_COLUMNS), in
    original-image coordinates; boxes rounded to 3 decimals and scores to 5, as YOLOv7's
    results JSON has them."""
    if len(det) and det.classes.max() >= len(class_to_category):
        raise InputDataError(
            f"class index {int(det.classes.max())} has no category:"
            f" the mapping covers {len(class_to_category)} classes"
        )
    xyxy = unletterbox_boxes(det.boxes, box.ratio, box.pad, box.orig_shape)
    out = np.empty((len(det), 7), dtype=np.float64)
    out[:, 0] = image_id
    out[:, 1:3] = xyxy[:, :2]
    out[:, 3:5] = xyxy[:, 2:] - xyxy[:, :2]
    out[:, 1:5] = out[:, 1:5].round(3)
    out[:, 5] = det.scores.astype(np.float64).round(5)
    out[:, 6] = np.asarray(class_to_category, dtype=np.int64)[det.classes]
    return out


def array_to_dicts(results: np.ndarray) -> list[dict]:
    """A results array as COCO result entries (image_id, category_id, bbox, score)."""
    rows = np.asarray(results, dtype=np.float64).reshape(-1, 7)
    return [
        {"image_id": int(r[0]), "category_id": int(r[6]), "bbox": r[1:5], "score": r[5]}
        for r in rows.tolist()
    ]


def to_coco_results(
    image_id: int, det: Detections, box: Letterbox, class_to_category: Sequence[int]
) -> list[dict]:
    """One image's detections as COCO result entries, in original-image coordinates."""
    return array_to_dicts(to_coco_array(image_id, det, box, class_to_category))


def write_results(path: Path, results: list[dict] | np.ndarray) -> Path:
    """Write results (entries or a results array) as a COCO results JSON, atomically."""
    if isinstance(results, np.ndarray):
        results = array_to_dicts(results)
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
    coco_gt: COCO, results: list[dict] | np.ndarray, image_ids: Sequence[int] | None = None
) -> dict[str, float]:
    """COCO bbox metrics of results against coco_gt, over image_ids (default: all).

    results: COCO result entries, or a results array (RESULT_COLUMNS). A metric COCOeval
    cannot define (no ground truth in that size range) is NaN; with no detections at all
    every metric is 0.
    """
    if len(results) == 0:
        return zero_metrics()
    # loadRes adds keys to the entries it is given: hand it fresh ones.
    given = (
        array_to_dicts(results) if isinstance(results, np.ndarray) else [dict(r) for r in results]
    )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(given)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: _defined(v) for k, v in zip(METRIC_KEYS, ev.stats[: len(METRIC_KEYS)], strict=True)}


def _defined(value: float) -> float:
    return float(value) if value >= 0 else math.nan
