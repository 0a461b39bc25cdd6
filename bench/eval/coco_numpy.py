"""COCO bbox evaluation in NumPy: pycocotools' COCOeval, vectorised over images.

The same twelve figures as pycocotools' evaluate / accumulate / summarize for iouType
"bbox", computed from arrays instead of one Python dict per detection:

- detections of an (image, category) are ranked by score, ties in the results' order
  (pycocotools' mergesort), and the first maxDets[-1] kept;
- IoU as pycocotools' bbIou: intersection over union, over the detection's area for a
  crowd ground truth;
- matching, for every area range and IoU threshold at once, one detection rank at a time
  across all (image, category) pairs: a detection takes the unmatched (or crowd) ground
  truth of highest IoU >= the threshold, a non-ignored one before an ignored one, the
  last in ground-truth order on ties; it is ignored when its match is, or, unmatched,
  when its area is outside the range;
- accumulation ranks a category's detections by score, ties by image and then rank (the
  order pycocotools' concatenation and mergesort give), and takes the 101-point
  interpolated precision with the same float operations, so the figures are the same
  floats, not merely close (tests/eval compare them with pycocotools' and
  faster-coco-eval's on generated cases with crowds, ties and empty images).

Ranking and matching are per image, so an evaluation can be done in parts: EvalContext
holds the ground truth once, EvalContext.match ranks and matches the detections of some of
the images (the accuracy pass matches each run of images while the engine goes on), and
NumpyEval.from_parts merges the parts per category for accumulate. Its MatchTable for the
bootstrap (bench.eval.bootstrap) comes from the same arrays.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from bench.ahead import default_workers

_EPS = np.spacing(1)


@dataclass(frozen=True)
class _GroundTruth:
    """One ground truth's annotations as arrays, in dataset order."""

    image_id: np.ndarray
    category_id: np.ndarray
    box: np.ndarray  # [n, 4] x, y, w, h
    area: np.ndarray
    crowd: np.ndarray
    ann_id: np.ndarray
    image_ids: np.ndarray  # sorted, of dataset["images"]
    category_ids: np.ndarray  # sorted, of dataset["categories"]


_GT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _ground_truth(coco_gt: Any) -> _GroundTruth:
    cached = _GT.get(coco_gt)
    if cached is not None:
        return cached
    data = coco_gt.dataset
    anns = data.get("annotations", [])
    box = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    gt = _GroundTruth(
        image_id=np.array([a["image_id"] for a in anns], dtype=np.int64),
        category_id=np.array([a["category_id"] for a in anns], dtype=np.int64),
        box=box,
        area=np.array([a.get("area", b[2] * b[3]) for a, b in zip(anns, box.tolist())],
                      dtype=np.float64),
        crowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
        ann_id=np.array([a.get("id", 0) for a in anns], dtype=np.int64),
        image_ids=np.unique(np.array([i["id"] for i in data.get("images", [])],
                                     dtype=np.int64)),
        category_ids=np.unique(np.array([c["id"] for c in data.get("categories", [])],
                                        dtype=np.int64)))
    _GT[coco_gt] = gt
    return gt


class _Params:
    """pycocotools' bbox Params (iouThrs, recThrs, maxDets, areaRng, areaRngLbl, useCats)
    with the evaluated imgIds and catIds."""

    def __init__(self, img_ids: np.ndarray, cat_ids: np.ndarray):
        from pycocotools.cocoeval import Params

        base = Params(iouType="bbox")
        self.iouType = "bbox"
        self.iouThrs, self.recThrs = base.iouThrs, base.recThrs
        self.maxDets = list(base.maxDets)
        self.areaRng, self.areaRngLbl = list(base.areaRng), list(base.areaRngLbl)
        self.useCats = 1
        self.imgIds = [int(i) for i in img_ids]
        self.catIds = [int(c) for c in cat_ids]


