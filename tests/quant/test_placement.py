"""Q/DQ placement on the mini YOLO-like graph (tests/quant/yolo_like.py) and small graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from yolo_like import BODY_CONVS, FIRST_CONV, HEAD_CONVS

from bench.errors import ConfigError, ModelError
from bench.quant.placement import KeepFloat, QuantPlan, plan_quantization
from bench.quant.qdq import write_qdq

DECODE_PREFIXES = ("/model.105/d3/", "/model.105/d4/", "/model.105/im.1/", "/model.105/Concat")


def _group_with(plan: QuantPlan, tensor: str) -> set[str]:
    return next(set(g) for g in plan.shared_groups if tensor in g)


def _site(plan: QuantPlan, tensor: str):
    return next(s for s in plan.sites if s.tensor == tensor)


def test_default_plan_quantizes_every_body_conv(plan):
    assert set(plan.quantized_nodes) == set(BODY_CONVS)
    assert plan.first_convs == (FIRST_CONV,)
    assert plan.head_convs == HEAD_CONVS
    assert all(op.weight_axis == 0 and op.op_type == "Conv" for op in plan.ops)


def test_first_conv_head_and_decode_stay_float(model, plan):
    decode = [n.name for n in model.graph.node if n.name.startswith(DECODE_PREFIXES)]
    assert len(decode) == 36  # 15 + 19 (Shape-built reshape) + ImplicitM + Concat
    assert set(plan.kept_float) == {FIRST_CONV, *HEAD_CONVS, *decode}
    readers = {key for s in plan.sites + plan.gates for key, _ in s.consumers + s.cpu_consumers}
    by_key = {n.output[0]: n.name for n in model.graph.node}
    assert not {by_key[k] for k in readers} & set(plan.kept_float)
    assert "images" not in plan.activation_tensors


def test_concat_inputs_and_output_share_one_group(plan):
    assert _group_with(plan, "/model.5/Concat_output_0") == {
        "/model.2/act/LeakyRelu_output_0",
        "/model.3/act/LeakyRelu_output_0",
        "/model.4/act/Mul_output_0",
        "/model.5/Concat_output_0",
    }
    # onnx::-style names from older exports work the same
    assert _group_with(plan, "onnx::Conv_123") == {
        "/model.8/act/Mul_output_0",
        "/model.10/act/Mul_output_0",
        "onnx::Conv_123",
    }


def test_maxpool_input_and_output_share_one_group(plan):
    assert _group_with(plan, "/model.8/m/MaxPool_output_0") == {
        "/model.7/act/Mul_output_0",
        "/model.8/m/MaxPool_output_0",
    }
    # SPP: the pool's input is also a Concat input, so pool and Concat merge into one group
    assert _group_with(plan, "/model.12/m/MaxPool_output_0") == {
        "/model.11/act/Mul_output_0",
        "/model.12/m/MaxPool_output_0",
        "/model.12/Concat_output_0",
    }


def test_resize_joins_the_concat_it_feeds(plan):
    assert _group_with(plan, "/model.13/up/Resize_output_0") == {
        "/model.13/act/Mul_output_0",
        "/model.13/up/Resize_output_0",
        "/model.14/act/Mul_output_0",
        "/model.15/Concat_output_0",
    }


def test_residual_add_gets_qdq_on_both_inputs_with_one_scale(plan):
    add = "/model.7/Add_output_0"
    assert _group_with(plan, "/model.5/act/Mul_output_0") == {
        "/model.5/act/Mul_output_0",
        "/model.6/act/Mul_output_0",
    }
    assert (add, 0) in _site(plan, "/model.5/act/Mul_output_0").consumers
    assert _site(plan, "/model.6/act/Mul_output_0").consumers == ((add, 1),)
    assert _site(plan, add).consumers == (("/model.7/conv/Conv_output_0", 0),)


def test_tensor_with_several_consumers_is_one_site(plan):
    p3 = _site(plan, "/model.7/act/Mul_output_0")
    assert set(p3.consumers) == {
        ("/model.8/m/MaxPool_output_0", 0),
        ("/model.9/conv/Conv_output_0", 0),
        ("/model.14/conv/Conv_output_0", 0),
    }
    assert plan.activation_tensors.count("/model.7/act/Mul_output_0") == 1


def test_only_the_cpu_profile_quantizes_conv_outputs_and_silu_gates(plan):
    conv_out = _site(plan, "/model.1/conv/Conv_output_0")
    assert conv_out.consumers == ()
    assert set(conv_out.cpu_consumers) == {
        ("/model.1/act/Sigmoid_output_0", 0),
        ("/model.1/act/Mul_output_0", 0),
    }
    assert "/model.1/conv/Conv_output_0" not in plan.tensors_for("tensorrt")
    assert "/model.1/act/Sigmoid_output_0" in plan.tensors_for("cpu")
    assert "/model.1/act/Sigmoid_output_0" not in plan.activation_tensors  # fixed [0, 1]
    assert len(plan.gates) == 15  # SiLU convs among the 17 (two use LeakyRelu)


def test_no_decode_or_shape_tensor_is_quantized(plan):
    quantized = set(plan.tensors_for("cpu"))
    assert not any(t.startswith(DECODE_PREFIXES) for t in quantized)
    assert "output" not in quantized
    # the head convs' inputs feed float convs only
    assert "/model.102/act/Mul_output_0" not in quantized
    assert "/model.105/ia.1/Add_output_0" not in quantized


def test_keeping_no_head_float_quantizes_the_head_convs(model):
    plan = plan_quantization(model, keep_float=KeepFloat(head=False))
    assert set(plan.quantized_nodes) == set(BODY_CONVS) | set(HEAD_CONVS)
    assert "/model.102/act/Mul_output_0" in plan.activation_tensors
    assert "/model.105/ia.1/Add_output_0" in plan.activation_tensors  # ImplicitA before conv
    # the decode stays float: no Q on the head conv outputs, even in the cpu profile
    assert "/model.105/m.0/Conv_output_0" not in plan.tensors_for("cpu")


def test_decode_flag_guards_the_head_outputs(model):
    plan = plan_quantization(model, keep_float=KeepFloat(head=False, decode=False))
    assert "/model.105/m.0/Conv_output_0" in plan.tensors_for("cpu")
    assert not [n for n in plan.kept_float if n.startswith(DECODE_PREFIXES)]


def test_first_conv_flag_puts_qdq_on_the_image(model):
    plan = plan_quantization(model, keep_float=KeepFloat(first_conv=False))
    assert FIRST_CONV in plan.quantized_nodes
    assert plan.activation_tensors[0] == "images"


def test_glob_patterns_keep_nodes_float_and_drop_their_groups(model):
    plan = plan_quantization(model, keep_float=KeepFloat(nodes=("/model.1[345]/*",)))
    float_convs = {f"/model.{i}/conv/Conv" for i in (13, 14, 15)}
    assert set(plan.quantized_nodes) == set(BODY_CONVS) - float_convs
    # the FPN Concat now feeds a float conv, so it and the Resize get no Q/DQ
    assert not {"/model.15/Concat_output_0", "/model.13/up/Resize_output_0"} & set(
        plan.activation_tensors
    )
    exact = plan_quantization(model, keep_float=KeepFloat(nodes=("/model.5/Concat",)))
    assert "/model.5/Concat_output_0" in exact.activation_tensors  # conv 5 still reads it
    assert not any("/model.5/Concat_output_0" in g for g in exact.shared_groups)


def test_pattern_matching_nothing_is_a_config_error(model):
    with pytest.raises(ConfigError, match="/model.999/"):
        plan_quantization(model, keep_float=KeepFloat(nodes=("/model.999/*",)))
    with pytest.raises(ConfigError, match="KeepFloat.nodes"):
        KeepFloat(nodes="/model.1/*")
    assert KeepFloat(nodes=["/model.1/*"]).nodes == ("/model.1/*",)


def test_nameless_nodes_are_planned_by_their_outputs(model, plan):
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    for node in bare.graph.node:
        node.name = ""
    again = plan_quantization(bare)
    assert [op.key for op in again.ops] == [op.key for op in plan.ops]
    assert again.shared_groups == plan.shared_groups
    assert again.quantized_nodes[0] == "/model.1/conv/Conv_output_0"


def test_model_with_qdq_or_without_convs_is_a_model_error(model, plan):
    written = write_qdq(model, plan, dict.fromkeys(plan.activation_tensors, 1.0))
    with pytest.raises(ModelError, match="already has Q/DQ"):
        plan_quantization(written)
    with pytest.raises(ModelError, match="nothing|no Conv/Gemm"):
        plan_quantization(model, keep_float=KeepFloat(nodes=("*Conv",)))


def _small(nodes, inits, inputs) -> onnx.ModelProto:
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "small", inputs, out, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_weight_axis_is_the_output_channel_for_gemm_and_conv_transpose():
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "wc"),
        numpy_helper.from_array(rng.normal(size=(2, 3, 2, 2)).astype(np.float32), "wt"),
        numpy_helper.from_array(rng.normal(size=(192, 5)).astype(np.float32), "wg"),
        numpy_helper.from_array(rng.normal(size=(3, 5)).astype(np.float32), "wh"),
        numpy_helper.from_array(np.array([1, 192], np.int64), "shape"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    nodes = [
        helper.make_node("Conv", ["x", "wc"], ["a"], name="c0", pads=[1] * 4),
        helper.make_node("Conv", ["a", "wc2"], ["b"], name="c1", pads=[1] * 4),
        helper.make_node("ConvTranspose", ["b", "wt"], ["t"], name="ct", strides=[2, 2]),
        helper.make_node("Reshape", ["t", "shape"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wg"], ["g"], name="gemm"),
        helper.make_node("Gemm", ["g", "wh"], ["y"], name="head", transB=1),
    ]
    wc2 = rng.normal(size=(2, 4, 3, 3)).astype(np.float32)
    nodes.insert(0, helper.make_node("Constant", [], ["wc2"], value=numpy_helper.from_array(wc2)))
    plan = plan_quantization(_small(nodes, inits, [x]))
    axes = {op.name: op.weight_axis for op in plan.ops}
    assert axes == {"c1": 0, "ct": 1, "gemm": 1}  # c0 first, head last: kept float
    assert plan.head_convs == ("head",)
