import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.errors import ModelError
from bench.quant.fp16 import convert_to_fp16

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
RNG = np.random.default_rng(0)


def _init(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _detector_like(input_type=FLOAT):
    """Conv-SiLU-MaxPool-Resize(scales)-Concat-Conv, a float chain computed from a Shape,
    a constant shared by an FP16 node and that FP32 chain, Reshape; two graph outputs, one
    of which ("act") also feeds later nodes."""
    first = "x" if input_type == FLOAT else "x_float"
    nodes = [
        helper.make_node("Conv", [first, "w1", "b1"], ["conv1"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["conv1"], ["gate"]),
        helper.make_node("Mul", ["conv1", "gate"], ["act"]),
        helper.make_node("MaxPool", ["act"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Constant", [], ["scales"], value=_init("s", [1, 1, 2, 2])),
        helper.make_node("Resize", ["pooled", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Concat", ["act", "up"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w2"], ["conv2"]),
        helper.make_node("Shape", ["conv2"], ["shape"]),
        helper.make_node("Gather", ["shape", "two"], ["height"], axis=0),
        helper.make_node("Cast", ["height"], ["height_f"], to=FLOAT),
        helper.make_node("Mul", ["height_f", "half"], ["ratio"]),  # 0.5 * 16 = 8
        helper.make_node("Mul", ["conv2", "ratio"], ["scaled"]),
        helper.make_node("Add", ["scaled", "half"], ["shifted"]),
        helper.make_node("Reshape", ["shifted", "flat"], ["y"]),
    ]
    if input_type != FLOAT:  # e.g. a uint8 image, normalised inside the model
        nodes[:0] = [
            helper.make_node("Cast", ["x"], ["x_cast"], to=FLOAT),
            helper.make_node("Div", ["x_cast", "k255"], ["x_float"]),
        ]
    initializers = [
        _init("w1", RNG.standard_normal((8, 3, 3, 3)) * 0.3),
        _init("b1", RNG.standard_normal(8) * 0.1),
        _init("w2", RNG.standard_normal((4, 16, 1, 1)) * 0.2),
        _init("two", 2, np.int64),
        _init("half", 0.5),
        _init("k255", 255.0),
        _init("flat", [1, 4, -1], np.int64),
    ]
    inputs = [helper.make_tensor_value_info("x", input_type, [1, 3, 16, 16])]
    outputs = [
        helper.make_tensor_value_info("y", FLOAT, [1, 4, 256]),
        helper.make_tensor_value_info("act", FLOAT, [1, 8, 16, 16]),
    ]
    return _model(helper.make_graph(nodes, "det", inputs, outputs, initializers))


def _model(graph, opset=17):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _run(model, x):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {session.get_inputs()[0].name: x})


def _assert_close_to_fp32(fp32_outputs, fp16_outputs):
    for ref, got in zip(fp32_outputs, fp16_outputs, strict=True):
        assert got.shape == ref.shape
        np.testing.assert_allclose(
            got.astype(np.float32), ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max()
        )


def _initializer_types(model):
    return {t.name: t.data_type for t in model.graph.initializer}


def _x():
    return RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)


def test_runs_in_onnxruntime_with_float32_io_and_matches_fp32():
    model = _detector_like()
    original = model.SerializeToString()
    converted = convert_to_fp16(model)
    assert model.SerializeToString() == original  # the input model is left alone
    x = _x()
    fp16_outputs = _run(converted, x)
    assert [o.dtype for o in fp16_outputs] == [np.float32, np.float32]
    _assert_close_to_fp32(_run(model, x), fp16_outputs)
    assert [i.name for i in converted.graph.input] == ["x"]
    assert [o.name for o in converted.graph.output] == ["y", "act"]
    assert {o.type.tensor_type.elem_type for o in converted.graph.output} == {FLOAT}


def test_weights_become_float16_and_index_tensors_are_untouched():
    types = _initializer_types(convert_to_fp16(_detector_like()))
    assert types["w1"] == types["b1"] == types["w2"] == HALF
    assert types["two"] == types["flat"] == TensorProto.INT64


def test_computed_activations_are_float16_in_value_info():
    converted = convert_to_fp16(_detector_like())
    types = {v.name: v.type.tensor_type.elem_type for v in converted.graph.value_info}
    assert types["conv1"] == types["gate"] == types["pooled"] == types["cat"] == HALF
    assert types["up"] == types["conv2"] == types["shifted"] == HALF


def test_resize_scales_and_shape_arithmetic_stay_float32():
    converted = convert_to_fp16(_detector_like())
    nodes = {n.output[0]: n for n in converted.graph.node}
    scales = nodes["scales"].attribute[0].t
    assert scales.data_type == FLOAT
    assert nodes["up"].input[2] == "scales"
    assert nodes["height_f"].attribute[0].i == FLOAT  # the Cast of a shape stays float32
    # the FP32 chain reads a float32 copy of the constant it shares with an FP16 node
    assert _initializer_types(converted)[nodes["ratio"].input[1]] == FLOAT
    # ... and the FP16 Mul reads the ratio through a Cast to float16.
    ratio_for_mul = nodes["scaled"].input[1]
    assert nodes[ratio_for_mul].op_type == "Cast" and nodes[ratio_for_mul].input[0] == "ratio"


def test_a_constant_shared_by_fp16_and_fp32_nodes_gets_one_copy_of_each_type():
    converted = convert_to_fp16(_detector_like())
    types = _initializer_types(converted)
    nodes = {n.output[0]: n for n in converted.graph.node}
    assert nodes["shifted"].input[1] == "half" and types["half"] == HALF
    assert nodes["ratio"].input[1] == "half_fp32" and types["half_fp32"] == FLOAT
    assert numpy_helper.to_array(converted.graph.initializer[-1]).tolist() == 0.5


def test_graph_outputs_are_cast_back_without_renaming():
    converted = convert_to_fp16(_detector_like())
    producers = {out: n for n in converted.graph.node for out in n.output}
    for name in ("y", "act"):
        cast = producers[name]
        assert cast.op_type == "Cast" and cast.attribute[0].i == FLOAT
    # "act" also feeds the Concat and MaxPool, which read the float16 tensor.
    act16 = producers["act"].input[0]
    consumers = [n.op_type for n in converted.graph.node if act16 in n.input]
    assert sorted(consumers) == ["Cast", "Concat", "MaxPool"]


def test_keep_io_float32_false_gives_float16_inputs_and_outputs():
    model = _detector_like()
    converted = convert_to_fp16(model, keep_io_float32=False)
    assert converted.graph.input[0].type.tensor_type.elem_type == HALF
    assert {o.type.tensor_type.elem_type for o in converted.graph.output} == {HALF}
    x = _x()
    fp16_outputs = _run(converted, x.astype(np.float16))
    assert [o.dtype for o in fp16_outputs] == [np.float16, np.float16]
    _assert_close_to_fp32(_run(model, x), fp16_outputs)


def test_uint8_input_cast_to_float_becomes_a_cast_to_float16():
    model = _detector_like(input_type=TensorProto.UINT8)
    converted = convert_to_fp16(model)
    nodes = {n.output[0]: n for n in converted.graph.node}
    assert nodes["x_cast"].attribute[0].i == HALF
    x = RNG.integers(0, 256, size=(1, 3, 16, 16), dtype=np.uint8)
    _assert_close_to_fp32(_run(model, x), _run(converted, x))


def test_block_ops_run_in_float32_between_casts():
    model = _detector_like()
    converted = convert_to_fp16(model, block_ops={"Sigmoid"})
    nodes = {n.output[0]: n for n in converted.graph.node}
    cast_in = nodes[nodes["gate"].input[0]]
    assert cast_in.op_type == "Cast" and cast_in.attribute[0].i == FLOAT
    cast_out = nodes[nodes["act"].input[0]].input[1]  # Mul(conv1, gate as float16)
    assert nodes[cast_out].op_type == "Cast" and nodes[cast_out].input[0] == "gate"
    x = _x()
    _assert_close_to_fp32(_run(model, x), _run(converted, x))


def test_weights_beyond_the_float16_range_are_clipped_not_infinite():
    nodes = [helper.make_node("Mul", ["x", "big"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", FLOAT, [2])],
        [helper.make_tensor_value_info("y", FLOAT, [2])],
        [_init("big", [1e6, -3.0])],
    )
    converted = convert_to_fp16(_model(graph))
    big = numpy_helper.to_array(converted.graph.initializer[0])
    assert big.dtype == np.float16 and big.tolist() == [65504.0, -3.0]


def test_constant_value_floats_and_a_float_roi_given_to_resize():
    nodes = [
        helper.make_node("Constant", [], ["roi"], value=_init("r", np.zeros(0))),
        helper.make_node("Constant", [], ["scales"], value_floats=[1.0, 1.0, 2.0, 2.0]),
        helper.make_node("Constant", [], ["gain"], value_float=1.5),
        helper.make_node("Resize", ["x", "roi", "scales"], ["up"], mode="nearest"),
        helper.make_node("Mul", ["up", "gain"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "resize11",
        [helper.make_tensor_value_info("x", FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", FLOAT, [1, 2, 8, 8])],
    )
    model = _model(graph, opset=13)
    converted = convert_to_fp16(model)
    constants = {
        n.output[0]: n.attribute[0] for n in converted.graph.node if n.op_type == "Constant"
    }
    assert constants["gain"].t.data_type == HALF
    assert constants["roi"].t.data_type == FLOAT
    assert constants["scales"].name == "value_floats"  # untouched
    x = RNG.standard_normal((1, 2, 4, 4)).astype(np.float32)
    _assert_close_to_fp32(_run(model, x), _run(converted, x))


def test_a_model_with_a_subgraph_is_a_model_error():
    then_graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", FLOAT, [1])],
    )
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=then_graph)]
    graph = helper.make_graph(
        nodes,
        "branchy",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("y", FLOAT, [1])],
    )
    with pytest.raises(ModelError, match="If.*subgraph"):
        convert_to_fp16(_model(graph))


def _optimised_ops(model, tmp_path):
    """Op counts of ONNX Runtime's CPU-optimised graph of model (default level)."""
    from collections import Counter

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def test_the_onnxruntime_cpu_artifact_keeps_leaky_relu_float32_and_unexpanded(tmp_path):
    """The default's graph (opset 17): converted as for ORT's CPU provider, LeakyRelu runs
    in FP32 between Casts, so ORT does not expand it into Less/Where/Mul (it has no float16
    kernel for it), and the outputs are those of the all-half conversion to FP16 rounding."""
    from bench.models.default import default_model_path
    from bench.quant.fp16 import DEFAULT_BLOCK_OPS, ORT_CPU_BLOCK_OPS, block_ops_for

    assert block_ops_for("onnxruntime", "cpu") == ORT_CPU_BLOCK_OPS
    assert block_ops_for("onnxruntime", "cuda") == DEFAULT_BLOCK_OPS
    assert block_ops_for("tensorrt", "cuda") == DEFAULT_BLOCK_OPS
    model = onnx.load(str(default_model_path()))
    leaky = sum(n.op_type == "LeakyRelu" for n in model.graph.node)
    assert leaky > 0
    cpu = convert_to_fp16(model, block_ops=ORT_CPU_BLOCK_OPS)
    half = convert_to_fp16(model)
    kept = [n for n in cpu.graph.node if n.op_type == "LeakyRelu"]
    assert len(kept) == leaky
    producers = {o: n for n in cpu.graph.node for o in n.output}
    for node in kept:  # fed float32 by a Cast; every Conv stays half
        assert producers[node.input[0]].op_type == "Cast"
        assert producers[node.input[0]].attribute[0].i == FLOAT
    weights = {t.name: t.data_type for t in cpu.graph.initializer}
    convs = [n for n in cpu.graph.node if n.op_type == "Conv"]
    assert convs and all(weights[n.input[1]] == HALF for n in convs)
    assert _optimised_ops(cpu, tmp_path)["Where"] == 0
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    x = np.random.default_rng(3).random((1, 3, size, size), dtype=np.float32)
    got, want = _run(cpu, x)[0], _run(half, x)[0]
    assert np.abs(got - want).mean() < 0.2 * np.abs(_run(model, x)[0] - want).mean() + 1e-3
