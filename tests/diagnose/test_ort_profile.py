"""ONNX Runtime's profiler per node on the mini YOLO-like graph and its Q/DQ files."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from diag_helpers import true_amax
from onnx import helper, numpy_helper

from bench.diagnose.ort_profile import conv_flops, profile_ort, summarise
from bench.quant.qdq import write_qdq


@pytest.fixture(scope="module")
def written(model, plan, images, tmp_path_factory) -> dict[str, Path]:
    amax = true_amax(model, plan.activation_tensors, images)
    folder = tmp_path_factory.mktemp("profiled")
    paths = {}
    for profile in ("tensorrt", "cpu"):
        paths[profile] = folder / f"{profile}.onnx"
        onnx.save(write_qdq(model, plan, amax, profile=profile), str(paths[profile]))
    return paths


def _one_conv(group: int = 1) -> onnx.ModelProto:
    w = np.ones((4, 4 // group, 3, 3), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="c", pads=[1, 1, 1, 1],
                          strides=[2, 2], group=group)], "one",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4, 16, 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_conv_flops_by_hand():
    # 2 images x 4 out channels x 8 x 8 outputs, each 4 (or 2) channels x 3 x 3 MACs
    assert conv_flops(_one_conv(), (2, 4, 16, 16)) == {"c": 2 * 2 * 4 * 8 * 8 * 4 * 9}
    assert conv_flops(_one_conv(group=2), (2, 4, 16, 16)) == {"c": 2 * 2 * 4 * 8 * 8 * 2 * 9}


def test_fp32_runs_every_conv_in_float(fp32_path, images):
    prof = profile_ort(fp32_path, images[:1], runs=3, warmup=1)
    assert prof.int8_pct == 0 and prof.unmatched_convs == ()
    assert prof.float_time_pct > 80 and prof.qdq_time_pct == 0
    assert prof.runs == 3 and len(prof.slowest) == 10


def test_cpu_profile_runs_the_quantized_convs_in_int8(written, model, plan, images):
    prof = profile_ort(written["cpu"], images[:1], runs=3, warmup=1)
    flops = conv_flops(model, (1, 3, 32, 32))
    quantized = sum(flops[op.name] for op in plan.ops)
    # every quantized conv became an int8 kernel: the first and the head convs stay float
    assert prof.int8_pct == pytest.approx(100 * quantized / sum(flops.values()))
    assert 50 < prof.int8_pct < 100 and prof.unmatched_convs == ()
    int8_convs = {n.conv for n in prof.nodes if n.conv and n.precision == "int8"}
    assert int8_convs == set(plan.quantized_nodes)
    assert {n.op for n in prof.nodes if n.conv in int8_convs} == {"QLinearConv"}
    assert prof.conv_flops == sum(flops.values())
    text = prof.summary()
    assert text.startswith(f"{prof.int8_pct:.1f} % of conv FLOPs in INT8")
    assert len(text.splitlines()) == 11


def test_tensorrt_placement_leaves_convs_float_on_ort_cpu(written, images):
    cpu = profile_ort(written["cpu"], images[:1], runs=2, warmup=1)
    trt = profile_ort(written["tensorrt"], images[:1], runs=2, warmup=1)
    # no Q after the conv: ORT cannot form QLinearConv and dequantizes instead
    assert trt.int8_pct < cpu.int8_pct and trt.qdq_time_pct > cpu.qdq_time_pct


def test_no_profile_file_is_left_behind(fp32_path, images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = set(Path(tempfile.gettempdir()).glob("bench-ort-profile-*"))
    profile_ort(fp32_path, images[:1], runs=1, warmup=0)
    assert set(Path(tempfile.gettempdir()).glob("bench-ort-profile-*")) == before
    assert list(tmp_path.iterdir()) == []


def _event(name, ts, dur, op="Conv", types=("float",)):
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
            "args": {"op_name": op, "provider": "CPUExecutionProvider",
                     "input_type_shape": [{t: [1]} for t in types]}}


def test_summarise_skips_warmup_runs_and_takes_the_median():
    trace = []
    for run, (conv_us, q_us) in enumerate([(900, 90), (10, 1), (30, 3), (20, 2)]):
        ts = 1000 * run
        trace += [{"cat": "Session", "name": "model_run", "ts": ts, "dur": 500},
                  _event("c_token_3", ts + 1, conv_us, "QLinearConv", ("uint8",)),
                  _event("y_QuantizeLinear", ts + 2, q_us, "QuantizeLinear")]
    prof = summarise(_one_conv(), trace, (1, 4, 16, 16), warmup=1)
    assert prof.runs == 3 and prof.int8_pct == 100.0
    conv, quant = prof.nodes
    assert (conv.conv, conv.time_us, conv.precision) == ("c", 20.0, "int8")
    assert (quant.time_us, quant.precision) == (2.0, "qdq")
    assert prof.qdq_time_pct == pytest.approx(100 * 2 / 22)
