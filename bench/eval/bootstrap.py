"""Paired bootstrap over images for ΔmAP between two variants evaluated on the same images.

COCOeval is run once per variant (evaluate() only: the per-image, per-category matches);
the bootstrap then recomputes AP@[.5:.95] (area "all", 100 detections per image, the
101-point interpolated precision of COCOeval.accumulate) for resampled multisets of images
without running COCOeval again. A resample is a weight per image (how many times it was
drawn); the same weights are applied to both variants, so the interval is that of the
paired difference on the same images.

Why it is fast and exact: with the detections of a category sorted by score once, the
interpolated precision at recall r is the largest precision over the ranked points whose
recall is >= r, and that maximum is always reached at a true positive. So only the true
positives matter, and the cumulative true- and false-positive counts at each of them are
linear in the image weights: counts = weights @ C, with C[i, j] the number of image i's
true (false) positives ranked up to true positive j. One matrix product per count gives
every resample at once. With all weights 1 the result equals COCOeval's stats[0] to
rounding (the same float operations on the same integers).

Ties: detections with equal scores keep COCOeval's order (images in params.imgIds order,
then each image's own order). A duplicated image's copies are ranked as one block, where
COCOeval on a dataset with the image copied would interleave tied detections of the copies;
with continuous scores the two are identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.errors import InputDataError
from bench.measure.stats import Interval

METHOD = "paired bootstrap over images (percentile)"
_EPS = np.spacing(1)


@dataclass(frozen=True)
class Segment:
    """One (IoU threshold, category): its ranked true positives and the false positives
    ranked before them, as image indices.

    tp_img[j]: the image of true positive j (rank order). False positives ranked after the
    last true positive never change the interpolated precision and are dropped; the others
    are grouped by (the true positive they precede, image): fp_img, fp_mult (how many), and
    fp_before[j], the number of groups ranked before true positive j.
    """

    category: int
    tp_img: np.ndarray
    fp_img: np.ndarray
    fp_mult: np.ndarray
    fp_before: np.ndarray


@dataclass(frozen=True)
class MatchTable:
    """What the bootstrap needs of one evaluated variant.

    image_ids: the evaluated images (params.imgIds order); category_ids likewise.
    gt_count: [images, categories] ground truths that are not ignored (area "all").
    segments: one per (IoU threshold, category), threshold-major.
    recall_thresholds: COCOeval's params.recThrs.
    """

    image_ids: tuple[int, ...]
    category_ids: tuple[int, ...]
    gt_count: np.ndarray
    segments: tuple[Segment, ...]
    recall_thresholds: np.ndarray
    # resampled_ap's results by (n_boot, seed): fp32's side of every variant's ΔmAP is the
    # same resamples of the same table, computed once a run
    _resampled: dict = field(default_factory=dict, compare=False, repr=False)

    def resampled_ap(self, n_boot: int, seed: int) -> np.ndarray:
        """ap() of the n_boot seeded resamples of resample_weights (memoized)."""
        key = (n_boot, seed)
        if key not in self._resampled:
            self._resampled[key] = self.ap(resample_weights(len(self.image_ids), n_boot, seed))
        return self._resampled[key]

    def ap(self, weights: np.ndarray | None = None) -> np.ndarray:
        """AP@[.5:.95] for each row of weights ([resamples, images], each image's count in
        the resample; default: each image once, shape [1, images]). NaN where no category
        has a ground truth."""
        w = np.ones((1, len(self.image_ids))) if weights is None else np.atleast_2d(weights)
        if w.shape[1] != len(self.image_ids):
            raise InputDataError(
                f"weights cover {w.shape[1]} images; the evaluation has {len(self.image_ids)}"
            )
        w_t = np.ascontiguousarray(w.T, dtype=np.float64)  # [images, B]: rows gather fast
        n_gt = w.astype(np.float64) @ self.gt_count  # [B, K]
        total = np.zeros(len(w))
        valid = np.zeros(len(w))
        for seg in self.segments:
            has_gt = n_gt[:, seg.category] > 0
            q_mean = _mean_interpolated_precision(
                *_cumulative_counts(seg, w_t), n_gt[:, seg.category], self.recall_thresholds
            )
            total += np.where(has_gt, q_mean, 0.0)
            valid += has_gt
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(valid > 0, total / valid, np.nan)


# A segment's false positives are summed through a dense [true positives, images] matrix
# when it has at most this many cells (float64: 32 MB), else group by group.
_DENSE_CELLS = 1 << 22


def _cumulative_counts(seg: Segment, w_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n_tp, B] weighted true and false positives ranked at or before each true positive.

    The false positives before true positive j are the groups of buckets <= j: per
    bucket, the sum over its images of multiplicity x weight, which is one product of a
    [n_tp, images] matrix with the weights (measured: half the time of summing every
    group's [B] row); both sum integers, so the counts are the same floats."""
    tp = np.cumsum(w_t[seg.tp_img], axis=0)
    n_tp, n_img = len(seg.tp_img), w_t.shape[0]
    if len(seg.fp_img) and n_tp * n_img <= _DENSE_CELLS:
        bucket = np.repeat(np.arange(n_tp), np.diff(seg.fp_before, prepend=0))
        per_bucket = np.zeros((n_tp, n_img))
        per_bucket[bucket, seg.fp_img] = seg.fp_mult
        return tp, np.cumsum(per_bucket @ w_t, axis=0)
    groups = w_t[seg.fp_img]
    groups *= seg.fp_mult[:, None]
    np.cumsum(groups, axis=0, out=groups)
    if len(groups) == 0:
        return tp, np.zeros_like(tp)
    fp = groups[np.maximum(seg.fp_before - 1, 0)]
    fp[seg.fp_before == 0] = 0.0
    return tp, fp


