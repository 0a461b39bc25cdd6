"""Q/DQ writing on the mini YOLO-like graph, run for real in ONNX Runtime (CPU)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from yolo_like import HEAD_CONVS, build_yolo_like

from bench.errors import ConfigError, ModelError
from bench.quant.placement import KeepFloat, plan_quantization
from bench.quant.qdq import (
    quantize_weight,
    quantized_tensor_set,
    weight_scales,
    write_qdq,
)

PROFILES = ("tensorrt", "cpu")
REPO = Path(__file__).resolve().parents[2]


def _session(model: onnx.ModelProto, dump: Path | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if dump is not None:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(dump)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _max_calibration(model: onnx.ModelProto, tensors, images: np.ndarray) -> dict[str, float]:
    """True maxima of |x| over the images: every planned tensor as an extra graph output."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors)
    session = _session(probe)
    values = session.run(list(tensors), {"images": images})
    return {t: float(np.abs(v).max()) for t, v in zip(tensors, values)}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32)


@pytest.fixture(scope="module")
def amax(model, plan, images) -> dict[str, float]:
    return _max_calibration(model, plan.activation_tensors, images)


@pytest.fixture(scope="module")
def written(model, plan, amax) -> dict[str, onnx.ModelProto]:
    return {p: write_qdq(model, plan, amax, profile=p) for p in PROFILES}


def _quantize_nodes(model: onnx.ModelProto, tensor: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor]


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def _is_topological(model: onnx.ModelProto) -> bool:
    seen = {t.name for t in model.graph.initializer} | {i.name for i in model.graph.input}
    for node in model.graph.node:
        if any(t and t not in seen for t in node.input):
            return False
        seen.update(node.output)
    return True


@pytest.mark.parametrize("profile", PROFILES)
def test_written_model_is_valid_sorted_and_keeps_dynamic_batch(written, model, profile):
    out = written[profile]
    onnx.checker.check_model(out, full_check=True)
    assert _is_topological(out)
    assert out.opset_import[0].version >= 13
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [o.name for o in out.graph.output] == [o.name for o in model.graph.output]
    assert len(model.graph.node) == 99  # the input model is untouched


@pytest.mark.parametrize("profile", PROFILES)
def test_outputs_stay_close_to_fp32_for_other_batch_sizes(written, model, profile):
    images = np.random.default_rng(2).random((2, 3, 32, 32), dtype=np.float32) * 0.9
    ref = _session(model).run(None, {"images": images})[0]
    out = _session(written[profile]).run(None, {"images": images})[0]
    assert out.shape == ref.shape == (2, 640, 8)
    rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    scores = np.abs(out[..., 4:] - ref[..., 4:]).mean()
    # measured 0.2% / 0.12 points (tensorrt) and 1.1% / 0.64 points (cpu: it also
    # quantizes conv outputs, which is most of its extra error)
    assert rel < {"tensorrt": 0.01, "cpu": 0.025}[profile], f"{profile}: relative error {rel}"
    assert scores < {"tensorrt": 0.005, "cpu": 0.015}[profile], f"{profile}: scores {scores}"


def test_cpu_profile_fuses_every_quantized_conv_in_onnxruntime(written, plan, tmp_path):
    fused = {}
    for profile in PROFILES:
        _session(written[profile], tmp_path / f"{profile}.onnx")
        ops = Counter(n.op_type for n in onnx.load(str(tmp_path / f"{profile}.onnx")).graph.node)
        fused[profile] = ops["QLinearConv"] + ops["ConvInteger"]
        if profile == "cpu":
            assert ops["QLinearSigmoid"] == len(plan.gates)  # SiLU runs in int8 too
    print(f"fused convs of {len(plan.ops)}: {fused}")
    assert fused["cpu"] == len(plan.ops) == 17
    # TensorRT's placement leaves conv outputs float: ONNX Runtime cannot fuse those convs
    assert fused["tensorrt"] < len(plan.ops)


