"""int8-qat's keep check on the engine: agreement with the FP32 model's own detections,
run on ONNX Runtime with the embedded default on generated images (no mocks)."""

import numpy as np
import onnx
import pytest
from onnx import helper

from bench.quant.qat_check import Agreement, compare, engine_unavailable

PROTOCOL = {"fixed_batch": None, "conf": 0.001, "iou": 0.65, "max_det": 300}


@pytest.fixture(scope="module")
def default_and_images(tiny_coco):
    from bench.data.calibration import calibration_batches
    from bench.data.coco import CocoDataset
    from bench.models.default import default_model_path, load_manifest

    imgsz = int(load_manifest()["model"]["imgsz"])
    source = CocoDataset(tiny_coco, split="train")
    images = np.concatenate(list(calibration_batches(source, 8, imgsz, 4)))
    return onnx.load(str(default_model_path())), np.rint(images * 255).astype(np.uint8)


def _perturbed(model: onnx.ModelProto, scale: float, seed: int = 0) -> onnx.ModelProto:
    """The model with every float weight of 2+ dimensions multiplied by (1 + scale * noise)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rng = np.random.default_rng(seed)
    for init in out.graph.initializer:
        value = onnx.numpy_helper.to_array(init)
        if value.dtype == np.float32 and value.ndim >= 2:
            noisy = value * (1 + scale * rng.standard_normal(value.shape).astype(np.float32))
            init.CopyFrom(onnx.numpy_helper.from_array(noisy.astype(np.float32), init.name))
    return out


def test_the_fp32_model_agrees_with_itself_and_a_damaged_copy_agrees_less(default_and_images):
    model, images = default_and_images
    slightly, badly = _perturbed(model, 0.02), _perturbed(model, 0.3)
    found = compare(model, {"initial": model, "trained": badly, "slightly": slightly},
                    images, **PROTOCOL)
    assert found is not None and found.images == len(images) == 8
    assert found.thresholds == (0.1, 0.25, 0.5)  # the default detects boxes at every one
    assert found.scores["initial"] == pytest.approx(1.0, abs=1e-6)
    assert found.scores["initial"] > found.scores["slightly"] > found.scores["trained"]
    assert found.kept == "initial"


def test_trained_weights_are_kept_only_when_they_agree_strictly_better():
    assert Agreement({"initial": 0.90, "trained": 0.91}, 8, (0.1,)).kept == "trained"
    assert Agreement({"initial": 0.91, "trained": 0.91}, 8, (0.1,)).kept == "initial"
    assert Agreement({"initial": 0.92, "trained": 0.91}, 8, (0.1,)).kept == "initial"


def test_a_fixed_batch_model_is_fed_whole_batches(tmp_path, default_and_images):
    from bench.models.default import load_manifest
    from bench.models.export import export_onnx, fused_from_onnx

    model, images = default_and_images
    meta = load_manifest()["model"]
    fused = fused_from_onnx(model, meta["arch"], meta["num_classes"], meta["width"])
    pytest.importorskip("torch")
    b3 = onnx.load(str(export_onnx(fused, tmp_path / "b3.onnx", int(meta["imgsz"]), batch=3)))
    free = compare(model, {"initial": model, "trained": model}, images[:7], **PROTOCOL)
    fixed = compare(b3, {"initial": b3, "trained": b3}, images[:7],
                    **{**PROTOCOL, "fixed_batch": 3})  # 7 images: batches of 3, the last padded
    assert fixed.images == free.images == 7
    assert fixed.scores["trained"] == pytest.approx(1.0, abs=1e-6)


def test_nothing_to_agree_with_gives_no_verdict(default_and_images):
    model, images = default_and_images
    assert compare(model, {"initial": model, "trained": model}, images[:0], **PROTOCOL) is None
    blank = np.zeros_like(images[:2])  # black canvases: the default finds nothing at 0.1
    assert compare(model, {"initial": model, "trained": model}, blank, **PROTOCOL) is None


def test_a_model_onnx_runtime_cannot_load_is_named(default_and_images):
    model, _ = default_and_images
    assert engine_unavailable(model) is None
    plugin = onnx.ModelProto()
    plugin.CopyFrom(model)
    out = plugin.graph.output[0].name
    plugin.graph.node.append(helper.make_node("EfficientNMS_TRT", [out], ["nms"],
                                              domain="trt.plugins"))
    plugin.graph.output.append(helper.make_tensor_value_info("nms", onnx.TensorProto.FLOAT, None))
    plugin.opset_import.append(helper.make_opsetid("trt.plugins", 1))
    reason = engine_unavailable(plugin)
    assert reason is not None and "EfficientNMS_TRT" in reason


def test_a_qat_build_that_hurts_keeps_the_start_it_was_trained_from(tmp_path, tiny_coco):
    """Through the session as a user runs it: a learning rate that wrecks the weights."""
    pytest.importorskip("torch")
    from bench.config import load_config
    from bench.session import BenchSession

    cfg = load_config({"coco": str(tiny_coco), "eval_count": 3, "calib_count": 8,
                       "qat_iters": 3, "qat_images": 8, "qat_lr": 0.5, "qat_init": "mse",
                       "bench_rounds": 3, "bench_warmup": 1, "progress": False,
                       "power": "none", "variants": "int8-mse,int8-qat",
                       "cache_dir": str(tmp_path / "cache"),
                       "results_dir": str(tmp_path / "results"),
                       "baseline": str(tmp_path / "baseline.json")}, env={}, pyproject=None)
    session = BenchSession(cfg)
    rows = {v: session.measure(session.prepare(v)) for v in ("int8-mse", "int8-qat")}
    meta = rows["int8-qat"].extra["artifact_meta"]
    assert (meta["kept"], meta["check"], meta["images_holdout"]) == ("initial", "detections", 1)
    assert meta["agreement_initial"] > meta["agreement_trained"]
    start, kept = (onnx.load(str(rows[v].artifact)) for v in ("int8-mse", "int8-qat"))
    assert [i.raw_data for i in kept.graph.initializer] == \
        [i.raw_data for i in start.graph.initializer]