def _mean_interpolated_precision(tp: np.ndarray, fp: np.ndarray, n_gt: np.ndarray,
                                 rec_thrs: np.ndarray) -> np.ndarray:
    """Mean over recall thresholds r of max{precision_j : recall_j >= r} (0 when no point
    reaches r), per resample; tp, fp: [n_tp, B]. The same float operations as
    COCOeval.accumulate: rc = tp / n_gt, pr = tp / (fp + tp + eps).

    The points j reaching threshold r form a suffix (recall does not decrease), so r takes
    the envelope (suffix maximum of precision) at the first of them; with c_j the number of
    thresholds <= rc_j, point j is that first point for c_j - c_(j-1) thresholds."""
    n, b = tp.shape
    if n == 0:
        return np.zeros(b)
    with np.errstate(invalid="ignore", divide="ignore"):
        rc = tp / n_gt[None, :]
    pr = tp / (fp + tp + _EPS)
    envelope = np.maximum.accumulate(pr[::-1], axis=0)[::-1]
    reached = np.searchsorted(rec_thrs, rc, side="right")  # thresholds with rc_j >= r
    first_for = np.diff(reached, axis=0, prepend=0)
    return (first_for * envelope).sum(axis=0) / len(rec_thrs)


def match_table(coco_eval, max_det: int = 100, area: str = "all") -> MatchTable:
    """The MatchTable of an evaluator after evaluate() (accumulate not needed).

    coco_eval: a pycocotools COCOeval, or faster-coco-eval's COCOeval_faster made with
    separate_eval=True (its per-image results are read from _evalImgs_cpp, a private
    attribute: tests/eval/test_bootstrap.py checks it on the installed version). Reads
    params (imgIds, catIds, areaRngLbl, maxDets, iouThrs, recThrs; useCats=1) and the
    per-image results in [category][area][image] order, each None or a dict with dtScores,
    dtMatches, dtIgnore, gtIgnore, as COCOeval.evaluate() leaves them in evalImgs.
    """
    if hasattr(coco_eval, "match_table"):  # bench.eval.coco_numpy.NumpyEval
        return coco_eval.match_table(max_det, area)
    p = coco_eval.params
    eval_imgs = _eval_imgs(coco_eval)  # converted on access: only area's entries are read
    if max_det not in list(p.maxDets):
        raise InputDataError(f"max_det {max_det}: the evaluation's maxDets are {list(p.maxDets)}")
    if area not in p.areaRngLbl:
        raise InputDataError(f"area {area!r}: the evaluation's areas are {p.areaRngLbl}")
    n_img, n_area = len(p.imgIds), len(p.areaRng)
    if len(eval_imgs) != len(p.catIds) * n_area * n_img:
        raise InputDataError(
            f"{len(eval_imgs)} per-image results; expected categories x areas x images ="
            f" {len(p.catIds)} x {n_area} x {n_img} (params changed after evaluate()?)"
        )
    a = list(p.areaRngLbl).index(area)
    gt_count = np.zeros((n_img, len(p.catIds)))
    segments: list[Segment] = []
    per_cat = []
    for k in range(len(p.catIds)):
        start = k * n_area * n_img + a * n_img
        entries = eval_imgs[start : start + n_img]
        per_cat.append(_category_points(entries, max_det, gt_count[:, k], len(p.iouThrs)))
    for t in range(len(p.iouThrs)):
        for k, (img, tp_flags, fp_flags) in enumerate(per_cat):
            segments.append(_segment(k, img, tp_flags[t], fp_flags[t], n_img))
    return MatchTable(tuple(int(i) for i in p.imgIds), tuple(int(c) for c in p.catIds),
                      gt_count, tuple(segments), np.asarray(p.recThrs, dtype=np.float64))