class EvalContext:
    """The ground truth of one evaluation (a COCO and the evaluated image ids), as arrays
    grouped by (image, category): what matching needs, built once for all its parts."""

    def __init__(self, coco_gt: Any, image_ids: Sequence[int] | None = None):
        gt = _ground_truth(coco_gt)
        img_ids = gt.image_ids if image_ids is None else np.unique(
            np.asarray(list(image_ids), dtype=np.int64))
        self.gt, self.img_ids = gt, img_ids
        self.params = p = _Params(img_ids, gt.category_ids)
        self.n_img, self.n_cat = len(img_ids), len(gt.category_ids)
        self.n_thr, self.n_area = len(p.iouThrs), len(p.areaRng)
        n_cat = self.n_cat
        g_img, g_ok = _positions(img_ids, gt.image_id)
        g_cat, c_ok = _positions(gt.category_ids, gt.category_id)
        keep = np.nonzero(g_ok & c_ok)[0]
        g_pair = g_img[keep] * n_cat + g_cat[keep]
        order = keep[np.argsort(g_pair, kind="stable")]  # by pair, dataset order within
        self.g_pair = np.sort(g_pair, kind="stable")
        self.g_box, self.g_area = gt.box[order], gt.area[order]
        self.g_crowd, self.g_id = gt.crowd[order], gt.ann_id[order]
        self.g_cat = g_cat[order]
        self.lo = np.array([r[0] for r in p.areaRng])[:, None]
        self.hi = np.array([r[1] for r in p.areaRng])[:, None]
        self.g_ignore = self.g_crowd[None, :] | (self.g_area < self.lo) | (self.g_area > self.hi)

    def match(self, results: np.ndarray) -> MatchedPart:
        """Detections of some of the images (a results array; the rows of each image
        together with all of that image's rows), ranked and matched. The parts of one
        evaluation must hold disjoint images; NumpyEval.from_parts combines them."""
        return _match(self, _ranked(self, np.asarray(results, dtype=np.float64).reshape(-1, 7)))


@dataclass(frozen=True)
class MatchedPart:
    """One part's detections in accumulate's order (by category, then score, highest
    first, image, rank), with their [areas x thresholds, dets] hit and ignore flags."""

    img: np.ndarray
    cat: np.ndarray
    rank: np.ndarray
    score: np.ndarray
    hit: np.ndarray
    ignore: np.ndarray


class _Category(NamedTuple):
    """One category's detections in accumulate's order, with their flags [A x T, D]."""

    img: np.ndarray
    rank: np.ndarray
    hit: np.ndarray
    ignore: np.ndarray


@dataclass(frozen=True)
class _Ranked:
    pair: np.ndarray
    rank: np.ndarray
    score: np.ndarray
    box: np.ndarray
    outside: np.ndarray  # [areas, dets]


def _ranked(ctx: EvalContext, results: np.ndarray) -> _Ranked:
    """The evaluated detections, grouped by (image, category), ranked by score (ties in
    the results' order, pycocotools' mergesort), the first maxDets[-1] of each kept, in
    accumulate's order."""
    n_cat = ctx.n_cat
    d_img, i_ok = _positions(ctx.img_ids, results[:, 0].astype(np.int64))
    d_cat, k_ok = _positions(ctx.gt.category_ids, results[:, 6].astype(np.int64))
    rows = np.nonzero(i_ok & k_ok)[0]
    d_pair = d_img[rows] * n_cat + d_cat[rows]
    score = results[rows, 5]
    # by pair, then score (highest first), ties in the results' order (lexsort is
    # stable and rows ascend)
    order = np.lexsort((-score, d_pair))
    d_pair, rows = d_pair[order], rows[order]
    starts = np.searchsorted(d_pair, d_pair, side="left")
    rank = np.arange(len(d_pair)) - starts
    kept = rank < ctx.params.maxDets[-1]
    d_pair, rank, rows = d_pair[kept], rank[kept], rows[kept]
    # from here on, in accumulate's order: by category, then score (highest first),
    # image, rank; a category's detections are then one slice (_flags), which
    # matching does not mind (it goes by rank, each detection's pair written down).
    # The rows are by (image, category, rank) now, so a stable sort by category and
    # score leaves ties by image, then rank.
    order = np.lexsort((-results[rows, 5], d_pair % n_cat))
    d_pair, rank, rows = d_pair[order], rank[order], rows[order]
    area = results[rows, 3] * results[rows, 4]
    return _Ranked(d_pair, rank, results[rows, 5], results[rows, 1:5],
                   (area < ctx.lo) | (area > ctx.hi))


