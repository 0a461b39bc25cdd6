"""The NumPy evaluator against pycocotools on generated cases built to reach every rule.

Each case mixes what COCOeval treats specially: crowd regions, ground truths whose areas
sit exactly on the small / medium / large bounds, tied scores, more than 100 detections
of one (image, category), images with no ground truth or no detections, a category with
no ground truth, detections of a category the ground truth does not list, an annotation
whose id is 0 (pycocotools counts a match to it as no match), and image subsets. The
twelve figures must be the same floats, and the bootstrap's table the same arrays.
"""

import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO

from bench.eval.bootstrap import match_table
from bench.eval.coco_eval import METRIC_KEYS, evaluate_detailed


def _case(seed: int, n_img: int = 24, n_cat: int = 4):
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "width": 320, "height": 240} for i in range(n_img)]
    cats = [{"id": c} for c in (1, 2, 3, 7)[:n_cat]] + [{"id": 9}]  # 9: never annotated
    anns, dets = [], []
    for img in images:
        if img["id"] % 7 == 0:
            continue  # no ground truth here
        for _ in range(rng.integers(0, 9)):
            side = rng.choice([4.0, 32.0, 40.0, 96.0, 150.0, rng.uniform(2, 200)])
            w = float(side)
            h = float(side) if rng.uniform() < 0.5 else float(rng.uniform(2, 200))
            x = float(rng.uniform(0, 320 - min(w, 300)))
            y = float(rng.uniform(0, 240 - min(h, 230)))
            area = w * h if rng.uniform() < 0.8 else float(rng.choice([32.0**2, 96.0**2]))
            anns.append({"id": len(anns) + 1, "image_id": img["id"],
                         "category_id": int(rng.choice([c["id"] for c in cats[:n_cat]])),
                         "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                         "area": area, "iscrowd": int(rng.uniform() < 0.12)})
    anns[3]["id"] = 0  # pycocotools tests matches as dtm != 0
    for ann in anns:
        if ann["image_id"] % 5 == 0:
            continue  # ground truth but no detections
        for _ in range(rng.integers(1, 6)):
            x, y, w, h = ann["bbox"]
            jitter = rng.normal(0, 0.12, 4) * [w, h, w, h]
            box = [x + jitter[0], y + jitter[1], abs(w + jitter[2]) + 0.5, abs(h + jitter[3]) + 0.5]
            cat = ann["category_id"] if rng.uniform() < 0.85 else int(rng.choice([1, 2, 3, 7, 5]))
            dets.append([ann["image_id"], *np.round(box, 3), 0.0, cat])
    crowded = 2  # one (image, category) with more than 100 detections
    for _ in range(130):
        dets.append([crowded, *np.round(rng.uniform(0, 100, 4) + [0, 0, 5, 5], 3), 0.0, 1])
    dets = np.array(dets, dtype=np.float64)
    # scores on a coarse grid: many ties, inside and across images
    dets[:, 5] = np.round(rng.choice(np.linspace(0.05, 1.0, 12), len(dets)), 5)
    gt = COCO()
    gt.dataset = {"images": images, "categories": cats, "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt, dets


def _same_floats(a: dict, b: dict) -> bool:
    return all((math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in METRIC_KEYS)


@pytest.mark.parametrize("seed", range(6))
def test_same_figures_and_tables_as_pycocotools(seed):
    gt, dets = _case(seed)
    subset = None if seed % 2 == 0 else sorted(gt.getImgIds())[3:-4]
    got, ev = evaluate_detailed(gt, dets, subset, evaluator="numpy", per_image=True)
    want, ref = evaluate_detailed(gt, dets, subset, evaluator="pycocotools", per_image=True)
    assert _same_floats(got, want), (got, want)
    assert got["map"] > 0.05
    for area, max_det in (("all", 100), ("small", 100), ("large", 10), ("all", 1)):
        mine, theirs = match_table(ev, max_det, area), match_table(ref, max_det, area)
        assert mine.image_ids == theirs.image_ids and mine.category_ids == theirs.category_ids
        np.testing.assert_array_equal(mine.gt_count, theirs.gt_count)
        for a, b in zip(mine.segments, theirs.segments, strict=True):
            for field in ("category", "tp_img", "fp_img", "fp_mult", "fp_before"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(ev.eval["recall"], ref.eval["recall"])
    top = ref.params.maxDets.index(100)
    np.testing.assert_array_equal(ev.eval["precision"][..., top],
                                  ref.eval["precision"][..., top])


def test_detections_only_of_unknown_categories_score_zero():
    gt, dets = _case(0)
    dets[:, 6] = 5  # a category the ground truth does not list
    got, _ = evaluate_detailed(gt, dets, evaluator="numpy")
    want, _ = evaluate_detailed(gt, dets, evaluator="pycocotools")
    assert _same_floats(got, want) and got["map"] == 0.0


def _images_of(dets: np.ndarray, ids) -> np.ndarray:
    return dets[np.isin(dets[:, 0], list(ids))]


@pytest.mark.parametrize("seed", range(4))
def test_an_evaluation_in_parts_gives_the_same_floats_and_tables(seed):
    """The accuracy pass matches images in parts while the engine runs and combines them:
    contiguous, interleaved and empty parts give what one array gives."""
    from bench.eval.coco_numpy import EvalContext, NumpyEval

    gt, dets = _case(seed)
    ids = sorted(gt.getImgIds())
    subset = None if seed % 2 == 0 else ids[3:-4]
    whole = NumpyEval(gt, dets, subset)
    context = EvalContext(gt, subset)
    splits = {
        "contiguous": [ids[:5], ids[5:13], ids[13:]],
        "interleaved": [ids[seed % 3::3], ids[(seed + 1) % 3::3], ids[(seed + 2) % 3::3]],
        "with an empty part": [ids[:9], [], ids[9:]],
    }
    for how, groups in splits.items():
        parts = [context.match(_images_of(dets, g)) for g in groups]
        ev = NumpyEval.from_parts(context, parts)
        np.testing.assert_array_equal(ev.stats, whole.stats, err_msg=how)
        np.testing.assert_array_equal(ev.eval["precision"], whole.eval["precision"])
        np.testing.assert_array_equal(ev.eval["recall"], whole.eval["recall"])
        for area, max_det in (("all", 100), ("small", 100), ("all", 1)):
            a, b = ev.match_table(max_det, area), whole.match_table(max_det, area)
            np.testing.assert_array_equal(a.gt_count, b.gt_count)
            for x, y in zip(a.segments, b.segments, strict=True):
                for field in ("category", "tp_img", "fp_img", "fp_mult", "fp_before"):
                    np.testing.assert_array_equal(getattr(x, field), getattr(y, field),
                                                  err_msg=how)
    assert whole.stats[0] > 0.05  # a case with something to get wrong