class _CppEntries(Sequence):
    """faster-coco-eval's per-image results, each converted when it is read (match_table
    reads one area's quarter of them)."""

    def __init__(self, cpp, n_iou: int):
        self._cpp, self._n_iou = cpp, n_iou

    def __len__(self) -> int:
        return len(self._cpp)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [_from_cpp(self._cpp[i], self._n_iou) for i in range(*index.indices(len(self)))]
        return _from_cpp(self._cpp[index], self._n_iou)


def _eval_imgs(coco_eval) -> Sequence:
    if getattr(coco_eval, "evalImgs", None):
        return list(coco_eval.evalImgs)
    cpp = getattr(coco_eval, "_evalImgs_cpp", None)
    if cpp is not None:
        return _CppEntries(cpp, len(coco_eval.params.iouThrs))
    if hasattr(coco_eval, "separate_eval"):
        raise InputDataError("faster-coco-eval keeps no per-image results unless made with"
                             " separate_eval=True: the bootstrap needs them")
    raise InputDataError("the evaluator has no per-image results: call evaluate() first")


def _from_cpp(entry, n_iou: int) -> dict:
    """faster-coco-eval's ImageEvaluation (pickled state: detection matches [T x D], ground
    truth matches, detection scores, ground truth ignores, detection ignores [T x D]) as a
    pycocotools evalImgs entry."""
    dt_matches, _gt_matches, dt_scores, gt_ignore, dt_ignore = entry.__getstate__()[:5]
    n_dt = len(dt_scores)
    return {
        "dtScores": np.asarray(dt_scores, dtype=np.float64),
        "dtMatches": np.asarray(dt_matches, dtype=np.float64).reshape(n_iou, n_dt),
        "dtIgnore": np.asarray(dt_ignore, dtype=bool).reshape(n_iou, n_dt),
        "gtIgnore": np.asarray(gt_ignore, dtype=bool),
    }


