import contextlib
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from bench.data import synthetic
from bench.data.coco import CocoDataset
from bench.data.letterbox import Letterbox, plan
from bench.errors import ConfigError, InputDataError
from bench.eval.coco_eval import (
    EVALUATORS,
    METRIC_KEYS,
    check_evaluator,
    evaluate,
    to_coco_array,
    to_coco_results,
    write_results,
)
from bench.eval.decode import Detections

DATA = Path(__file__).parent / "data"
# pycocotools' demo (PythonAPI/pycocoEvalDemo.ipynb, results/val2014_fake_eval_res.txt):
# its fake bbox results on the first 100 images of instances_val2014, all twelve figures.
PUBLISHED = {
    "map": 0.505, "map50": 0.697, "map75": 0.573,
    "map_small": 0.586, "map_medium": 0.519, "map_large": 0.501,
    "ar1": 0.387, "ar10": 0.594, "ar100": 0.595,
    "ar_small": 0.640, "ar_medium": 0.566, "ar_large": 0.564,
}


def _identity(h: int, w: int) -> Letterbox:
    return Letterbox((1.0, 1.0), (0, 0), (h, w), (h, w))


def _gt_as_network_detections(ds: CocoDataset, image_id: int, imgsz: int):
    """Ground truth of one image, placed in the network input as the letterbox places it."""
    info = ds.image_info(image_id)
    box = plan((info["height"], info["width"]), imgsz)
    anns = ds.coco.imgToAnns[image_id]
    xywh = np.array([a["bbox"] for a in anns], float).reshape(-1, 4)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    rx, ry = box.ratio
    net = xyxy * [rx, ry, rx, ry] + [box.pad[0], box.pad[1]] * 2
    classes = [ds.class_to_category.index(a["category_id"]) for a in anns]
    return Detections.make(net, np.ones(len(anns)), classes), box


@pytest.fixture(scope="module")
def val(tmp_path_factory) -> CocoDataset:
    root = synthetic.generate(
        tmp_path_factory.mktemp("ev") / "ds", n_train=1, n_eval=6, progress=False
    )
    return CocoDataset.open(root, "val")


def test_ground_truth_as_detections_scores_one(val):
    results = []
    for i in val.image_ids:
        det, box = _gt_as_network_detections(val, i, imgsz=160)
        results += to_coco_results(i, det, box, val.class_to_category)
    metrics = evaluate(val.coco, results)
    assert set(metrics) == set(METRIC_KEYS)
    assert metrics["map"] == pytest.approx(1.0) and metrics["map50"] == pytest.approx(1.0)
    assert metrics["ar100"] == pytest.approx(1.0)
    defined = [v for k, v in metrics.items() if not math.isnan(v) and k != "ar1"]
    assert len(defined) >= 6 and all(v == pytest.approx(1.0) for v in defined)
    assert metrics["ar1"] < 1.0  # one detection per image cannot recall images with several objects


