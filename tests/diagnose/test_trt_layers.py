"""The TensorRT engine inspector's JSON and IProfiler times, read and summarised (no
TensorRT needed: the JSON here has the shape and values of the engine graph NVIDIA
publishes for a QAT ResNet, trt-engine-explorer's examples, trimmed to a few layers)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from bench.diagnose.trt_layers import (
    NAMES_ONLY,
    parse_engine_information,
    profile_csv,
    profile_summary,
    summarise,
    tensor_dtype,
)
from bench.errors import ModelError

FP32 = "Row major linear FP32"
I8_32 = "Thirty-two wide channel vectorized row major Int8 format"
FP16_32 = "Thirty-two wide channel vectorized row major FP16 format"


def _tensor(name: str, fmt: str, dims=(1, 4, 16, 16)) -> dict:
    return {"Name": name, "Location": "Device", "Dimensions": list(dims), "Format/Datatype": fmt}


def _layer(name, kind, inputs, outputs, **extra) -> dict:
    return {"Name": name, "LayerType": kind,
            "Inputs": [_tensor(f"{name}:in{i}", f) for i, f in enumerate(inputs)],
            "Outputs": [_tensor(f"{name}:out{i}", f) for i, f in enumerate(outputs)], **extra}


def qat_engine() -> dict:
    """As NVIDIA's resnet-qat graph: a Q as a Reformat of Origin QDQ, int8 convs named by
    their fused parts, a REFORMAT copy, a float pooling, an elided NoOp copy."""
    return {"Layers": [
        _layer("QuantizeLinear_2", "Reformat", [FP32], [I8_32], ParameterType="Reformat",
               Origin="QDQ"),
        _layer("conv1.weight + QuantizeLinear_7 + c1", "CaskConvolution", [I8_32], [FP32],
               TacticName="sm80_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32_f32"),
        _layer("MaxPool_12", "TiledPooling", [FP32], [FP32]),
        _layer("Reformatting CopyNode for Output Tensor 0 to MaxPool_12", "Reformat", [FP32],
               [FP16_32], Origin="REFORMAT"),
        _layer("fused_conv", "CaskConvolution", [I8_32, FP16_32], [FP16_32],
               Metadata="[ONNX Layer: QuantizeLinear_20]\x1f[ONNX Layer: node_of_y2]"
                        "\x1e[ONNX Layer: Add_36]"),
        _layer("Reformatting CopyNode for Input Tensor 0 to c3", "NoOp", [FP16_32], [FP32]),
        _layer("c3", "CaskConvolution", [FP32], [FP32]),
    ], "Bindings": ["input.1", "y3"]}


def three_convs() -> onnx.ModelProto:
    """c1 (named), an unnamed conv writing y2, c3 (named): 4 -> 4 channels, 3x3, 16x16."""
    w = numpy_helper.from_array(np.ones((4, 4, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["y1", "w"], ["y2"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["y2", "w"], ["y3"], name="c3", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        nodes, "three", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                       ["n", 4, 16, 16])],
        [helper.make_tensor_value_info("y3", onnx.TensorProto.FLOAT, None)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


FLOPS = 2 * 4 * 16 * 16 * 4 * 9  # each conv at batch 1


@pytest.mark.parametrize("text, dtype", [
    (FP32, "FP32"), (I8_32, "INT8"), ("Channel major FP16 format where channel % 8 == 0", "FP16"),
    ("Half", "FP16"), ("Float", "FP32"), ("Int8", "INT8"), ("Row major linear UInt8 format",
                                                            "UINT8"),
    ("Row major linear BFloat16 format", "BF16"), ("Row major linear Int32", "INT32"),
    ("Row major linear BOOL", "BOOL"), ("Unknown format", "?"), ("FloatComplex", "?")])
def test_tensor_dtype_reads_the_format_text(text, dtype):
    assert tensor_dtype({"Format/Datatype": text}) == dtype


def test_tensor_dtype_prefers_the_split_fields_of_11():
    assert tensor_dtype({"Format": "Row major linear FP32 format (kLINEAR)",
                         "DataType": "Half"}) == "FP16"
    assert tensor_dtype({"Format": FP32}) == "FP32"  # no data type field: the format's
    assert tensor_dtype({"Name": "x"}) == "?" and tensor_dtype("x") == "?"


def test_parse_detailed_layers():
    layers = parse_engine_information(json.dumps(qat_engine()))
    assert [layer.precision for layer in layers] == [
        "qdq", "int8", "float", "reformat", "int8", "float", "float"]
    assert layers[4].inputs == ("INT8", "FP16") and layers[4].outputs == ("FP16",)
    assert layers[4].onnx_nodes == ("QuantizeLinear_20", "node_of_y2", "Add_36")  # Metadata
    assert layers[1].onnx_nodes == ("conv1.weight", "QuantizeLinear_7", "c1")  # name parts
    assert layers[1].tactic.endswith("i8i8_i8i32_f32") and layers[0].origin == "QDQ"


def test_summarise_maps_convs_and_times():
    runs = 3
    times = {"QuantizeLinear_2": [0.02, 0.02, 0.5],  # a median is not moved by one outlier
             "conv1.weight + QuantizeLinear_7 + c1": [0.3, 0.2, 0.25],
             "MaxPool_12": [0.05] * runs,
             "Reformatting CopyNode for Output Tensor 0 to MaxPool_12": [0.03] * runs,
             "fused_conv": [0.1] * runs, "c3": [0.4] * runs,
             "myelin_graph": [0.06]}  # the profiler's name only, in one run
    profile = summarise(three_convs(), json.dumps(qat_engine()), times, runs, (1, 4, 16, 16),
                        label="resnet-qat")
    assert profile.detailed and profile.conv_flops == 3 * FLOPS
    assert profile.int8_pct == pytest.approx(200 / 3)  # c1 and the unnamed conv
    assert profile.unmatched_convs == () and profile.untimed == (
        "Reformatting CopyNode for Input Tensor 0 to c3",)
    by_name = {row.name: row for row in profile.layers}
    assert by_name["conv1.weight + QuantizeLinear_7 + c1"].time_us == pytest.approx(250)
    assert by_name["QuantizeLinear_2"].time_us == pytest.approx(20)
    assert by_name["fused_conv"].convs == ("y2",) and by_name["c3"].convs == ("c3",)
    assert by_name["myelin_graph"].precision == "unknown"
    assert by_name["myelin_graph"].time_us == pytest.approx(20)  # 0.06 ms over 3 runs
    assert profile.layers[0].name == "c3" and len(profile.slowest) == 8
    assert profile.reformat_layers == 2 and profile.layer_counts["qdq"] == 1
    total = 20 + 250 + 50 + 30 + 100 + 400 + 20
    assert profile.total_us == pytest.approx(total)
    assert profile.time_pct["int8"] == pytest.approx(100 * 350 / total)
    assert profile.time_pct["float"] == pytest.approx(100 * 450 / total)
    assert profile.summary().splitlines()[0] == (
        f"66.7 % of conv FLOPs in INT8; INT8 2 of 8 layers, {100 * 350 / total:.1f} % of the "
        f"time; float 3, {100 * 450 / total:.1f} %; reformat 2 (1 from Q/DQ), "
        f"{100 * 50 / total:.1f} % (0.87 ms of layers per run, 3 runs)")
    row = profile_summary(profile, shown=3)
    assert row["int8_pct"] == pytest.approx(66.67, abs=0.01) and row["int8_layers"] == 2
    assert [s["node"] for s in row["slowest"]] == ["c3", "conv1.weight + QuantizeLinear_7 + c1",
                                                    "fused_conv"]
    assert "profile_note" not in row and row["reformat_layers"] == 2
    table = profile_csv(profile).splitlines()
    assert table[0].startswith("name,layer_type,precision,inputs,outputs,time_us,convs")
    assert table[1] == "c3,CaskConvolution,float,FP32,FP32,400.000,c3,73728,,"
    assert len(table) == 1 + 8


def test_a_conv_no_layer_names_is_unmatched():
    engine = {"Layers": [_layer("c1", "CaskConvolution", [I8_32], [FP32])]}
    profile = summarise(three_convs(), json.dumps(engine), {"c1": [0.1]}, 1, (1, 4, 16, 16))
    assert profile.unmatched_convs == ("y2", "c3")
    assert profile.int8_pct == pytest.approx(100 / 3)


def test_layer_names_only_claims_no_precision():
    """ProfilingVerbosity.LAYER_NAMES_ONLY (TensorRT's default): "Layers" lists names."""
    engine = {"Layers": [layer["Name"] for layer in qat_engine()["Layers"]],
              "Bindings": ["input.1", "y3"]}
    times = {name: [0.1] for name in engine["Layers"]}
    profile = summarise(three_convs(), json.dumps(engine), times, 1, (1, 4, 16, 16))
    assert not profile.detailed and profile.int8_pct is None and profile.note == NAMES_ONLY
    assert profile.layer_counts["unknown"] == 7 and profile.reformat_layers == 0
    assert profile.summary().startswith(f"{NAMES_ONLY}; 7 layers (0.70 ms")
    row = profile_summary(profile)
    assert "int8_pct" not in row and "float_time_pct" not in row
    assert row["profile_note"] == NAMES_ONLY and row["unmatched_convs"] == []
    assert {s["precision"] for s in row["slowest"]} == {"unknown"}


def test_tensorrt_11_io_tensors_and_split_fields():
    layer = {"Name": "c1", "LayerType": "CaskConvolution",
             "Inputs": [{"Name": "x", "Format": "Thirty-two wide channel vectorized row "
                                                "major Int8 format", "DataType": "Int8"}],
             "Outputs": [{"Name": "y1", "Format": FP32, "DataType": "Float"}]}
    engine = {"Layers": [layer], "I/O Tensors": [{"Name": "x", "IOMode": "Input",
                                                  "DataType": "Float"}]}
    (parsed,) = parse_engine_information(json.dumps(engine))
    assert parsed.precision == "int8" and parsed.outputs == ("FP32",)


@pytest.mark.parametrize("text, message", [
    ("not json", "is not JSON"),
    ('{"Bindings": []}', 'expected an object with a "Layers" list'),
    ('[1, 2]', 'expected an object with a "Layers" list'),
    ('{"Layers": [{"LayerType": "NoOp"}]}', "layer 0 is"),
])
def test_unreadable_engine_information_is_a_model_error(text, message):
    with pytest.raises(ModelError, match=message):
        parse_engine_information(text)
