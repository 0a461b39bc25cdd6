import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.data import synthetic
from bench.data.coco import CocoDataset
from bench.data.letterbox import letterbox
from bench.errors import ConfigError, InputDataError, ModelError
from bench.eval.accuracy import AccuracyResult, LetterboxCache, run_accuracy

IMGSZ = 96
ROWS = 12  # predictions per image in the oracle's raw output


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return synthetic.generate(
        tmp_path_factory.mktemp("acc") / "ds", n_train=1, n_eval=6, progress=False
    )


@pytest.fixture(scope="module")
def val(root) -> CocoDataset:
    return CocoDataset.open(root, "val")


def _key(chw: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(chw).tobytes()).hexdigest()


class Oracle:
    """Answers each letterboxed image with its ground truth in the raw [B, N, 5+C] layout."""

    def __init__(self, ds: CocoDataset):
        self.table: dict[str, np.ndarray] = {}
        self.shapes: list[tuple] = []
        c = ds.num_classes
        for i in ds.image_ids:
            chw, box = letterbox(ds.load_rgb(i), IMGSZ)
            rows = np.zeros((ROWS, 5 + c), np.float32)
            for r, a in enumerate(ds.coco.imgToAnns[i][:ROWS]):
                x, y, w, h = a["bbox"]
                rx, ry = box.ratio
                rows[r, :5] = [
                    (x + w / 2) * rx + box.pad[0],
                    (y + h / 2) * ry + box.pad[1],
                    w * rx,
                    h * ry,
                    1,
                ]
                rows[r, 5 + ds.class_to_category.index(a["category_id"])] = 1
            self.table[_key(chw)] = rows
        self.blank = np.zeros((ROWS, 5 + c), np.float32)

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.shapes.append(batch.shape)
        return {"output": np.stack([self.table.get(_key(b), self.blank) for b in batch])}


@pytest.mark.parametrize("batch, fixed", [(1, None), (4, None), (1, 4)])
def test_oracle_scores_one_with_any_batching(val, batch, fixed):
    oracle = Oracle(val)
    res = run_accuracy(oracle, val, imgsz=IMGSZ, batch=batch, fixed_batch=fixed, progress=False)
    assert isinstance(res, AccuracyResult) and res.n_images == 6
    assert res.metrics["map"] == pytest.approx(1.0) and res.metrics["map50"] == pytest.approx(1.0)
    assert res.infer_seconds > 0 and res.images_per_s > 0 and res.seconds >= res.infer_seconds
    # 6 images: batch 4 -> 4 + 2; fixed batch 4 -> 4 + 4, the last 2 of them padding.
    expected = [4, 4] if fixed else {1: [1] * 6, 4: [4, 2]}[batch]
    assert [s[0] for s in oracle.shapes] == expected


def test_eval_count_takes_the_first_ids(val, tmp_path):
    oracle = Oracle(val)
    path = tmp_path / "pred.json"
    res = run_accuracy(oracle, val, imgsz=IMGSZ, eval_count=2, progress=False, results_path=path)
    assert res.n_images == 2 and res.metrics["map"] == pytest.approx(1.0)
    written = json.loads(path.read_text())
    assert {r["image_id"] for r in written} == set(val.image_ids[:2])
    assert res.results_path == path
    with pytest.raises(ConfigError, match="got 0"):
        run_accuracy(oracle, val, imgsz=IMGSZ, eval_count=0, progress=False)


def _onnx_raw_model(path: Path, num_classes: int) -> Path:
    """images [B,3,S,S] -> pooled colour -> Gemm -> sigmoid -> scaled to [B, N, 5+C]."""
    width = 5 + num_classes
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 3, (3, ROWS * width)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 1, (ROWS * width,)).astype(np.float32), "b")
    scale = np.ones((1, 1, width), np.float32)
    scale[..., :4] = [IMGSZ, IMGSZ, IMGSZ / 3, IMGSZ / 3]
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["dense"]),
        helper.make_node("Reshape", ["dense", "shape"], ["grid"]),
        helper.make_node("Sigmoid", ["grid"], ["prob"]),
        helper.make_node("Mul", ["prob", "scale"], ["output"]),
    ]
    inits = [
        w,
        b,
        numpy_helper.from_array(np.array([-1, ROWS, width], np.int64), "shape"),
        numpy_helper.from_array(scale, "scale"),
    ]
    graph = helper.make_graph(
        nodes,
        "raw",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, IMGSZ, IMGSZ])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", ROWS, width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_real_onnxruntime_model(val, tmp_path):
    sess = _session(_onnx_raw_model(tmp_path / "raw.onnx", val.num_classes))
    names = [o.name for o in sess.get_outputs()]
    infer = lambda x: dict(zip(names, sess.run(None, {"images": x}), strict=True))  # noqa: E731
    res = run_accuracy(infer, val, imgsz=IMGSZ, batch=4, progress=False)
    assert res.n_images == 6 and 0.0 <= res.metrics["map"] < 0.5  # random weights: a poor detector
    assert all(0.0 <= v <= 1.0 for v in res.metrics.values() if v == v)