@pytest.mark.parametrize("profile", PROFILES)
def test_shared_groups_get_one_equal_scale(written, plan, amax, profile):
    out = written[profile]
    for group in plan.shared_groups:
        scales = {float(_init(out, q.input[1])) for t in group for q in _quantize_nodes(out, t)}
        assert scales == {np.float32(max(amax[t] for t in group) / 127)}, group
    # a tensor outside any group keeps its own amax
    lone = "/model.9/act/Mul_output_0"
    (q,) = _quantize_nodes(out, lone)
    assert float(_init(out, q.input[1])) == pytest.approx(amax[lone] / 127, rel=1e-6)


def test_tensorrt_shares_one_pair_cpu_gives_each_consumer_its_own(written):
    shared = "/model.1/act/Mul_output_0"  # read by convs 2 and 3
    assert len(_quantize_nodes(written["tensorrt"], shared)) == 1
    assert len(_quantize_nodes(written["cpu"], shared)) == 2
    conv_out = "/model.1/conv/Conv_output_0"  # read by the SiLU's Sigmoid and Mul
    assert len(_quantize_nodes(written["tensorrt"], conv_out)) == 0
    assert len(_quantize_nodes(written["cpu"], conv_out)) == 1


def _weight_dq(model: onnx.ModelProto, weight: str) -> onnx.NodeProto:
    (dq,) = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
             and n.output[0] == weight]
    return dq


def test_zero_points_per_profile(written, plan):
    gates = {g.tensor for g in plan.gates}
    expected = {"tensorrt": (np.int8, 0), "cpu": (np.uint8, 128)}
    for profile, (dtype, zero) in expected.items():
        out = written[profile]
        for op in plan.ops:  # weight: per-channel int8 zeros on the output axis
            dq = _weight_dq(out, op.weight)
            zp = _init(out, dq.input[2])
            assert zp.dtype == np.int8 and not zp.any() and dq.attribute[0].i == 0
            assert zp.shape == (_init(out, dq.input[0]).shape[0],)
        for q in (n for n in out.graph.node if n.op_type == "QuantizeLinear"):
            zp = _init(out, q.input[2])
            if q.input[0] in gates:  # sigmoid: [0, 1] in u8
                assert (zp.dtype, int(zp)) == (np.uint8, 0)
                assert float(_init(out, q.input[1])) == np.float32(1 / 255)
            else:
                assert (zp.dtype, int(zp)) == (dtype, zero), q.input[0]


def test_weight_scales_are_per_channel_and_guard_zero_channels():
    w = np.zeros((3, 2, 1, 1), np.float32)
    w[0] = 2.54
    w[2, 1] = -1.27
    np.testing.assert_allclose(weight_scales(w, 0), [0.02, 1 / 127, 0.01], rtol=1e-6)
    np.testing.assert_allclose(weight_scales(w.transpose(1, 0, 2, 3), 1), [0.02, 1 / 127, 0.01])


def test_quantized_weights_round_trip_within_half_a_step(written, model, plan):
    out = written["tensorrt"]
    op = plan.ops[3]
    dq = _weight_dq(out, op.weight)
    w, codes, scale = _init(model, op.weight), _init(out, dq.input[0]), _init(out, dq.input[1])
    assert codes.dtype == np.int8 and codes.shape == w.shape and scale.shape == (w.shape[0],)
    fake = codes.astype(np.float32) * scale[:, None, None, None]
    assert np.all(np.abs(fake - w) <= scale[:, None, None, None] / 2 + 1e-7)
    assert np.abs(w).reshape(w.shape[0], -1).max(1) == pytest.approx(scale * 127, rel=1e-6)
    assert np.abs(codes).reshape(w.shape[0], -1).max(1).tolist() == [127] * w.shape[0]


