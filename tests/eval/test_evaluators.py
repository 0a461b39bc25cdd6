"""faster-coco-eval, the NumPy evaluator and pycocotools give the same twelve figures.

On the embedded default model's real detections (conf 0.001, up to 300 an image) on a
generated evaluation set, on the same with crowd regions in the ground truth, and on
pycocotools' own reference data.
"""

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from pycocotools.coco import COCO

from bench.data import synthetic
from bench.data.coco import CocoDataset
from bench.eval.accuracy import run_accuracy
from bench.eval.coco_eval import METRIC_KEYS, evaluate
from bench.models.default import default_model_path, load_manifest

N_EVAL = 32
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default model over N_EVAL generated images: dataset, results array, metrics."""
    root = synthetic.generate(
        tmp_path_factory.mktemp("ev") / "ds", n_train=1, n_eval=N_EVAL, progress=False
    )
    ds = CocoDataset.open(root, "val")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(default_model_path()), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    inp = sess.get_inputs()[0].name

    def infer(x):
        return dict(zip(names, sess.run(None, {inp: x}), strict=True))

    path = tmp_path_factory.mktemp("out") / "pred.json"
    imgsz = load_manifest()["model"]["imgsz"]
    res = run_accuracy(
        infer, ds, imgsz=imgsz, batch=8, progress=False, results_path=path,
        evaluator="pycocotools",
    )
    entries = json.loads(path.read_text())
    rows = [[r["image_id"], *r["bbox"], r["score"], r["category_id"]] for r in entries]
    return ds, np.array(rows, dtype=np.float64), res


def _same(a: dict, b: dict) -> bool:
    # Identical up to the last bits of a mean (the two sum in different orders).
    return all(
        (math.isnan(a[k]) and math.isnan(b[k])) or math.isclose(a[k], b[k], rel_tol=1e-12)
        for k in METRIC_KEYS
    )


def _identical(a: dict, b: dict) -> bool:
    # The NumPy evaluator repeats pycocotools' float operations: the same floats.
    return all((math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in METRIC_KEYS)


# (evaluator, how close to pycocotools it must be)
CHECKED = [("faster", _same), ("numpy", _identical)]


@pytest.mark.parametrize(("evaluator", "agrees"), CHECKED)
def test_default_detections_give_identical_figures(default_run, evaluator, agrees):
    ds, results, res = default_run
    assert len(results) > 20 * N_EVAL  # conf 0.001: many low-score detections an image
    assert 0.3 < res.metrics["map"] < 0.95  # a real detector, neither blind nor perfect
    faster = evaluate(ds.coco, results, ds.image_ids, evaluator=evaluator)
    reference = evaluate(ds.coco, results, ds.image_ids, evaluator="pycocotools")
    assert agrees(faster, reference), (faster, reference)
    assert _same(reference, dict(res.metrics))  # the pass scored the same array
    assert sum(not math.isnan(v) for v in faster.values()) >= 9


def _with_crowds(ds: CocoDataset, every: int) -> COCO:
    """ds's ground truth with every `every`-th annotation turned into a crowd region."""
    data = json.loads(json.dumps(ds.coco.dataset))
    for k, ann in enumerate(data["annotations"]):
        ann["iscrowd"] = int(k % every == 0)
    gt = COCO()
    gt.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


@pytest.mark.parametrize(("evaluator", "agrees"), CHECKED)
def test_crowd_annotations_give_identical_figures(default_run, evaluator, agrees):
    ds, results, _ = default_run
    plain = evaluate(ds.coco, results, ds.image_ids, evaluator="pycocotools")
    gt = _with_crowds(ds, every=4)
    assert sum(a["iscrowd"] for a in gt.anns.values()) >= 10
    faster = evaluate(gt, results, ds.image_ids, evaluator=evaluator)
    reference = evaluate(gt, results, ds.image_ids, evaluator="pycocotools")
    assert agrees(faster, reference), (faster, reference)
    assert faster["map"] != plain["map"]  # the crowd regions did change what counts


@pytest.mark.parametrize(("evaluator", "agrees"), CHECKED)
def test_reference_data_gives_identical_figures(evaluator, agrees):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(DATA / "instances_val2014_100_bbox.json"))
    entries = json.loads((DATA / "instances_val2014_fakebbox100_results.json").read_text())
    results = np.array([[r["image_id"], *r["bbox"], r["score"], r["category_id"]]
                        for r in entries], dtype=np.float64)
    ids = sorted(gt.getImgIds())[:100]
    faster = evaluate(gt, results, ids, evaluator=evaluator)
    assert agrees(faster, evaluate(gt, results, ids, evaluator="pycocotools"))
