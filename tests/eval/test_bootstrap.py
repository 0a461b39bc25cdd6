import contextlib
import io
import time

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bench.data import synthetic
from bench.data.coco import CocoDataset
from bench.errors import InputDataError
from bench.eval.bootstrap import (
    delta_map_ci,
    evaluate_for_bootstrap,
    match_table,
    resample_weights,
)


def _gt_dataset(rng: np.random.Generator, n_images: int, n_cats: int = 4) -> dict:
    """Ground truth with every case COCOeval treats apart: crowds, small/medium/large
    boxes, images without objects, a category with no ground truth at all."""
    images, anns = [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": 640, "height": 480})
        for _ in range(rng.integers(0, 7)):
            w, h = np.exp(rng.uniform(np.log(4), np.log(300), 2))
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id":
                         int(rng.integers(1, n_cats)), "bbox": [x, y, w, h], "area": w * h,
                         "iscrowd": int(rng.random() < 0.05)})
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, n_cats + 1)]  # the last has no gt
    return {"images": images, "annotations": anns, "categories": cats}


def _coco(dataset: dict) -> COCO:
    gt = COCO()
    gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _detections(rng: np.random.Generator, gt: COCO, jitter: float, n_cats: int = 4) -> list:
    """Jittered ground-truth boxes with noisy scores, some misses, wrong classes and clutter;
    continuous scores (no ties)."""
    dets = []
    for ann in gt.dataset["annotations"]:
        if rng.random() < 0.15:
            continue
        x, y, w, h = ann["bbox"]
        box = [x + rng.normal(0, jitter * w), y + rng.normal(0, jitter * h),
               w * np.exp(rng.normal(0, jitter)), h * np.exp(rng.normal(0, jitter))]
        cat = ann["category_id"] if rng.random() > 0.1 else int(rng.integers(1, n_cats + 1))
        dets.append({"image_id": ann["image_id"], "category_id": cat, "bbox": box,
                     "score": float(rng.uniform(0.2, 1.0))})
    for img in gt.dataset["images"]:
        for _ in range(rng.integers(0, 40)):
            w, h = rng.uniform(5, 200, 2)
            dets.append({"image_id": img["id"], "category_id": int(rng.integers(1, n_cats + 1)),
                         "bbox": [rng.uniform(0, 500), rng.uniform(0, 400), w, h],
                         "score": float(rng.uniform(0.0, 0.6))})
    return dets


def _evaluated(gt: COCO, dets: list, img_ids=None, summarize: bool = False) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes([dict(d) for d in dets]), "bbox")
        if img_ids is not None:
            ev.params.imgIds = list(img_ids)
        ev.evaluate()
        if summarize:
            ev.accumulate()
            ev.summarize()
    return ev


@pytest.fixture(scope="module")
def generated():
    rng = np.random.default_rng(0)
    gt = _coco(_gt_dataset(rng, 60))
    return gt, _detections(rng, gt, 0.05), _detections(rng, gt, 0.12)


def test_unit_weights_reproduce_cocoeval_stats0(generated):
    gt, dets_a, dets_b = generated
    for dets in (dets_a, dets_b):
        ev = _evaluated(gt, dets, summarize=True)
        assert match_table(ev).ap()[0] == pytest.approx(ev.stats[0], abs=1e-9)
    assert 0.1 < _evaluated(gt, dets_b, summarize=True).stats[0] < 0.9


def test_unit_weights_on_the_projects_synthetic_dataset(tmp_path):
    root = synthetic.generate(tmp_path / "ds", n_train=1, n_eval=8, progress=False)
    ds = CocoDataset.open(root, "val")
    rng = np.random.default_rng(5)
    dets = []
    for ann in ds.coco.dataset["annotations"]:  # jittered ground truth, rounded like YOLOv7's
        x, y, w, h = ann["bbox"]
        for _ in range(2):
            box = [round(x + rng.normal(0, 0.1 * w), 3), round(y + rng.normal(0, 0.1 * h), 3),
                   round(w * np.exp(rng.normal(0, 0.1)), 3), round(h, 3)]
            dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                         "bbox": box, "score": round(float(rng.uniform()), 2)})  # with ties
    ev = _evaluated(ds.coco, dets, summarize=True)
    assert match_table(ev).ap()[0] == pytest.approx(ev.stats[0], abs=1e-9)