def _match(ctx: EvalContext, d: _Ranked) -> MatchedPart:
    """Every detection matched, for every area range and IoU threshold at once, one
    detection rank at a time across all (image, category) pairs."""
    n_thr = ctx.n_thr
    n_at = ctx.n_area * n_thr
    n_det = len(d.pair)
    first = np.searchsorted(ctx.g_pair, d.pair, side="left")
    count = np.searchsorted(ctx.g_pair, d.pair, side="right") - first
    e_det = np.repeat(np.arange(n_det), count)
    offset = np.arange(len(e_det)) - np.repeat(np.cumsum(count) - count, count)
    e_gt = np.repeat(first, count) + offset
    e_iou = _bbox_iou(d.box[e_det], ctx.g_box[e_gt], ctx.g_crowd[e_gt])
    thresholds = np.minimum(ctx.params.iouThrs, 1 - 1e-10)
    # a pair below every threshold can never match: most of them
    close = np.flatnonzero(e_iou >= thresholds.min())
    e_det, e_gt, e_iou = e_det[close], e_gt[close], e_iou[close]
    thr = np.tile(thresholds, ctx.n_area)[:, None]  # rows: area-major, then threshold
    ignore = np.repeat(ctx.g_ignore, n_thr, axis=0)  # [rows, gts]
    taken = np.zeros((n_at, len(ctx.g_pair)), dtype=bool)
    # hit: matched to a ground truth of non-zero id (pycocotools tests dtm == 0 for
    # unmatched); ignored: matched to an ignored ground truth
    hit = np.zeros((n_at, n_det), dtype=bool)
    matched_ignored = np.zeros((n_at, n_det), dtype=bool)
    # entries by the rank of their detection: one rank's detections have one each
    # pair, so no two of them compete for a ground truth
    e_rank = d.rank[e_det]
    by_rank = np.argsort(e_rank, kind="stable")
    max_det = ctx.params.maxDets[-1]
    bounds = np.searchsorted(e_rank[by_rank], np.arange(max_det + 1))
    for r in range(max_det):
        sel = by_rank[bounds[r]:bounds[r + 1]]
        if len(sel) == 0:
            continue
        det, g, iou = e_det[sel], e_gt[sel], e_iou[sel]
        new_group = np.r_[True, det[1:] != det[:-1]]
        starts, group = np.flatnonzero(new_group), np.cumsum(new_group) - 1
        ign = ignore[:, g]
        free = (iou[None, :] >= thr) & (~taken[:, g] | ctx.g_crowd[g][None, :])
        # a non-ignored ground truth first; among the chosen kind, the highest IoU
        # and the last of equal ones
        plain = np.logical_or.reduceat(free & ~ign, starts, axis=1)
        allowed = free & (ign != plain[:, group])
        value = np.where(allowed, iou[None, :], -1.0)
        best = np.maximum.reduceat(value, starts, axis=1)
        last = np.where(allowed & (value == best[:, group]), np.arange(len(sel)), -1)
        pick = np.maximum.reduceat(last, starts, axis=1)
        hit_rows, hit_cols = np.nonzero(pick >= 0)
        entry = pick[hit_rows, hit_cols]
        chosen, dets = g[entry], det[starts][hit_cols]
        taken[hit_rows, chosen] = True
        hit[hit_rows, dets] = ctx.g_id[chosen] != 0
        matched_ignored[hit_rows, dets] = ign[hit_rows, entry]
    outside = np.repeat(d.outside, n_thr, axis=0)
    return MatchedPart(d.pair // ctx.n_cat, d.pair % ctx.n_cat, d.rank, d.score, hit,
                       matched_ignored | (~hit & outside))


