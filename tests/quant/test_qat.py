import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from yolo_like import build_yolo_like

from bench.errors import ModelError
from bench.quant import qat as qat_module
from bench.quant.placement import plan_quantization
from bench.quant.qat import QatSettings, run_qat
from bench.quant.qdq import quantized_tensor_set, write_qdq

torch = pytest.importorskip("torch")


def _images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, 3, 32, 32), dtype=np.float32)


def _amax_by_max(model: onnx.ModelProto, tensors, images: np.ndarray) -> dict[str, float]:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None)
                              for t in tensors)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = session.run(None, {"images": images})
    return {t: float(np.abs(o).max()) for t, o in zip(tensors, outs)}


def _run(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    model = build_yolo_like()
    plan = plan_quantization(model)
    calib = _images(16)
    amax = _amax_by_max(model, plan.activation_tensors, calib)
    return model, plan, amax, calib


@pytest.mark.parametrize("profile", ["tensorrt", "cpu"])
def test_qat_reduces_distillation_loss_and_keeps_placement(setup, profile):
    model, plan, amax, calib = setup
    # Every image trains (no held-out check): this is about what training itself does.
    settings = QatSettings(steps=60, lr=3e-4, batch=4, holdout=0.0)
    result = run_qat(model, plan, amax, calib, settings, profile=profile, progress=False)
    assert result.steps == 60 and result.loss_last < 0.9 * result.loss_first

    qat = write_qdq(result.model, plan, result.amax, profile=profile)
    ptq = write_qdq(model, plan, amax, profile=profile)
    assert quantized_tensor_set(qat) == quantized_tensor_set(ptq)

    held_out = _images(8, seed=1)
    reference = _run(model, held_out)
    err_qat = np.abs(_run(qat, held_out) - reference).mean()
    err_ptq = np.abs(_run(ptq, held_out) - reference).mean()
    assert np.isfinite(err_qat) and result.kept == "trained" and result.images_train == 16
    if profile == "tensorrt":
        # On this random-weight toy the cpu profile's output error is dominated by its
        # quantized conv outputs, which QAT barely moves; tensorrt must improve outright.
        assert err_qat < err_ptq


def test_learned_scales_move(setup):
    model, plan, amax, calib = setup
    settings = QatSettings(steps=15, lr=1e-2, batch=4, learn_scales=True, holdout=0.0)
    result = run_qat(model, plan, amax, calib, settings, profile="tensorrt", progress=False)
    moved = [t for t in result.amax if not np.isclose(result.amax[t], amax[t], rtol=1e-4)]
    assert moved, "no activation scale changed although learn_scales=True"


def test_time_budget_stops_early(setup):
    model, plan, amax, calib = setup
    settings = QatSettings(steps=10_000, minutes=1e-4, batch=4)
    result = run_qat(model, plan, amax, calib, settings, profile="tensorrt", progress=False)
    assert result.stopped_by_time and result.steps < 10_000


def test_undifferentiable_op_is_named_before_training(setup):
    from yolo_like import HEAD_CONVS

    model, plan, amax, calib = setup
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    head = next(n for n in broken.graph.node if n.name == HEAD_CONVS[0])
    feeder = next(n for n in broken.graph.node if head.input[0] in n.output)
    feeder.op_type, feeder.domain = "FancyBlock", "com.example"  # inside what QAT trains
    with pytest.raises(ModelError, match="FancyBlock"):
        run_qat(broken, plan, amax, calib, QatSettings(steps=1), profile="tensorrt",
                progress=False)


def _with_nms_after_the_head(model: onnx.ModelProto) -> onnx.ModelProto:
    """The toy's dense output through ONNX's NonMaxSuppression, as YOLOv7's --end2end
    --max-wh exports end: an op the PyTorch interpreter does not have."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    dense = g.output[0].name
    ints = {"s0": [0], "s4": [4], "s5": [5], "big": [1 << 30], "ax2": [2], "k": [20]}
    for name, value in ints.items():
        g.initializer.append(onnx.numpy_helper.from_array(np.array(value, np.int64), name))
    for name, value in (("iou", 0.45), ("thr", 0.25)):
        g.initializer.append(onnx.numpy_helper.from_array(np.array([value], np.float32), name))
    g.node.extend([
        helper.make_node("Slice", [dense, "s0", "s4", "ax2"], ["nms_boxes"]),
        helper.make_node("Slice", [dense, "s5", "big", "ax2"], ["nms_cls"]),
        helper.make_node("Transpose", ["nms_cls"], ["nms_scores"], perm=[0, 2, 1]),
        helper.make_node("NonMaxSuppression", ["nms_boxes", "nms_scores", "k", "iou", "thr"],
                         ["selected"], center_point_box=1, name="end2end_nms"),
    ])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("selected", TensorProto.INT64, ["n", 3]))
    onnx.checker.check_model(out)
    return out


def test_an_nms_op_after_the_head_is_left_to_the_runtime(setup):
    from bench.models.onnx_torch import OnnxModule

    model, plan, amax, calib = setup
    nms = _with_nms_after_the_head(model)
    with pytest.raises(ModelError, match="NonMaxSuppression"):
        OnnxModule(nms)  # the interpreter cannot run the whole model
    nms_plan = plan_quantization(nms)
    assert nms_plan.activation_tensors == plan.activation_tensors
    settings = QatSettings(steps=20, lr=3e-4, batch=4, holdout=0.0)
    result = run_qat(nms, nms_plan, amax, calib, settings, profile="tensorrt", progress=False)
    assert result.loss_last < result.loss_first
    assert [n.op_type for n in result.model.graph.node] == [n.op_type for n in nms.graph.node]
    qat = write_qdq(result.model, nms_plan, result.amax, profile="tensorrt")
    selected = _run(qat, _images(2, seed=3))  # ONNX Runtime runs the NMS
    assert selected.ndim == 2 and selected.shape[1] == 3


def test_held_out_check_keeps_the_initial_calibration_when_training_hurts(setup):
    model, plan, amax, calib = setup
    wrecked = QatSettings(steps=8, lr=0.5, batch=4)  # a learning rate that ruins the weights
    result = run_qat(model, plan, amax, calib, wrecked, profile="tensorrt", progress=False)
    assert result.kept == "initial" and result.holdout_trained > result.holdout_initial
    assert result.amax == dict(amax)
    assert [i.raw_data for i in result.model.graph.initializer] == \
        [i.raw_data for i in model.graph.initializer]


def test_teacher_targets_cached_or_per_step_train_alike(setup, monkeypatch):
    model, plan, amax, calib = setup
    settings = QatSettings(steps=3, batch=4, holdout=0.0)
    cached = run_qat(model, plan, amax, calib, settings, profile="tensorrt", progress=False)
    monkeypatch.setattr(qat_module, "TEACHER_CACHE_BYTES", 0)
    fresh = run_qat(model, plan, amax, calib, settings, profile="tensorrt", progress=False)
    assert (cached.teacher, fresh.teacher) == ("cached", "per step")
    # The cache holds float16: the losses agree to its precision, not bit for bit.
    assert fresh.loss_first == pytest.approx(cached.loss_first, rel=1e-2)


def test_fixed_batch_1_trains_on_batches_of_1_and_accumulates(tmp_path, monkeypatch):
    from bench.models.export import export_onnx
    from bench.models.yolov7 import build_model

    torch.manual_seed(0)
    detector = build_model("yolov7-tiny", num_classes=2, width=0.25).eval()
    model = onnx.load(str(export_onnx(detector, tmp_path / "b1.onnx", 64, batch=1)))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    plan = plan_quantization(model)
    images = _images(6, seed=2).repeat(2, axis=2).repeat(2, axis=3)  # 64 px
    amax = {t: 4.0 for t in plan.activation_tensors}
    seen = []
    forward = qat_module._distillation_loss
    monkeypatch.setattr(qat_module, "_distillation_loss",
                        lambda s, q, batch, *a: seen.append(len(batch)) or forward(s, q, batch, *a))
    settings = QatSettings(steps=2, batch=4)
    result = run_qat(model, plan, amax, images, settings, profile="tensorrt",
                     progress=False, fixed_batch=1)
    assert (result.micro_batch, result.accumulate, result.steps) == (1, 4, 2)
    assert seen == [1] * 8 and result.kept in ("trained", "initial")
    with pytest.raises(ModelError, match=r"\[4, 3, 64, 64\].*\[1, 3, 64, 64\]"):  # as before
        run_qat(model, plan, amax, images, settings, profile="tensorrt", progress=False)