@pytest.mark.parametrize("profile", PROFILES)
def test_weights_are_int8_and_no_float_weight_is_left(written, model, plan, profile):
    out = written[profile]
    inits = {t.name: t for t in out.graph.initializer}
    assert not {op.weight for op in plan.ops} & set(inits)  # the float weights are gone
    assert not [n for n in out.graph.node if n.op_type == "QuantizeLinear"
                and n.input[0].endswith("weight")]
    quantized = [t for t in inits.values() if t.name.endswith("_quantized")]
    assert len(quantized) == len(plan.ops)
    assert {t.data_type for t in quantized} == {onnx.TensorProto.INT8}
    # the weights take one byte each: the file is smaller than FP32 (measured 0.70 and 0.98
    # on this toy, whose weights are few of its bytes and whose cpu profile adds ~150 Q/DQ
    # nodes; see the README for the embedded default)
    ratio = len(out.SerializeToString()) / len(model.SerializeToString())
    print(f"{profile}: Q/DQ file / FP32 file = {ratio:.3f}")
    assert ratio < {"tensorrt": 0.8, "cpu": 1.0}[profile]
    weight_bytes = sum(len(t.raw_data) for t in quantized)
    float_bytes = sum(_init(model, op.weight).nbytes for op in plan.ops)
    assert weight_bytes * 4 == float_bytes


def test_codes_are_what_onnxruntime_quantizelinear_computes(model, plan):
    # The int8 codes must be exactly what ONNX Runtime folded from the old float form.
    for op in plan.ops:
        w = _init(model, op.weight)
        codes, scales = quantize_weight(w, op.weight_axis)
        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("QuantizeLinear", ["w", "s", "z"], ["q"], axis=0)], "q",
            [onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, w.shape)],
            [onnx.helper.make_tensor_value_info("q", onnx.TensorProto.INT8, w.shape)],
            [numpy_helper.from_array(scales, "s"),
             numpy_helper.from_array(np.zeros(scales.shape, np.int8), "z")])
        q = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
        np.testing.assert_array_equal(_session(q).run(None, {"w": w})[0], codes)


@pytest.mark.parametrize("profile", PROFILES)
def test_float_weight_form_gives_the_same_outputs(model, plan, amax, written, profile):
    old = write_qdq(model, plan, amax, profile=profile, weights="float")
    assert len(_quantize_nodes(old, plan.ops[0].weight)) == 1
    assert quantized_tensor_set(old) == quantized_tensor_set(written[profile])
    images = np.random.default_rng(3).random((2, 3, 32, 32), dtype=np.float32)
    new_out = _session(written[profile]).run(None, {"images": images})[0]
    np.testing.assert_array_equal(_session(old).run(None, {"images": images})[0], new_out)
    assert len(written[profile].SerializeToString()) < 0.9 * len(old.SerializeToString())