def _one_image_gt(tmp_path: Path) -> COCO:
    data = {
        "info": {},
        "images": [{"id": 7, "file_name": "a.png", "width": 300, "height": 200}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 5,
                "bbox": [10, 10, 50, 50],
                "area": 2500,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 7,
                "category_id": 5,
                "bbox": [100, 100, 50, 50],
                "area": 2500,
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_perturbed_detection_hand_checked(tmp_path, capsys):
    gt = _one_image_gt(tmp_path)
    # Box 1 exact (0.9); box 2 shifted 12 px right: IoU = 38/62 = 0.613, so it matches
    # at IoU 0.50, 0.55, 0.60 and misses at 0.65..0.95.
    det = Detections.make([[10, 10, 60, 60], [112, 100, 162, 150]], [0.9, 0.8], [0, 0])
    results = to_coco_results(7, det, _identity(200, 300), [5, 9])
    m = evaluate(gt, results)
    half = 51 / 101  # precision 1 up to recall 0.5 on COCO's 101 recall points
    assert m["map50"] == pytest.approx(1.0)
    assert m["map75"] == pytest.approx(half)
    assert m["map"] == pytest.approx((3 + 7 * half) / 10)
    assert m["map_medium"] == pytest.approx(m["map"])
    assert math.isnan(m["map_small"]) and math.isnan(m["map_large"])  # no such ground truth
    assert m["ar1"] == pytest.approx(0.5) and m["ar100"] == pytest.approx((3 + 7 * 0.5) / 10)
    assert capsys.readouterr().out == ""


def test_no_detections_give_zeros(tmp_path):
    assert evaluate(_one_image_gt(tmp_path), []) == dict.fromkeys(METRIC_KEYS, 0.0)


def test_results_are_mapped_rounded_and_clipped():
    box = Letterbox((0.5, 0.5), (4, 10), (100, 80), (50, 40))
    det = Detections.make([[4, 10, 14.12345, 20], [0, 0, 100, 100]], [0.123456789, 0.5], [1, 0])
    r = to_coco_results(3, det, box, [17, 42])
    assert r[0] == {
        "image_id": 3,
        "category_id": 42,
        "bbox": [0.0, 0.0, 20.247, 20.0],
        "score": 0.12346,
    }
    assert r[1]["bbox"] == [0.0, 0.0, 80.0, 100.0]  # clipped to the 80 x 100 image


def test_subset_of_images(tmp_path, val):
    first = val.image_ids[0]
    det, box = _gt_as_network_detections(val, first, imgsz=128)
    results = to_coco_results(first, det, box, val.class_to_category)
    assert evaluate(val.coco, results, image_ids=[first])["map"] == pytest.approx(1.0)
    assert evaluate(val.coco, results)["map"] < 0.9  # the other images' objects are missed


def test_written_results_load_in_pycocotools(tmp_path, val):
    first = val.image_ids[0]
    det, box = _gt_as_network_detections(val, first, imgsz=128)
    path = write_results(
        tmp_path / "out" / "predictions.json",
        to_coco_results(first, det, box, val.class_to_category),
    )
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = val.coco.loadRes(str(path))
    assert len(loaded.anns) == len(det)
    assert [p.name for p in path.parent.iterdir()] == ["predictions.json"]


def test_results_array_scores_and_writes_as_the_entries_do(tmp_path):
    gt = _one_image_gt(tmp_path)
    det = Detections.make([[10, 10, 60, 60], [112, 100, 162, 150]], [0.9, 0.8], [0, 0])
    array = to_coco_array(7, det, _identity(200, 300), [5, 9])
    assert array.shape == (2, 7) and array[:, 0].tolist() == [7, 7]
    assert array[:, 6].tolist() == [5, 5] and array[0, 1:5].tolist() == [10, 10, 50, 50]
    entries = to_coco_results(7, det, _identity(200, 300), [5, 9])
    assert evaluate(gt, array) == evaluate(gt, entries)
    a = write_results(tmp_path / "a.json", array)
    b = write_results(tmp_path / "b.json", entries)
    assert a.read_text() == b.read_text()
    assert evaluate(gt, np.zeros((0, 7))) == dict.fromkeys(METRIC_KEYS, 0.0)


def reference_case() -> tuple[COCO, np.ndarray]:
    """pycocotools' own reference: its 100-image val2014 subset and fake bbox results."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(DATA / "instances_val2014_100_bbox.json"))
    entries = json.loads((DATA / "instances_val2014_fakebbox100_results.json").read_text())
    rows = [[r["image_id"], *r["bbox"], r["score"], r["category_id"]] for r in entries]
    return gt, np.array(rows, dtype=np.float64)


def test_metric_keys_are_cocoeval_s_twelve_figures():
    assert len(METRIC_KEYS) == 12 and len(set(METRIC_KEYS)) == 12
    assert METRIC_KEYS[:6] == ("map", "map50", "map75", "map_small", "map_medium", "map_large")
    assert METRIC_KEYS[6:] == ("ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")


@pytest.mark.parametrize("evaluator", EVALUATORS)
def test_reproduces_pycocotools_published_figures(evaluator):
    gt, results = reference_case()
    assert len(gt.imgs) == 100 and results.shape == (734, 7)
    assert sum(a["iscrowd"] for a in gt.anns.values()) == 9  # crowd regions included
    metrics = evaluate(gt, results, sorted(gt.getImgIds())[:100], evaluator=evaluator)
    assert {k: round(v, 3) for k, v in metrics.items()} == PUBLISHED


def test_unknown_evaluator_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="'cocoapi', expected one of numpy, faster, pyco"):
        evaluate(_one_image_gt(tmp_path), [], evaluator="cocoapi")
    assert check_evaluator("pycocotools") == "pycocotools"


def test_missing_faster_coco_eval_names_the_package_and_the_option(tmp_path, monkeypatch):
    # A None entry in sys.modules makes `import faster_coco_eval` raise ImportError, as
    # on a machine without the package.
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)
    det = Detections.make([[10, 10, 60, 60]], [0.9], [0])
    array = to_coco_array(7, det, _identity(200, 300), [5, 9])
    with pytest.raises(ConfigError, match="faster-coco-eval.*evaluator = 'numpy'"):
        evaluate(_one_image_gt(tmp_path), array, evaluator="faster")
    # The others still run without it: no silent switch, an explicit choice.
    for evaluator in ("numpy", "pycocotools"):
        m = evaluate(_one_image_gt(tmp_path), array, evaluator=evaluator)
        assert m["map50"] == pytest.approx(51 / 101)  # one of two objects found


@pytest.mark.parametrize("evaluator", EVALUATORS)
def test_bad_results_arrays_are_named(tmp_path, evaluator):
    gt = _one_image_gt(tmp_path)
    with pytest.raises(InputDataError, match=r"shape \(2, 6\), expected \[n, 7\]"):
        evaluate(gt, np.zeros((2, 6)), evaluator=evaluator)
    stray = np.array([[8, 10, 10, 50, 50, 0.9, 5]], dtype=np.float64)
    with pytest.raises(InputDataError, match=r"1 image id\(s\) not in the ground truth.*\[8\]"):
        evaluate(gt, stray, evaluator=evaluator)


def test_write_results_leaves_no_temporary_and_keeps_the_old_file_on_error(tmp_path):
    path = write_results(tmp_path / "p.json", np.array([[7, 1, 2, 3, 4, 0.5, 5]], float))
    before = path.read_text()
    with pytest.raises(TypeError):
        write_results(path, [{"image_id": 7, "bbox": object()}])
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["p.json"]