def test_nan_output_is_a_model_error(val):
    def infer(x):
        out = np.zeros((x.shape[0], 4, 5 + val.num_classes), np.float32)
        out[0, 1, 2] = np.nan
        return {"output": out}

    with pytest.raises(ModelError, match="output 'output'"):
        run_accuracy(infer, val, imgsz=IMGSZ, progress=False)


def test_class_count_mismatch(val):
    infer = lambda x: {"output": np.zeros((x.shape[0], 100, 85), np.float32)}  # noqa: E731
    with pytest.raises(InputDataError, match="80 classes, but the dataset has 8"):
        run_accuracy(infer, val, imgsz=IMGSZ, progress=False)


def test_corrupt_image_is_named(root, tmp_path):
    copy = Path(shutil.copytree(root, tmp_path / "copy"))
    ds = CocoDataset.open(copy, "val")
    bad = ds.image_path(ds.image_ids[3])
    bad.write_bytes(b"broken")
    with pytest.raises(InputDataError, match=bad.name):
        run_accuracy(Oracle(CocoDataset.open(root, "val")), ds, imgsz=IMGSZ, progress=False)


def test_letterbox_cache_is_shared_and_bounded(root, tmp_path):
    copy = Path(shutil.copytree(root, tmp_path / "copy"))
    ds = CocoDataset.open(copy, "val")
    oracle, cache = Oracle(ds), LetterboxCache()
    first = run_accuracy(oracle, ds, imgsz=IMGSZ, progress=False, cache=cache)
    assert len(cache) == 6 and cache.used == 6 * IMGSZ * IMGSZ * 3
    for i in ds.image_ids:  # a second pass must not need the files any more
        ds.image_path(i).unlink()
    second = run_accuracy(oracle, ds, imgsz=IMGSZ, progress=False, cache=cache)
    assert second.metrics == first.metrics and second.metrics["map"] == pytest.approx(1.0)
    small = LetterboxCache(max_bytes=2 * IMGSZ * IMGSZ * 3)
    run_accuracy(
        Oracle(CocoDataset.open(root, "val")),
        CocoDataset.open(root, "val"),
        imgsz=IMGSZ,
        progress=False,
        cache=small,
    )
    assert len(small) == 2


def test_several_streams_give_the_same_results_in_image_order(val, tmp_path):
    sess = _session(_onnx_raw_model(tmp_path / "raw.onnx", val.num_classes))
    names = [o.name for o in sess.get_outputs()]
    used: list[int] = []

    def stream(k):
        def infer(x):
            used.append(k)
            return dict(zip(names, sess.run(None, {"images": x}), strict=True))

        return infer

    one = run_accuracy(stream(0), val, imgsz=IMGSZ, progress=False,
                       results_path=tmp_path / "one.json")
    three = run_accuracy([stream(1), stream(2), stream(3)], val, imgsz=IMGSZ, progress=False,
                         results_path=tmp_path / "three.json")
    assert three.streams == 3 and one.streams == 1
    assert three.metrics == one.metrics
    # The same entries in the same (image) order, whichever stream ran which image.
    assert (tmp_path / "three.json").read_text() == (tmp_path / "one.json").read_text()
    assert used.count(0) == 6 and sum(used.count(k) for k in (1, 2, 3)) == 6


def test_a_failing_stream_fails_the_pass_with_its_error(val):
    oracle = Oracle(val)

    def slow(x):  # leaves batches for the broken stream to take
        time.sleep(0.05)
        return oracle(x)

    def broken(x):
        raise ModelError("stream 2 broke")

    with pytest.raises(ModelError, match="stream 2 broke"):
        run_accuracy([slow, broken], val, imgsz=IMGSZ, progress=False)
    with pytest.raises(ConfigError, match="at least one infer"):
        run_accuracy([], val, imgsz=IMGSZ, progress=False)


class NoisyOracle(Oracle):
    """The oracle's ground truth jittered, a false positive per image, scores spread: a
    detector with a middling mAP, for evaluations that have something to get wrong."""

    def __init__(self, ds: CocoDataset):
        super().__init__(ds)
        rng = np.random.default_rng(7)
        for rows in self.table.values():
            real = rows[:, 4] > 0
            rows[real, :4] *= rng.normal(1.0, 0.08, (int(real.sum()), 4)).astype(np.float32)
            rows[real, 4] = rng.uniform(0.2, 1.0, int(real.sum()))
            rows[-1, :5] = [IMGSZ / 2, IMGSZ / 2, IMGSZ / 4, IMGSZ / 4, 0.6]
            rows[-1, 5] = 1


class ReusingOracle(Oracle):
    """Writes every answer into one output array, as an engine with bound output buffers
    (TensorRT's) does: the pass must copy it before the next call."""

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        fresh = super().__call__(batch)["output"]
        if getattr(self, "out", None) is None or self.out.shape != fresh.shape:
            self.out = np.empty_like(fresh)
        self.out[...] = fresh
        return {"output": self.out}