def _category_points(entries: Sequence[dict | None], max_det: int, gt_out: np.ndarray,
                     n_iou: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One category's detections over all images, ranked as COCOeval.accumulate ranks them:
    the image of each, and the [T, D] true / false positive flags (ignored ones neither).
    Fills gt_out[i] with image i's ground truths that are not ignored."""
    scores, images, matches, ignores = [], [], [], []
    for i, e in enumerate(entries):
        if e is None:
            continue
        gt_out[i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
        s = np.asarray(e["dtScores"], dtype=np.float64)[:max_det]
        scores.append(s)
        images.append(np.full(len(s), i))
        matches.append(np.asarray(e["dtMatches"]).reshape(n_iou, -1)[:, :max_det])
        ignores.append(np.asarray(e["dtIgnore"]).reshape(n_iou, -1)[:, :max_det])
    if not scores:
        empty = np.zeros((n_iou, 0), dtype=bool)
        return np.zeros(0, dtype=np.int64), empty, empty
    order = np.argsort(-np.concatenate(scores), kind="mergesort")
    dtm = np.concatenate(matches, axis=1)[:, order]
    dt_ig = np.concatenate(ignores, axis=1)[:, order].astype(bool)
    tps = (dtm != 0) & ~dt_ig
    fps = (dtm == 0) & ~dt_ig
    return np.concatenate(images)[order], tps, fps


def _segment(category: int, img: np.ndarray, tps: np.ndarray, fps: np.ndarray,
             n_img: int) -> Segment:
    """One (threshold, category) from its ranked images and true / false positive flags."""
    tp_pos = np.nonzero(tps)[0]
    fp_pos = np.nonzero(fps)[0]
    precedes = np.searchsorted(tp_pos, fp_pos)  # the first true positive ranked after it
    keep = precedes < len(tp_pos)
    keys, mult = np.unique(precedes[keep] * n_img + img[fp_pos[keep]], return_counts=True)
    bucket = keys // n_img
    fp_before = np.searchsorted(bucket, np.arange(len(tp_pos)), side="right")
    return Segment(category, img[tp_pos], keys % n_img, mult.astype(np.float64), fp_before)


def evaluate_for_bootstrap(coco_gt, results, image_ids: Sequence[int] | None = None, *,
                           evaluator: str = "numpy") -> MatchTable:
    """The MatchTable of results, from the same evaluation that gives their metrics
    (bench.eval.coco_eval.evaluate_detailed with per_image=True).

    coco_gt: a pycocotools or faster-coco-eval COCO. results: COCO result entries or a
    results array (bench.eval.coco_eval.RESULT_COLUMNS). image_ids: the evaluated images
    (default: all). evaluator: one of bench.eval.coco_eval.EVALUATORS.
    """
    from bench.eval.coco_eval import evaluate_detailed

    evaluated = evaluate_detailed(coco_gt, results, image_ids, evaluator=evaluator,
                                  per_image=True)[1]
    if evaluated is None:
        raise InputDataError("no detections: the bootstrap needs at least one result entry")
    return match_table(evaluated)


def _table(evaluation) -> MatchTable:
    return evaluation if isinstance(evaluation, MatchTable) else match_table(evaluation)


def resample_weights(n_images: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n_images] counts of each image in n_boot resamples with replacement."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_images, size=(n_boot, n_images))
    weights = np.zeros((n_boot, n_images))
    np.add.at(weights, (np.repeat(np.arange(n_boot), n_images), draws.ravel()), 1.0)
    return weights


def delta_map_ci(eval_a, eval_b, n_boot: int = 200, seed: int = 0,
                 confidence: float = 0.95) -> Interval:
    """mAP(a) − mAP(b) (AP@[.5:.95], area all, 100 detections) with a paired bootstrap CI.

    eval_a, eval_b: pycocotools COCOeval objects after evaluate() (accumulate not needed), or
    MatchTables from match_table(); both on the same images and categories. Images are
    resampled with replacement n_boot times (seeded: the same inputs give the same interval),
    each resample applied to both sides; the interval is the percentile interval of the
    resampled differences; the estimate is the difference on the images as evaluated.
    """
    a, b = _table(eval_a), _table(eval_b)
    if a.image_ids != b.image_ids:
        raise InputDataError(
            f"ΔmAP needs the same images on both sides: {len(a.image_ids)} images against"
            f" {len(b.image_ids)}, {len(set(a.image_ids) ^ set(b.image_ids))} not shared"
        )
    if a.category_ids != b.category_ids:
        raise InputDataError(f"ΔmAP needs the same categories: {a.category_ids} against"
                             f" {b.category_ids}")
    estimate = float(a.ap()[0] - b.ap()[0])
    deltas = a.resampled_ap(n_boot, seed) - b.resampled_ap(n_boot, seed)
    deltas = deltas[np.isfinite(deltas)]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(deltas, [tail, 1.0 - tail]) if deltas.size else (np.nan, np.nan)
    return Interval(estimate, float(low), float(high), confidence, METHOD, len(a.image_ids))