class NumpyEval:
    """The evaluation of one results array: stats (COCOeval.stats' twelve figures),
    params, eval ({"precision", "recall"}, see _accumulate) and match_table()."""

    def __init__(self, coco_gt: Any, results: np.ndarray,
                 image_ids: Sequence[int] | None = None):
        context = EvalContext(coco_gt, image_ids)
        self._combine(context, [context.match(results)])

    @classmethod
    def from_parts(cls, context: EvalContext, parts: Sequence[MatchedPart]) -> NumpyEval:
        """The evaluation of the parts' detections together (EvalContext.match of disjoint
        image sets), the same floats as NumpyEval of their results in one array."""
        ev = cls.__new__(cls)
        ev._combine(context, list(parts))
        return ev

    def _combine(self, ctx: EvalContext, parts: list[MatchedPart]) -> None:
        self.params = ctx.params
        self._n_img, self._n_cat = ctx.n_img, ctx.n_cat
        self._n_thr, self._n_area = ctx.n_thr, ctx.n_area
        self._g_pair, self._g_cat, self._g_ignore = ctx.g_pair, ctx.g_cat, ctx.g_ignore
        bounds = [np.searchsorted(q.cat, np.arange(self._n_cat + 1)) for q in parts]
        firsts = [q.img.min() for q in parts if len(q.img)]
        lasts = [q.img.max() for q in parts if len(q.img)]
        in_order = all(b > a for a, b in zip(lasts[:-1], firsts[1:], strict=True))

        def category(k: int) -> _Category:
            # each part is in accumulate's order, so a category is one slice of each;
            # together, by score, then image and rank (the parts' images are disjoint)
            pieces = [[a[..., b[k]:b[k + 1]] for a in (q.img, q.rank, q.score, q.hit, q.ignore)]
                      for q, b in zip(parts, bounds)]
            if len(pieces) == 1:  # slices of the one part, no copies
                img, rank, _, hit, ignore = pieces[0]
                return _Category(img, rank, hit, ignore)
            img, rank, score, hit, ignore = (np.concatenate(column, axis=-1)
                                             for column in zip(*pieces, strict=True))
            # parts of ascending, disjoint image ranges (the accuracy pass's) are by image,
            # then rank, within equal scores already: a stable sort by score is enough
            order = (np.argsort(-score, kind="stable") if in_order
                     else np.lexsort((rank, img, -score)))
            return _Category(img[order], rank[order], hit[:, order], ignore[:, order])

        # one category at a time, in threads: the pieces stay small enough for the caches
        self._by_cat = _each(category, range(self._n_cat))
        self.eval = self._accumulate()
        self.stats = self._summarize()

    # -- accumulate and summarize, as pycocotools --

    def _flags(self, k: int, a: int, max_det: int) -> tuple[np.ndarray, ...]:
        """Category k's detections of rank < max_det in accumulate's order (score, then
        image, then rank), for area a: their images, their ranks and the [T, D] true /
        false positive flags (an ignored detection is neither)."""
        of_k = self._by_cat[k]
        rows = slice(a * self._n_thr, (a + 1) * self._n_thr)
        img, ranks = of_k.img, of_k.rank
        hit, ign = of_k.hit[rows], of_k.ignore[rows]
        if max_det < self.params.maxDets[-1]:  # _ranked kept maxDets[-1] of each pair
            sel = ranks < max_det
            img, ranks, hit, ign = img[sel], ranks[sel], hit[:, sel], ign[:, sel]
        return img, ranks, hit & ~ign, ~hit & ~ign

    def _accumulate(self) -> dict[str, np.ndarray]:
        """precision [T, R, K, A, M] and recall [T, K, A, M] as accumulate leaves them,
        except that precision is computed for maxDets[-1] only, the one summarize reads
        (-1 for the others); recall is computed for every maxDets.

        Only true positives are visited: recall rises only at them, and the precision
        envelope's value at any point is reached at a true positive at or after it (a
        false or ignored detection never raises precision), so the 101-point values and
        the final recall are those of accumulate's full arrays, the same floats (the same
        integer counts through the same operations)."""
        p = self.params
        n_t, n_r, n_k, n_a, n_m = (self._n_thr, len(p.recThrs), self._n_cat, self._n_area,
                                   len(p.maxDets))
        precision = -np.ones((n_t, n_r, n_k, n_a, n_m))
        recall = -np.ones((n_t, n_k, n_a, n_m))
        # categories are independent, each writing its own slices: threads share them
        # (numpy's sums and gathers release the GIL)
        _each(lambda k: self._accumulate_category(k, precision, recall), range(n_k))
        return {"precision": precision, "recall": recall}

    def _accumulate_category(self, k: int, precision: np.ndarray, recall: np.ndarray) -> None:
        p = self.params
        n_t, top = self._n_thr, len(p.maxDets) - 1
        of_k = self._g_cat == k
        for a in range(self._n_area):
            npig = int(np.count_nonzero(of_k & ~self._g_ignore[a]))
            if npig == 0:
                continue
            _, ranks, tps, fps = self._flags(k, a, p.maxDets[-1])
            for m, max_det in enumerate(p.maxDets[:-1]):
                # rc[-1] = tp_sum[-1] / npig: the count as a float, as accumulate has it
                counted = np.count_nonzero(tps[:, ranks < max_det], axis=1).astype(float)
                recall[:, k, a, m] = counted / npig
            fp_sum = np.cumsum(fps, axis=1, dtype=np.int32)
            for t in range(n_t):
                at = np.flatnonzero(tps[t])
                tp = np.arange(1, len(at) + 1).astype(float)
                fp = fp_sum[t, at].astype(float)
                rc = tp / npig
                pr = tp / (fp + tp + _EPS)
                recall[t, k, a, top] = rc[-1] if len(at) else 0
                envelope = np.maximum.accumulate(pr[::-1])[::-1]
                inds = np.searchsorted(rc, p.recThrs, side="left")
                q = np.zeros(len(p.recThrs))
                ok = inds < len(at)
                q[ok] = envelope[inds[ok]]
                precision[t, :, k, a, top] = q

    def _summarize(self) -> np.ndarray:
        p = self.params

        def one(ap: int, iou: float | None = None, area: str = "all", max_det: int = 100):
            aind = [i for i, lbl in enumerate(p.areaRngLbl) if lbl == area]
            mind = [i for i, m in enumerate(p.maxDets) if m == max_det]
            s = self.eval["precision"] if ap == 1 else self.eval["recall"]
            if iou is not None:
                s = s[np.where(iou == p.iouThrs)[0]]
            s = s[:, :, :, aind, mind] if ap == 1 else s[:, :, aind, mind]
            return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

        top = p.maxDets[2]
        return np.array([
            one(1), one(1, 0.5, max_det=top), one(1, 0.75, max_det=top),
            one(1, area="small", max_det=top), one(1, area="medium", max_det=top),
            one(1, area="large", max_det=top),
            one(0, max_det=p.maxDets[0]), one(0, max_det=p.maxDets[1]), one(0, max_det=top),
            one(0, area="small", max_det=top), one(0, area="medium", max_det=top),
            one(0, area="large", max_det=top)])

    # -- the bootstrap's table --

    def match_table(self, max_det: int = 100, area: str = "all"):
        """bench.eval.bootstrap.MatchTable of this evaluation (see bootstrap.match_table)."""
        from bench.errors import InputDataError
        from bench.eval.bootstrap import MatchTable, _segment

        p = self.params
        if max_det not in p.maxDets:
            raise InputDataError(f"max_det {max_det}: the evaluation's maxDets are {p.maxDets}")
        if area not in p.areaRngLbl:
            raise InputDataError(f"area {area!r}: the evaluation's areas are {p.areaRngLbl}")
        a = p.areaRngLbl.index(area)
        plain = ~self._g_ignore[a]
        gt_count = np.zeros((self._n_img, self._n_cat))
        np.add.at(gt_count, (self._g_pair[plain] // self._n_cat, self._g_cat[plain]), 1.0)

        def category(k: int) -> list:
            img, _, tps, fps = self._flags(k, a, max_det)
            return [_segment(k, img, tps[t], fps[t], self._n_img) for t in range(self._n_thr)]

        per_cat = _each(category, range(self._n_cat))
        segments = [per_cat[k][t] for t in range(self._n_thr) for k in range(self._n_cat)]
        return MatchTable(tuple(p.imgIds), tuple(p.catIds), gt_count, tuple(segments),
                          np.asarray(p.recThrs, dtype=np.float64))


def _each(fn: Callable[[int], Any], items: range) -> list:
    """[fn(i) for i in items], on as many threads as cores (at most 4) when there are
    several items: the evaluation's tail runs after the last inference, with the cores
    otherwise idle."""
    workers = min(default_workers(), len(items))
    if workers <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench-eval") as pool:
        return list(pool.map(fn, items))


def _positions(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each id in sorted_ids, and whether it is there."""
    if len(sorted_ids) == 0:
        return np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool)
    pos = np.searchsorted(sorted_ids, ids)
    clipped = np.minimum(pos, len(sorted_ids) - 1)
    return clipped, sorted_ids[clipped] == ids


def _bbox_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """pycocotools' bbIou for paired rows: the same float operations in the same order."""
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    inter = w * h
    da, ga = d[:, 2] * d[:, 3], g[:, 2] * g[:, 3]
    union = np.where(crowd, da, da + ga - inter)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    return np.where((w > 0) & (h > 0), iou, 0.0)
