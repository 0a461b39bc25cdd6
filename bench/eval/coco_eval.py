"""Detections -> a COCO results array -> COCO evaluation -> the twelve metrics.

Three evaluators give the same twelve summary figures: "numpy" (the default,
bench.eval.coco_numpy: pycocotools' COCOeval vectorised over images, the same floats),
"faster" (faster-coco-eval: matching and accumulation in C++, equal to the last bits)
and "pycocotools" (the reference implementation). All take the detections as an [n, 7]
results array (RESULT_COLUMNS); the harness never builds per-detection dicts itself
(faster-coco-eval and pycocotools do, inside).

Measured (2 cores, 2026-12-02): the default's 46k detections on its 250 images took
0.08-0.11 s in "numpy", 0.25-0.30 s in "faster" and 1.9-2.0 s in pycocotools; at
val2017's shape (5000 images, 1.5 M detections) 2.5-3.7 s in "numpy", 12.9-15.2 s in
"faster" and 77-104 s in pycocotools (scripts/bench_eval_scale.py prints these).
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import math
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bench.atomic import atomic_write
from bench.data.letterbox import Letterbox, unletterbox_boxes
from bench.errors import ConfigError, InputDataError
from bench.eval.decode import Detections

# Names for COCOeval.stats[0:12], in its order: AP over IoU 0.50:0.95, at 0.50, at 0.75,
# AP for small / medium / large objects, AR at 1 / 10 / 100 detections an image, and AR
# (100 detections) for small / medium / large objects.
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
    "ar_small",
    "ar_medium",
    "ar_large",
)

# The evaluators evaluate() accepts; the first is the default.
EVALUATORS = ("numpy", "faster", "pycocotools")
DEFAULT_EVALUATOR = EVALUATORS[0]
FASTER_PACKAGE = "faster-coco-eval"

# Columns of a results array, as both evaluators' loadRes take one.
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
    """A results array as COCO result entries (image_id, category_id, bbox, score), for
    the results JSON; evaluation never needs them."""
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
    entries = array_to_dicts(results) if isinstance(results, np.ndarray) else results

    def dump(handle) -> None:
        handle.write(json.dumps(entries).encode("utf-8"))

    return atomic_write(Path(path), dump)


def zero_metrics() -> dict[str, float]:
    return dict.fromkeys(METRIC_KEYS, 0.0)


def check_evaluator(evaluator: str) -> str:
    """evaluator itself when it names a known evaluator whose package imports, else ConfigError."""
    if evaluator not in EVALUATORS:
        raise ConfigError(f"evaluator = {evaluator!r}, expected one of {', '.join(EVALUATORS)}")
    if evaluator == "faster":
        _faster_module()
    return evaluator


def evaluate(
    coco_gt: Any,
    results: list[dict] | np.ndarray,
    image_ids: Sequence[int] | None = None,
    *,
    evaluator: str = DEFAULT_EVALUATOR,
) -> dict[str, float]:
    """The twelve COCO bbox metrics (METRIC_KEYS) of results against coco_gt.

    coco_gt: a pycocotools COCO (a faster-coco-eval COCO is also accepted). results: a
    results array (RESULT_COLUMNS), or COCO result entries. image_ids: the images
    evaluated (default: all of coco_gt's). evaluator: "numpy" (the default), "faster"
    (faster-coco-eval) or "pycocotools" (the reference). A metric COCOeval cannot define (no
    ground truth in that size range) is NaN; with no detections at all every metric is 0.
    """
    return evaluate_detailed(coco_gt, results, image_ids, evaluator=evaluator)[0]


def evaluate_detailed(
    coco_gt: Any,
    results: list[dict] | np.ndarray,
    image_ids: Sequence[int] | None = None,
    *,
    evaluator: str = DEFAULT_EVALUATOR,
    per_image: bool = False,
) -> tuple[dict[str, float], Any]:
    """evaluate()'s metrics and the evaluator's evaluation (a COCOeval after summarize(),
    or a coco_numpy.NumpyEval; None when there were no detections). per_image: keep the
    per-image matches readable (faster-coco-eval made with separate_eval=True; the others
    always keep them), for bench.eval.bootstrap.match_table: one evaluation gives both
    the metrics and the bootstrap's table."""
    check_evaluator(evaluator)
    if len(results) == 0:
        return zero_metrics(), None
    given = _as_array(results) if isinstance(results, np.ndarray) else [dict(r) for r in results]
    if evaluator == "numpy" and not isinstance(given, np.ndarray):
        given = _entries_to_array(given)
    if isinstance(given, np.ndarray):
        _check_image_ids(coco_gt, given)
    ids = sorted(int(i) for i in image_ids) if image_ids is not None else None
    with contextlib.redirect_stdout(io.StringIO()), _gc_paused():
        if evaluator == "faster":
            ev = _run_faster(coco_gt, given, ids, per_image)
        elif evaluator == "numpy":
            from bench.eval.coco_numpy import NumpyEval

            ev = NumpyEval(coco_gt, given, ids)
        else:
            ev = _run_pycocotools(coco_gt, given, ids)
    stats = ev.stats
    return ({k: _defined(v) for k, v in zip(METRIC_KEYS, stats[: len(METRIC_KEYS)], strict=True)},
            ev)


def evaluate_parts(context: Any, parts: Sequence[Any], n_results: int,
                   ) -> tuple[dict[str, float], Any]:
    """evaluate_detailed's (metrics, evaluation) for the numpy evaluator from detections
    matched in parts (bench.eval.coco_numpy: EvalContext.match of disjoint image sets,
    as the accuracy pass matches them while the engine runs); n_results: the result rows
    the parts came from (none at all scores zero, as evaluate_detailed)."""
    if n_results == 0:
        return zero_metrics(), None
    from bench.eval.coco_numpy import NumpyEval

    ev = NumpyEval.from_parts(context, parts)
    return ({k: _defined(v) for k, v in zip(METRIC_KEYS, ev.stats[: len(METRIC_KEYS)],
                                            strict=True)}, ev)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # loadRes builds a dict and a few lists per detection (a million and more at COCO
    # scale), none of them cyclic: the cycle collector's passes over them are pure cost
    # (measured: loadRes 2.5x faster without them).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _as_array(results: np.ndarray) -> np.ndarray:
    if results.ndim != 2 or results.shape[1] != len(RESULT_COLUMNS):
        raise InputDataError(
            f"results array has shape {results.shape}, expected [n, {len(RESULT_COLUMNS)}]"
            f" ({', '.join(RESULT_COLUMNS)})"
        )
    return np.ascontiguousarray(results, dtype=np.float64)


def _entries_to_array(entries: list[dict]) -> np.ndarray:
    return np.array([[e["image_id"], *e["bbox"], e["score"], e["category_id"]]
                     for e in entries], dtype=np.float64).reshape(-1, len(RESULT_COLUMNS))


def _check_image_ids(coco_gt: Any, results: np.ndarray) -> None:
    # Both evaluators only assert this; a named error reads better in a failed row.
    known = np.fromiter(coco_gt.imgs, dtype=np.int64, count=len(coco_gt.imgs))
    unknown = np.setdiff1d(results[:, 0].astype(np.int64), known)
    if len(unknown):
        raise InputDataError(
            f"results name {len(unknown)} image id(s) not in the ground truth,"
            f" e.g. {unknown[:3].tolist()}"
        )


def _run_pycocotools(coco_gt: Any, given: np.ndarray | list[dict], ids: list[int] | None):
    # pycocotools' COCOeval always keeps its per-image results (evalImgs).
    gt = coco_gt if isinstance(coco_gt, COCO) else _pycocotools_gt(coco_gt)
    return _summarised(COCOeval(gt, gt.loadRes(given), "bbox"), ids)


def _run_faster(coco_gt: Any, given: np.ndarray | list[dict], ids: list[int] | None,
                per_image: bool = False):
    fce = _faster_module()
    gt = _faster_gt(coco_gt)
    dt = _faster_results(fce, gt, given) if isinstance(given, np.ndarray) else gt.loadRes(given)
    return _summarised(fce.COCOeval_faster(gt, dt, "bbox", separate_eval=per_image,
                                           print_function=_silent), ids)


def _faster_results(fce: Any, gt: Any, results: np.ndarray) -> Any:
    """The results COCO that gt.loadRes(results) makes, for bbox evaluation, from one
    tolist() of the array: loadRes indexes the array element by element and adds a
    polygon to every detection, which bbox evaluation never reads (measured on the
    default's 46k detections: 0.06 s against 0.12 s; the twelve figures identical, which
    tests/eval check against pycocotools)."""
    anns = [{"image_id": int(r[0]), "bbox": r[1:5], "score": r[5], "category_id": int(r[6]),
             "area": r[3] * r[4], "id": i, "iscrowd": 0}
            for i, r in enumerate(results.tolist(), 1)]
    res = fce.COCO(print_function=_silent)
    res.dataset = {"images": list(gt.dataset["images"]),
                   "categories": gt.dataset.get("categories", []), "annotations": anns}
    res.createIndex()
    return res


def _summarised(ev: Any, ids: list[int] | None) -> Any:
    """evaluate, accumulate, summarize: the same calls on either evaluator's COCOeval.
    Returns the COCOeval."""
    if ids is not None:
        ev.params.imgIds = ids
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def _faster_module():
    try:
        import faster_coco_eval
    except ImportError as exc:
        raise ConfigError(
            f"evaluator = 'faster' needs the package {FASTER_PACKAGE}, which does not import"
            f" here ({exc}); install it (pip install {FASTER_PACKAGE}) or set the option"
            " evaluator = 'numpy' (the default) or 'pycocotools' (the reference)"
        ) from exc
    return faster_coco_eval


# One faster-coco-eval index per ground truth object, built on first use and dropped
# with it: a session evaluates every variant against the same ground truth.
_FASTER_GT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _faster_gt(coco_gt: Any):
    fce = _faster_module()
    if isinstance(coco_gt, fce.COCO):
        return coco_gt
    cached = _FASTER_GT.get(coco_gt)
    if cached is None:
        cached = fce.COCO(_copied_dataset(coco_gt.dataset), print_function=_silent)
        _FASTER_GT[coco_gt] = cached
    return cached


def _pycocotools_gt(coco_gt: Any) -> COCO:
    gt = COCO()
    gt.dataset = _copied_dataset(coco_gt.dataset)
    gt.createIndex()
    return gt


def _copied_dataset(dataset: dict) -> dict:
    # COCOeval writes an 'ignore' key into the annotations it evaluates: each evaluator
    # gets its own (shallow) copies so that neither sees the other's.
    return {**dataset, "annotations": [dict(a) for a in dataset.get("annotations", [])]}


def _silent(*_args, **_kwargs) -> None:
    return None


def _defined(value: float) -> float:
    return float(value) if value >= 0 else math.nan