def _conv_model(shared_reader: bool, constant_node: bool) -> onnx.ModelProto:
    h = onnx.helper
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes, inits = [], []
    if constant_node:
        nodes.append(h.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w)))
    else:
        inits.append(numpy_helper.from_array(w, "w"))
    nodes += [h.make_node("Conv", ["x", "w"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
              h.make_node("Relu", ["c0"], ["r0"], name="relu0"),
              h.make_node("Conv", ["x", "w"], ["c1"], name="conv1", pads=[1, 1, 1, 1])]
    outputs = [("r0", [1, 4, 8, 8]), ("c1", [1, 4, 8, 8])]
    if shared_reader:  # something else reads the float weight too
        nodes.append(h.make_node("ReduceMax", ["w"], ["wmax"], name="wmax", keepdims=0))
        outputs.append(("wmax", []))
    graph = h.make_graph(
        nodes, "two_convs", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [h.make_tensor_value_info(o, onnx.TensorProto.FLOAT, d) for o, d in outputs], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])


@pytest.mark.parametrize("constant_node", [False, True])
@pytest.mark.parametrize("shared_reader", [False, True])
def test_shared_and_constant_node_weights(shared_reader, constant_node):
    model = _conv_model(shared_reader, constant_node)
    from bench.quant.placement import GraphIndex, QuantizedOp, QuantPlan
    ops = tuple(QuantizedOp(n, f"c{i}", "Conv", "x", "w", 0, f"c{i}")
                for i, n in enumerate(("conv0", "conv1")))
    plan = QuantPlan(ops, (), (), (), (), ())
    x = np.random.default_rng(1).random((1, 3, 8, 8), dtype=np.float32)
    out = write_qdq(model, plan, {})
    onnx.checker.check_model(out, full_check=True)
    assert _is_topological(out)
    index = GraphIndex(out.graph)
    dqs = [n for n in out.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dqs) == 1 and {index.producer[n.input[1]].name for n in out.graph.node
                              if n.op_type == "Conv"} == {dqs[0].name}
    # the float weight survives only when a float reader still needs it
    assert index.is_constant("w") == shared_reader
    ref = _session(write_qdq(model, plan, {}, weights="float")).run(None, {"x": x})
    for a, b in zip(ref, _session(out).run(None, {"x": x})):
        np.testing.assert_array_equal(a, b)


def test_unknown_weight_format_is_a_config_error(model, plan, amax):
    with pytest.raises(ConfigError, match="'int4'.*int8, float"):
        write_qdq(model, plan, amax, weights="int4")


def test_missing_or_bad_amax_is_a_model_error_naming_the_tensor(model, plan, amax):
    partial = dict(amax)
    del partial["/model.5/Concat_output_0"]
    with pytest.raises(ModelError, match="/model.5/Concat_output_0"):
        write_qdq(model, plan, partial)
    with pytest.raises(ModelError, match="nan"):
        write_qdq(model, plan, amax | {"/model.9/act/Mul_output_0": float("nan")})
    # conv outputs only matter to the cpu profile
    trt_only = {t: amax[t] for t in plan.tensors_for("tensorrt")}
    write_qdq(model, plan, trt_only, profile="tensorrt")
    with pytest.raises(ModelError, match="/model.1/conv/Conv_output_0"):
        write_qdq(model, plan, trt_only, profile="cpu")


def test_unknown_profile_is_a_config_error(model, plan, amax):
    with pytest.raises(ConfigError, match="'gpu'.*tensorrt, cpu"):
        write_qdq(model, plan, amax, profile="gpu")


def test_plan_of_another_model_is_a_model_error(model, amax):
    other = build_yolo_like()
    other.graph.node[3].input[0] = "images"  # conv 1 now reads another tensor
    with pytest.raises(ModelError, match="/model.1/conv/Conv"):
        write_qdq(other, plan_quantization(model), amax)


@pytest.mark.parametrize("profile", PROFILES)
def test_quantized_tensor_set_reads_back_the_plan(written, plan, profile):
    weights = {op.weight for op in plan.ops}
    assert quantized_tensor_set(written[profile]) == set(plan.tensors_for(profile)) | weights
    acts = quantized_tensor_set(written[profile], activations_only=True)
    assert acts == set(plan.tensors_for(profile))


def test_keeping_no_head_float_adds_qdq_to_the_head_convs(model, amax, images):
    plan = plan_quantization(model, keep_float=KeepFloat(head=False))
    amax = _max_calibration(model, plan.activation_tensors, images)
    out = write_qdq(model, plan, amax)
    heads = {"model.105/m.0.weight", "model.105/m.1.weight"}
    assert heads <= quantized_tensor_set(out)
    assert not heads & quantized_tensor_set(write_qdq(model, plan_quantization(model), amax))
    assert set(HEAD_CONVS) <= set(plan.quantized_nodes)


def test_opset_12_model_is_converted_to_13(images):
    old = build_yolo_like(opset=12)
    plan = plan_quantization(old)
    out = write_qdq(old, plan, _max_calibration(old, plan.activation_tensors, images))
    assert out.opset_import[0].version == 13
    assert _session(out).run(None, {"images": images})[0].shape == (3, 640, 8)


def test_speed_script_runs_on_a_small_model(model, tmp_path):
    path = tmp_path / "yolo_like.onnx"
    onnx.save(model, str(path))
    args = [str(path), "--runs", "2", "--warmup", "1", "--threads", "1", "--calib", "1"]
    script = REPO / "scripts" / "bench_qdq_speed.py"
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[2:]}
    assert set(rows) >= {"fp32", "qdq-tensorrt", "qdq-cpu"}
    assert rows["qdq-cpu"][5] == "17"  # fused convs