def test_an_engine_reusing_its_output_buffer_is_copied_before_its_next_call(val):
    # one stream: decoding runs in the pool behind the next call
    res = run_accuracy(ReusingOracle(val), val, imgsz=IMGSZ, batch=1, progress=False)
    assert res.metrics["map"] == pytest.approx(1.0)


def test_batch_buffers_are_reused_with_their_padding_zeroed():
    from bench.eval.accuracy import _Buffers

    buffers = _Buffers()
    first = buffers.take((4, 3, 8, 8), 4)
    first[...] = 1.0
    buffers.give(first)
    again = buffers.take((4, 3, 8, 8), 2)  # a short batch of a fixed batch of 4
    assert again is first and not again[2:].any()
    assert buffers.take((4, 3, 8, 8), 4) is not first  # taken, so a new one


def test_matching_in_parts_as_the_pass_runs_gives_the_reference_figures(val, monkeypatch):
    from bench.eval import accuracy
    from bench.eval.bootstrap import match_table
    from bench.eval.coco_eval import evaluate, evaluate_detailed

    monkeypatch.setattr(accuracy, "_PART_IMAGES", 2)  # 6 images: three parts
    res = run_accuracy([NoisyOracle(val), NoisyOracle(val)], val, imgsz=IMGSZ,
                       progress=False, keep_results=True, keep_matches=True)
    assert res.phase_seconds["matching"] > 0  # the parts were matched in the pass
    want = evaluate(val.coco, res.results, evaluator="pycocotools")
    assert res.metrics == want and 0.2 < res.metrics["map"] < 0.95
    _, whole = evaluate_detailed(val.coco, res.results, evaluator="numpy")
    table = match_table(whole)
    np.testing.assert_array_equal(res.matches.gt_count, table.gt_count)
    for a, b in zip(res.matches.segments, table.segments, strict=True):
        for name in ("category", "tp_img", "fp_img", "fp_mult", "fp_before"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_metrics_are_read_only_and_phases_are_recorded(val):
    oracle = Oracle(val)
    res = run_accuracy(oracle, val, imgsz=IMGSZ, batch=2, progress=False)
    assert len(res.metrics) == 12 and res.metrics["ar_large"] == pytest.approx(1.0)
    with pytest.raises(TypeError):
        res.metrics["map"] = 0.0  # type: ignore[index]
    given = dict(res.metrics)
    again = AccuracyResult(metrics=given, n_images=6, seconds=1.0, images_per_s=6.0,
                           infer_seconds=0.5)
    given["map"] = -1.0  # the record keeps its own copy
    assert again.metrics["map"] == pytest.approx(1.0)
    phases = res.phase_seconds
    assert set(phases) == {"inference", "decode", "evaluation", "matching", "write",
                           "input_wait", "total"}
    assert phases["write"] == 0.0  # no results_path
    assert res.n_detections == sum(len(val.coco.imgToAnns[i]) for i in val.image_ids)
    assert phases["decode"] > 0 and phases["evaluation"] > 0 and phases["inference"] > 0
    assert phases["decode"] + phases["evaluation"] <= res.seconds + phases["inference"]
    assert res.evaluator == "numpy"  # the default


def test_evaluator_is_passed_through_and_checked_before_inference(val):
    oracle = Oracle(val)
    faster = run_accuracy(oracle, val, imgsz=IMGSZ, progress=False, evaluator="faster")
    reference = run_accuracy(oracle, val, imgsz=IMGSZ, progress=False, evaluator="pycocotools")
    assert reference.evaluator == "pycocotools"
    assert dict(reference.metrics) == pytest.approx(dict(faster.metrics), rel=1e-12, nan_ok=True)
    calls = len(oracle.shapes)
    with pytest.raises(ConfigError, match="evaluator = 'nope'"):
        run_accuracy(oracle, val, imgsz=IMGSZ, progress=False, evaluator="nope")
    assert len(oracle.shapes) == calls  # failed at once, not after the whole pass


def test_progress_bar_shows_rate_and_time_left(val):
    import io

    from bench import progress

    oracle = Oracle(val)

    def slow(x):  # slower than tqdm's refresh interval, so the bar redraws mid-pass
        time.sleep(0.15)
        return oracle(x)

    stream = io.StringIO()  # the terminal the suite's bars draw on (bench.progress)
    surface = progress.Surface(stream, column=lambda: 0, width=lambda: 120)
    with progress.surface_installed(surface):
        run_accuracy(slow, val, imgsz=IMGSZ, progress=True, label="acc-test")
    err = stream.getvalue()
    assert "acc-test" in err
    # e.g. "acc-test:  50%|#####     | 3/6 [00:00<00:00,  6.4img/s]": done/total, elapsed<left, rate
    assert re.search(r"\d/6 \[\d\d:\d\d<\d\d:\d\d, +\d+(\.\d+)?img/s\]", err), err


def test_writing_the_results_is_timed_apart(val, tmp_path):
    res = run_accuracy(Oracle(val), val, imgsz=IMGSZ, progress=False,
                       results_path=tmp_path / "p.json")
    assert 0 < res.write_seconds <= res.eval_seconds
    assert res.phase_seconds["evaluation"] == pytest.approx(res.eval_seconds - res.write_seconds)