def test_weights_equal_a_dataset_with_the_images_copied(generated):
    gt, dets, _ = generated
    counts = np.random.default_rng(3).integers(0, 4, size=len(gt.dataset["images"]))
    # The copied dataset: image i appears counts[i] times, each copy its own id, copies of
    # one image consecutive in id order (the order a weighted image is ranked in).
    images, anns, copied = [], [], []
    ann_by_img = {i["id"]: [] for i in gt.dataset["images"]}
    for a in gt.dataset["annotations"]:
        ann_by_img[a["image_id"]].append(a)
    det_by_img = {i["id"]: [] for i in gt.dataset["images"]}
    for d in dets:
        det_by_img[d["image_id"]].append(d)
    for img, c in zip(gt.dataset["images"], counts, strict=True):
        for _ in range(c):
            new_id = len(images) + 1
            images.append({**img, "id": new_id})
            for a in ann_by_img[img["id"]]:
                anns.append({**a, "id": len(anns) + 1, "image_id": new_id})
            copied += [{**d, "image_id": new_id} for d in det_by_img[img["id"]]]
    gt_copied = _coco({**gt.dataset, "images": images, "annotations": anns})
    expected = _evaluated(gt_copied, copied, summarize=True).stats[0]
    got = match_table(_evaluated(gt, dets)).ap(counts[None, :].astype(float))[0]
    assert got == pytest.approx(expected, abs=1e-9)


def test_dense_and_group_by_group_false_positive_sums_give_the_same_resamples(generated,
                                                                             monkeypatch):
    import bench.eval.bootstrap as bootstrap

    gt, dets, _ = generated
    table = match_table(_evaluated(gt, dets))
    weights = resample_weights(len(table.image_ids), 50, 3)
    dense = table.ap(weights)
    monkeypatch.setattr(bootstrap, "_DENSE_CELLS", 0)
    np.testing.assert_array_equal(table.ap(weights), dense)


def test_delta_ci_brackets_a_real_difference_and_is_seeded(generated):
    gt, dets_a, dets_b = generated
    ev_a, ev_b = _evaluated(gt, dets_a, summarize=True), _evaluated(gt, dets_b, summarize=True)
    ci = delta_map_ci(ev_a, ev_b, n_boot=200, seed=0)
    assert ci.estimate == pytest.approx(ev_a.stats[0] - ev_b.stats[0], abs=1e-9)
    assert 0 < ci.low < ci.estimate < ci.high and ci.n == 60
    assert delta_map_ci(ev_a, ev_b, n_boot=200, seed=0) == ci
    same = delta_map_ci(ev_a, ev_a, n_boot=50)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)


def test_paired_interval_is_narrower_than_the_unpaired_spread(generated):
    """Pairing is the point: a small, consistent loss is resolved although the mAP of either
    side alone varies by much more over resamples."""
    gt, dets_a, _ = generated
    rng = np.random.default_rng(9)
    worse = [{**d, "bbox": d["bbox"][:2] + [v * (1 + rng.normal(0, 0.03)) for v in d["bbox"][2:]]}
             for d in dets_a]
    ev_a, ev_w = _evaluated(gt, dets_a), _evaluated(gt, worse)
    ci = delta_map_ci(ev_a, ev_w, n_boot=200)
    alone = match_table(ev_a).ap(resample_weights(60, 200, 0))
    assert ci.low > 0
    assert ci.high - ci.low < 0.5 * (np.quantile(alone, 0.975) - np.quantile(alone, 0.025))


def test_delta_refuses_different_image_sets(generated):
    gt, dets_a, _ = generated
    ev_all, ev_half = _evaluated(gt, dets_a), _evaluated(gt, dets_a, img_ids=range(1, 31))
    with pytest.raises(InputDataError, match="same images on both sides: 60 images against 30"):
        delta_map_ci(ev_all, ev_half)
    with pytest.raises(InputDataError, match="call evaluate"):
        match_table(COCOeval(gt, gt.loadRes([dict(d) for d in dets_a[:3]]), "bbox"))


def test_cost_of_200_resamples_on_250_images():
    rng = np.random.default_rng(1)
    gt = _coco(_gt_dataset(rng, 250, n_cats=8))
    evs = [_evaluated(gt, _detections(rng, gt, j, n_cats=8)) for j in (0.05, 0.08)]
    start = time.perf_counter()
    delta_map_ci(*evs, n_boot=200)
    elapsed = time.perf_counter() - start
    print(f"delta_map_ci 250 images x 2 variants x 200 resamples: {elapsed:.2f} s")
    assert elapsed < 10.0  # ~1 s on an idle core; generous for a shared machine


