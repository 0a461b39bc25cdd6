"""--diagnose on TensorRT against the strict stand-ins: an engine built DETAILED, its
inspector's layers and its IProfiler times, summarised and written like the ORT profile.

What the stand-ins cannot say: the layer types, fusions, formats and times a real
TensorRT chooses; these tests check that what the documented API returns is asked for,
read and summarised right, not what a real GPU would run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.config import BenchConfig
from bench.diagnose.session import Diagnoser, diagnose_row
from bench.diagnose.trt_layers import NAMES_ONLY, parse_engine_information, summarise_file
from bench.engines.trt import TrtEngine, TrtOptions
from bench.engines.trt_settings import builder_settings
from bench.errors import BenchError, ModelError
from bench.report.display import COLUMNS
from bench.report.render_markdown import diagnosis_section
from bench.report.rows import ResultRow
from bench.variants import spec_of

VERSIONS = ["8.6.2.3", "10.3.0.30", "10.13.0.35", "11.1.0.4"]
CONV = "/model.0/conv/Conv"


def conv_model(path: Path, kind: str = "fp32") -> Path:
    """out = a 1x1 Conv with weights 2 * I (what the stand-in computes), score = per-image
    sum; as a plain or a Q/DQ ONNX (input and weights quantized)."""
    weight = (2 * np.eye(3, dtype=np.float32)).reshape(3, 3, 1, 1)
    inits = [numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes")]
    nodes, source, w = [], "images", "w"
    if kind == "qdq":
        inits += [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z"),
                  numpy_helper.from_array(np.array(0.02, np.float32), "ws"),
                  numpy_helper.from_array(np.round(weight / 0.02).astype(np.int8), "w_q")]
        nodes += [helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"],
                                   name="/model.0/quant/QuantizeLinear"),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"],
                                   name="/model.0/quant/DequantizeLinear"),
                  helper.make_node("DequantizeLinear", ["w_q", "ws", "z"], ["w_dq"])]
        source, w = "dq", "w_dq"
    else:
        inits.append(numpy_helper.from_array(weight, "w"))
    nodes += [helper.make_node("Conv", [source, w], ["out"], name=CONV),
              helper.make_node("ReduceSum", [source, "axes"], ["score"], keepdims=0)]
    dims = ["N", 3, 4, 4]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, dims),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def images(n: int, value: float = 0.5) -> np.ndarray:
    return np.full((n, 3, 4, 4), value, np.float32)


def engine(model: Path, tmp_path: Path, **options) -> TrtEngine:
    return TrtEngine(model, options=TrtOptions(cache_dir=tmp_path / "engines", **options))


def all_freed(rig) -> bool:
    return rig.gpu.live() == {"memory": 0, "streams": 0, "events": 0, "host": 0}


# -- the build: DETAILED, in the cache key, measured runs untouched ----------------------


def test_detailed_is_in_the_settings_and_cache_key_only_when_asked():
    plain = builder_settings("qdq", "10.3.0.30")
    detailed = builder_settings("qdq", "10.3.0.30", profiling_verbosity="DETAILED")
    assert "profiling_verbosity" not in plain.as_dict()  # keys cached before it stay valid
    assert detailed.as_dict()["profiling_verbosity"] == "DETAILED"
    with pytest.raises(BenchError, match=r"profiling verbosity 'FULL': expected one of "
                                         r"LAYER_NAMES_ONLY, DETAILED, NONE"):
        builder_settings("qdq", "10.3.0.30", profiling_verbosity="FULL")


@pytest.mark.parametrize("kind, diagnose, expected", [
    ("int8-max", True, "DETAILED"), ("trt-entropy2", True, "DETAILED"), ("fp16", True, None),
    ("int8-max", False, None)])
def test_from_config_builds_detailed_for_the_diagnosed_rows(tmp_path, kind, diagnose, expected):
    cfg = BenchConfig(backend="tensorrt", device="cuda", diagnose=diagnose,
                      cache_dir=tmp_path / "cache")
    trt = TrtEngine.from_config(cfg, spec_of(kind), tmp_path / "m.onnx")
    assert trt.options.profiling_verbosity == expected


def test_a_detailed_engine_is_a_separate_plan_with_nvtx_kept_low(tmp_path, strict_rig):
    rig = strict_rig()
    model = conv_model(tmp_path / "q.onnx", "qdq")
    with engine(model, tmp_path, kind="qdq") as plain:
        assert plain._engine.profiling_verbosity == rig.trt.ProfilingVerbosity.LAYER_NAMES_ONLY
        plain_key = plain.extra_info()["engine_key"]
    with engine(model, tmp_path, kind="qdq", profiling_verbosity="DETAILED") as detailed:
        info = detailed.extra_info()
        assert detailed._engine.profiling_verbosity == rig.trt.ProfilingVerbosity.DETAILED
        # NVIDIA: DETAILED NVTX ranges add enqueue latency; the measured runs keep names only
        assert detailed._context.nvtx_verbosity == rig.trt.ProfilingVerbosity.LAYER_NAMES_ONLY
    assert info["engine_key"] != plain_key and info["engine_cache"] == "built"
    assert info["profiling_verbosity"] == "DETAILED" and rig.trt.log.builds == 2
    assert all_freed(rig)


# -- profile_layers: the inspector and the IProfiler -------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_int8_engine_profile_on_each_version(tmp_path, strict_rig, version):
    rig = strict_rig(version)
    model = conv_model(tmp_path / "q.onnx", "qdq")
    batch = images(2)
    with engine(model, tmp_path, kind="qdq", batch=2, profiling_verbosity="DETAILED") as trt:
        trt.infer(batch)
        measured = trt.extra_info()["gpu_compute_calls"]
        raw = trt.profile_layers(batch, runs=4, warmup=1)
        assert trt.extra_info()["gpu_compute_calls"] == measured  # not the row's GPU times
        assert trt._context.profiler is None and trt._context.enqueue_emits_profile
        trt.infer(batch)  # the engine runs on, unprofiled
    assert all_freed(rig)
    record = json.loads(raw.engine_information)
    assert ("I/O Tensors" in record) == version.startswith("11.")
    assert ("Bindings" in record) != version.startswith("11.")
    assert raw.runs == 4 and raw.input_shape == (2, 3, 4, 4)
    assert all(len(times) == 4 for times in raw.times_ms.values())  # warm-up left out
    profile = summarise_file(model, raw.engine_information, raw.times_ms, raw.runs,
                             raw.input_shape)
    assert profile.detailed and profile.int8_pct == 100.0 and profile.unmatched_convs == ()
    conv = next(t for t in profile.layers if t.convs)
    assert conv.convs == (CONV,) and conv.precision == "int8"
    assert conv.layer.layer_type == "CaskConvolution" and conv.layer.outputs == ("FP32",)
    assert conv.conv_flops == 2 * 2 * 3 * 4 * 4 * 3  # 2 x N x Cout x H x W x Cin
    assert profile.layer_counts["qdq"] == 1 and profile.reformat_layers == 1
    assert profile.slowest[0] is conv and profile.total_us > 0
    assert profile.summary().startswith("100.0 % of conv FLOPs in INT8; INT8 2 of 3 layers, ")


def test_formats_need_the_execution_context(strict_rig, tmp_path):
    """Without an execution context the inspector shows -1 for dynamic dims and the data
    type only; engine_information() sets the context, so formats are spelled out."""
    rig = strict_rig()
    model = conv_model(tmp_path / "q.onnx", "qdq")
    with engine(model, tmp_path, kind="qdq", profiling_verbosity="DETAILED") as trt:
        bare = trt._engine.create_engine_inspector().get_engine_information(
            rig.trt.LayerInformationFormat.JSON)
        raw = trt.profile_layers(images(1), runs=1, warmup=0)
    first = json.loads(bare)["Layers"][1]["Inputs"][0]
    assert first["Dimensions"][0] == -1 and first["Format/Datatype"] == "Int8"
    spelled = json.loads(raw.engine_information)["Layers"][1]["Inputs"][0]
    assert spelled["Dimensions"] == [1, 3, 4, 4]
    assert spelled["Format/Datatype"] == "Thirty-two wide channel vectorized row major Int8 format"
    assert [layer.inputs for layer in parse_engine_information(bare)] == \
           [layer.inputs for layer in parse_engine_information(raw.engine_information)]


@pytest.mark.parametrize("kind, calibrator, int8_pct, reformats", [
    ("fp16", None, 0.0, 4),  # FP16 flag: input copies and an output copy, all REFORMAT
    ("trt-implicit", "minmax", 100.0, 2),  # calibrated: INT8 copies of the input, no Q/DQ
    ("fp32", None, 0.0, 0)])
def test_weakly_typed_kinds(tmp_path, strict_rig, kind, calibrator, int8_pct, reformats):
    strict_rig("10.3.0.30")
    model = conv_model(tmp_path / "m.onnx")
    calibration = (lambda: iter([images(1, 0.25)])) if calibrator else None
    with engine(model, tmp_path, kind=kind, calibrator=calibrator, calibration=calibration,
                calibration_id="c1" if calibrator else "", profiling_verbosity="DETAILED") as trt:
        raw = trt.profile_layers(images(1), runs=2, warmup=0)
    profile = summarise_file(model, raw.engine_information, raw.times_ms, 2, (1, 3, 4, 4))
    assert profile.int8_pct == int8_pct and profile.layer_counts["qdq"] == 0
    assert profile.layer_counts["reformat"] == reformats
    assert profile.untimed == () and profile.time_pct["reformat"] < 50


def test_without_detailed_the_profile_claims_no_precision(tmp_path, strict_rig):
    strict_rig()
    model = conv_model(tmp_path / "q.onnx", "qdq")
    with engine(model, tmp_path, kind="qdq") as trt:  # LAYER_NAMES_ONLY, TensorRT's default
        raw = trt.profile_layers(images(1), runs=3, warmup=1)
    assert all(isinstance(layer, str) for layer in json.loads(raw.engine_information)["Layers"])
    profile = summarise_file(model, raw.engine_information, raw.times_ms, 3, (1, 3, 4, 4))
    assert not profile.detailed and profile.int8_pct is None
    assert {t.precision for t in profile.layers} == {"unknown"}
    assert profile.summary().startswith(NAMES_ONLY) and profile.total_us > 0


# -- what the strict stand-in refuses ----------------------------------------------------


def test_the_profiler_must_be_an_initialised_iprofiler(tmp_path, strict_rig):
    rig = strict_rig()
    with engine(conv_model(tmp_path / "m.onnx"), tmp_path) as trt:
        context = trt._context

        class Forgetful(rig.trt.IProfiler):
            def __init__(self):  # no IProfiler.__init__: pybind11 refuses the object
                self.seen = []

            def report_layer_time(self, layer_name, ms):
                self.seen.append(layer_name)

        with pytest.raises(TypeError, match="IProfiler.__init__"):
            context.profiler = Forgetful()
        with pytest.raises(TypeError, match="not an IProfiler"):
            context.profiler = object()
        assert context.report_to_profiler() is False  # no profiler attached
        with pytest.raises(TypeError, match="LayerInformationFormat"):
            trt._engine.create_engine_inspector().get_engine_information("JSON")


@pytest.mark.parametrize("verbosity, names", [("DETAILED", "layer"), ("NONE", "index")])
def test_the_stand_in_reports_from_enqueue_by_default(tmp_path, strict_rig, verbosity, names):
    """enqueue_emits_profile True (the default): execute_async_v3 reports each layer once
    and report_to_profiler has nothing left to do; under NONE layers are decimal indices."""
    rig = strict_rig()
    with engine(conv_model(tmp_path / "m.onnx"), tmp_path, profiling_verbosity=verbosity) as trt:

        class Seen(rig.trt.IProfiler):
            def __init__(self):
                rig.trt.IProfiler.__init__(self)
                self.names = []

            def report_layer_time(self, layer_name, ms):
                self.names.append(layer_name)

        seen = Seen()
        trt._context.profiler = seen
        trt.infer(images(1))
        assert trt._context.report_to_profiler() is True
        trt._context.profiler = None
        expected = [layer["name"] for layer in trt._engine.plan["layers"]]
    assert seen.names == (expected if names == "layer" else [str(i) for i in range(2)])


def test_report_to_profiler_failure_is_a_model_error(tmp_path, strict_rig, monkeypatch):
    """report_to_profiler returns False when TensorRT has nothing to report (e.g. the
    stream of the previous enqueue is gone); the profile fails naming it, the profiler is
    detached and the engine still runs."""
    rig = strict_rig()
    with engine(conv_model(tmp_path / "m.onnx"), tmp_path) as trt:
        monkeypatch.setattr(type(trt._context), "report_to_profiler", lambda self: False)
        with pytest.raises(ModelError, match=r"report_to_profiler failed after run 1"):
            trt.profile_layers(images(1), runs=2, warmup=0)
        assert trt._context.profiler is None
        trt.infer(images(1))
    assert all_freed(rig)


def test_profile_layers_needs_an_active_engine(tmp_path):
    with pytest.raises(BenchError, match=r"profile_layers\(\) before activate\(\)"):
        engine(tmp_path / "m.onnx", tmp_path).profile_layers(images(1))


# -- the diagnosis of a run: the row, the files, the report ------------------------------


def _row(variant: str, diagnosis: dict) -> ResultRow:
    return ResultRow(variant=variant, model="m", backend="tensorrt", device="cuda",
                     status="ok", extra={"diagnosis": diagnosis})


def test_diagnoser_on_tensorrt_writes_the_layer_table_and_fills_the_int8_column(
        tmp_path, strict_rig):
    strict_rig()
    fp32 = conv_model(tmp_path / "fp32.onnx")
    qdq = conv_model(tmp_path / "q.onnx", "qdq")
    diagnoser = Diagnoser(fp32, lambda: iter([images(2, 0.33)]), layer_images=2,
                          profile_runs=3)
    with engine(qdq, tmp_path, kind="qdq", profiling_verbosity="DETAILED") as trt:
        found = diagnoser.diagnose("int8-max", qdq, images(1), engine=trt)
    with engine(fp32, tmp_path, kind="fp32") as trt:  # not DETAILED: names only
        plain = diagnoser.diagnose("int8-mse", qdq, images(1), engine=trt)
    assert found["on"] == "TensorRT 10.3.0.30" and "profile_error" not in found, found
    assert found["int8_pct"] == 100.0 and found["reformat_layers"] == 1
    assert found["slowest"][0]["op"] == "CaskConvolution" and "profile_note" not in found
    assert "layers_error" not in found and found["tensors"] >= 1  # SQNR still on ORT
    assert "int8_pct" not in plain and plain["profile_note"] == NAMES_ONLY
    written = diagnoser.write(tmp_path / "run")
    assert {"diagnosis/int8-max_profile.csv", "diagnosis/int8-mse_profile.csv",
            "layers.csv"} <= set(written)
    table = list(csv.DictReader((tmp_path / "run/diagnosis/int8-max_profile.csv").open()))
    assert [r["precision"] for r in table] == ["int8", "int8", "qdq"]
    assert table[0]["convs"] == CONV and table[0]["inputs"] == "INT8"
    rows = [_row("int8-max", found), _row("int8-mse", plain)]
    column = next(c for c in COLUMNS if c.header == "int8\n%")
    assert [column.get(r, None) for r in rows] == [100.0, None]
    section = "\n".join(diagnosis_section(rows))
    assert "**int8-max**: int8 100.0 % of conv FLOPs" in section
    assert "no precisions are claimed" in section


def test_diagnose_row_looks_at_trt_implicit_only_on_tensorrt(tmp_path, strict_rig):
    strict_rig()
    diagnoser = Diagnoser(tmp_path / "fp32.onnx", lambda: iter([]))
    artifact = type("Artifact", (), {"path": str(tmp_path / "m.onnx")})()
    assert diagnose_row(diagnoser, "trt-minmax", artifact, None) == {}  # no TensorRT engine
    assert diagnose_row(diagnoser, "fp16", artifact, None, engine=engine(
        tmp_path / "m.onnx", tmp_path)) == {}  # not an INT8 row