def test_faster_coco_eval_per_image_results_give_the_same_table(generated):
    fce = pytest.importorskip("faster_coco_eval")
    gt, dets, _ = generated
    fgt = fce.COCO()
    fgt.dataset = gt.dataset
    fgt.createIndex()
    ev = fce.COCOeval_faster(fgt, fgt.loadRes([dict(d) for d in dets]), "bbox",
                             separate_eval=True, print_function=lambda *a: None)
    ev.evaluate()
    reference = _evaluated(gt, dets, summarize=True)
    weights = resample_weights(60, 20, 1)
    assert match_table(ev).ap()[0] == pytest.approx(reference.stats[0], abs=1e-9)
    np.testing.assert_allclose(match_table(ev).ap(weights), match_table(reference).ap(weights),
                               atol=1e-12)
    plain = fce.COCOeval_faster(fgt, fgt.loadRes([dict(d) for d in dets]), "bbox",
                                print_function=lambda *a: None)
    plain.evaluate()
    with pytest.raises(InputDataError, match="separate_eval=True"):
        match_table(plain)


def test_evaluate_for_bootstrap_on_either_evaluator(generated):
    gt, dets, _ = generated
    reference = _evaluated(gt, dets, img_ids=range(1, 41), summarize=True).stats[0]
    table = evaluate_for_bootstrap(gt, dets, image_ids=range(1, 41), evaluator="pycocotools")
    assert table.image_ids == tuple(range(1, 41))
    assert table.ap()[0] == pytest.approx(reference, abs=1e-9)
    fce = pytest.importorskip("faster_coco_eval")
    fgt = fce.COCO()
    fgt.dataset = gt.dataset
    fgt.createIndex()
    for coco in (gt, fgt):  # faster-coco-eval, given either ground truth object
        fast = evaluate_for_bootstrap(coco, dets, image_ids=range(1, 41))
        assert fast.image_ids == table.image_ids
        assert fast.ap()[0] == pytest.approx(reference, abs=1e-9)
        assert [len(g.tp_img) for g in fast.segments] == [len(g.tp_img) for g in table.segments]


def test_int8_qat_row_carries_its_delta_against_the_start_it_was_trained_from(generated):
    from bench.report.assemble import with_start_delta
    from bench.report.display import qat_start_note
    from bench.report.rows import QAT_START_KEY, ResultRow

    gt, dets_a, dets_b = generated
    trained, start = match_table(_evaluated(gt, dets_a)), match_table(_evaluated(gt, dets_b))
    row = ResultRow(variant="int8-qat", status="ok", extra={"artifact_meta": {
        "init": "mse", "kept": "trained", "holdout_initial": 0.0042, "holdout_trained": 0.0027}})
    assert with_start_delta(row, None, start, "int8-mse") is row  # nothing to pair: unchanged
    judged = with_start_delta(row, trained, start, "int8-mse")
    found = judged.extra[QAT_START_KEY]
    expected = delta_map_ci(trained, start)
    assert found["start"] == "int8-mse" and found["delta"] == expected.estimate > 0
    assert (found["low"], found["high"]) == (expected.low, expected.high)
    note = qat_start_note(judged)
    shown = f"{expected.estimate:+.4f}".replace("-", "−")
    assert note.startswith(f"int8-qat against its start int8-mse: ΔmAP {shown}")
    assert note.endswith("kept the trained weights (held-out head error 0.0042 → 0.0027)")
    by_engine = ResultRow(variant="int8-qat", status="ok", extra={"artifact_meta": {
        "init": "mse", "kept": "initial", "check": "detections", "agreement_initial": 0.9154,
        "agreement_trained": 0.8761}})
    assert qat_start_note(with_start_delta(by_engine, trained, start, "int8-mse")).endswith(
        "kept the initial weights (held-out agreement with fp32's detections, mAP 0.9154"
        " start, 0.8761 trained)")
    # trained weights that score below their start, CI and all, are said to
    worse = with_start_delta(row, start, trained, "int8-mse")
    assert worse.extra[QAT_START_KEY]["high"] < 0
    assert qat_start_note(worse).endswith(
        "— below its start on this evaluation: int8-mse is the better INT8 here")
    other = match_table(_evaluated(gt, dets_b, img_ids=sorted(gt.getImgIds())[:30]))
    refused = with_start_delta(row, trained, other, "int8-mse").extra[QAT_START_KEY]
    assert "same images" in refused["error"] and "no CI" in qat_start_note(
        with_start_delta(row, trained, other, "int8-mse"))
