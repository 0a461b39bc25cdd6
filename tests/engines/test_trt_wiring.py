"""The TensorRT engine's whole path against the strict stand-ins (tests/engines/strict_*.py).

No machine here has TensorRT or a GPU; the stand-ins expose, per TensorRT line (8.6, 10.x,
11.x) and per CUDA binding (pycuda, cuda-python), only what the real ones expose, and
keep their bookkeeping (pycuda's context stack, tuple error codes, a timing cache that
can be refused, calibration at the OPT shape, get_batch errors swallowed). What they
cannot say is whether real kernels give these outputs: that needs a GPU run.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.config import BenchConfig
from bench.engines import cuda_buffers
from bench.engines.factory import make_engine, skip_reason
from bench.engines.trt import TrtEngine, TrtOptions
from bench.errors import ConfigError, EngineUnavailable, InputDataError, ModelError
from bench.variants import registry

VERSIONS = ["8.6.2.3", "10.3.0.30", "10.13.0.35", "11.1.0.4"]
BINDINGS = ["pycuda", "cuda-python"]


def write_model(path: Path, kind: str = "fp32", *, hw=(4, 4), op: str = "Mul") -> Path:
    """out = 2 * images, score = per-image sum; as a plain, FP16-weight or Q/DQ ONNX."""
    inits = [numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes")]
    nodes, source = [], "images"
    if kind == "qdq":
        inits += [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        source = "dq"
    if kind == "fp16":
        inits.append(numpy_helper.from_array(np.array(2.0, np.float16), "two"))
        nodes += [helper.make_node("Cast", ["images"], ["half"], to=TensorProto.FLOAT16),
                  helper.make_node(op, ["half", "two"], ["out16"]),
                  helper.make_node("Cast", ["out16"], ["out"], to=TensorProto.FLOAT)]
    else:
        inits.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
        nodes.append(helper.make_node(op, [source, "two"], ["out"]))
    nodes.append(helper.make_node("ReduceSum", [source, "axes"], ["score"], keepdims=0))
    dims = ["N", 3, *hw]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, dims),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def images(n: int, value: float = 1.0, hw=(4, 4)) -> np.ndarray:
    return np.full((n, 3, *hw), value, np.float32)


def check_outputs(outputs: dict, batch: np.ndarray) -> None:
    assert list(outputs) == ["out", "score"]
    np.testing.assert_array_equal(outputs["out"], 2 * batch)
    # (N,) from ONNX Runtime and torch (keepdims=0), (N, 1) from the stand-in's plan.
    score = outputs["score"].reshape(len(batch), -1)[:, 0]
    np.testing.assert_allclose(score, batch.sum(axis=(1, 2, 3)), rtol=1e-6)


def engine(model: Path, tmp_path: Path, **options) -> TrtEngine:
    return TrtEngine(model, options=TrtOptions(cache_dir=tmp_path / "engines", **options))


def all_freed(rig) -> bool:
    return rig.gpu.live() == {"memory": 0, "streams": 0, "events": 0, "host": 0}


# -- the session's open/close order ------------------------------------------------------


@pytest.mark.parametrize("binding", BINDINGS)
def test_session_order_variant_anchor_variant_closes_anchor_last(tmp_path, strict_rig, binding):
    """The session's real order: a variant opens, the fp32 anchor opens beside it, the
    variant closes, the next variant opens, ..., the anchor closes last in finish().
    With one pycuda context pushed and popped per engine this popped an empty stack
    (LogicError: cannot pop non-current context) on commit 96f8907."""
    rig = strict_rig(binding=binding)
    model = write_model(tmp_path / "m.onnx")
    batch = images(1, 0.5)
    variant = engine(model, tmp_path, kind="fp16").activate()
    check_outputs(variant.infer(batch), batch)
    anchor = engine(model, tmp_path).activate()
    check_outputs(anchor.infer(batch), batch)
    for kind in ("fp16", "fp32", "fp16"):
        variant.deactivate()
        check_outputs(anchor.infer(batch), batch)  # the anchor outlives each variant
        variant = engine(model, tmp_path, kind=kind).activate()
        check_outputs(variant.infer(batch), batch)
    variant.deactivate()
    anchor.deactivate()
    assert all_freed(rig), rig.gpu.live()  # every stream, event and buffer went with its engine
    assert len(rig.stack()) == (1 if binding == "pycuda" else 0)  # one shared context
    cuda_buffers.release_shared_contexts()
    assert rig.stack() == []  # pycuda aborts at exit on a non-empty stack


@pytest.mark.parametrize("binding", BINDINGS)
def test_infer_from_another_thread_leaves_its_stack_empty(tmp_path, strict_rig, binding):
    rig = strict_rig(binding=binding)
    model = write_model(tmp_path / "m.onnx")
    batch, seen = images(2, 3.0), {}
    with engine(model, tmp_path, batch=2) as trt:

        def worker():
            seen["outputs"] = trt.infer(batch)
            seen["stack"] = list(rig.stack())

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    check_outputs(seen["outputs"], batch)
    assert seen["stack"] == []


# -- building, caching, and every variant through the factory ---------------------------


@pytest.mark.parametrize("binding", BINDINGS)
def test_builds_then_reuses_the_cached_engine(tmp_path, strict_rig, binding):
    rig = strict_rig(binding=binding)
    model = write_model(tmp_path / "m.onnx")
    batch = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    with engine(model, tmp_path, kind="fp16", batch=2, max_batch=4) as trt:
        check_outputs(trt.infer(batch), batch)
        info = trt.extra_info()
        assert trt.runtime_version() == "10.3.0.30" and trt.device_name() == "Fake Orin"
    assert info["engine_cache"] == "built" and rig.trt.log.builds == 1
    assert info["builder_flags"] == ["FP16"] and info["cuda_backend"] == binding
    assert info["timing_cache"] == "empty" and info["gpu_compute_calls"] == 1
    assert all_freed(rig)
    with engine(model, tmp_path, kind="fp16", batch=2, max_batch=4) as again:
        assert again.extra_info()["engine_cache"] == "hit"
        check_outputs(again.infer(batch), batch)
    assert rig.trt.log.builds == 1


def rig_config(tmp_path: Path, batch: int = 2, eval_batch: int = 4) -> BenchConfig:
    return BenchConfig(backend="tensorrt", device="cuda", batch=batch, eval_batch=eval_batch,
                       cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("version", VERSIONS)
def test_every_variant_runs_through_the_factory(tmp_path, strict_rig, version):
    """Each registered variant, as the session drives it: skip_reason, the artifact kind
    TensorRT wants, make_engine with the run's image size and largest batch, both
    batches, deactivate. TensorRT 11 skips trt-implicit with the reason."""
    rig = strict_rig(version)
    cfg = rig_config(tmp_path)
    artifacts = {kind: write_model(tmp_path / f"{kind}.onnx", kind)
                 for kind in ("fp32", "fp16", "qdq")}
    calibration = lambda: (images(1, float(i)) for i in range(6))  # noqa: E731
    ran, skipped = [], {}
    for spec in registry().values():
        reason = skip_reason(cfg, spec)
        if reason:
            skipped[spec.name] = reason
            continue
        onnx_kind = TrtEngine.artifact_kind(spec.artifact, spec.calibrator)
        trt = make_engine(cfg, spec, artifacts[onnx_kind], calibration=calibration,
                          calibration_id="c6", image_size=32, max_batch=cfg.eval_batch)
        with trt:
            for n in (cfg.batch, cfg.eval_batch, 1):
                batch = images(n, 0.25)
                check_outputs(trt.infer(batch), batch)
        ran.append(spec.name)
    implicit = [n for n, s in registry().items() if s.artifact == "trt-implicit"]
    if version.startswith("11."):
        assert set(skipped) == set(implicit)
        assert all("removed implicit INT8 calibration" in skipped[n] for n in implicit)
    else:
        assert skipped == {} and set(implicit) <= set(ran)
        assert rig.trt.log.calibration_shapes == [(2, 3, 4, 4)] * len(implicit)
    assert "int8-entropy" in ran and "fp16" in ran
    assert all_freed(rig)


@pytest.mark.parametrize("version, flags, network_flags", [
    ("8.6.2.3", [0, 1], 1),  # FP16, INT8; 1 << EXPLICIT_BATCH
    ("10.3.0.30", [0, 1], 0),
    ("11.1.0.4", [], 0),  # strongly typed: no precision flags exist
])
def test_plan_records_the_settings_applied(tmp_path, strict_rig, version, flags, network_flags):
    strict_rig(version)
    model = write_model(tmp_path / "q.onnx", "qdq")
    with engine(model, tmp_path, kind="qdq", batch=2, max_batch=8, workspace_mib=64) as trt:
        plan = trt._engine.plan
        info = trt.extra_info()
    assert plan["flags"] == flags and plan["network_flags"] == network_flags
    assert plan["pool"] == 64 << 20
    assert plan["profile"] == [[1, 3, 4, 4], [2, 3, 4, 4], [8, 3, 4, 4]]
    assert info["strongly_typed"] == version.startswith("11.")


def test_trt_10_13_build_carries_the_deprecation_note(tmp_path, strict_rig):
    strict_rig("10.13.0.35")
    with engine(write_model(tmp_path / "m.onnx"), tmp_path, kind="fp16") as trt:
        note = trt.extra_info()["deprecation"]
    assert "deprecates BuilderFlag.FP16 (since 10.12; removed in 11)" in note


def test_image_size_and_max_batch_reach_the_profile(tmp_path, strict_rig):
    strict_rig()
    cfg = rig_config(tmp_path, batch=1, eval_batch=3)
    model = write_model(tmp_path / "hw.onnx", hw=("H", "W"))
    trt = make_engine(cfg, registry()["fp32"], model, image_size=48, max_batch=3)
    with trt:
        batch = images(3, 1.0, hw=(48, 48))
        check_outputs(trt.infer(batch), batch)
        assert trt._engine.plan["profile"][2] == [3, 3, 48, 48]
        with pytest.raises(InputDataError, match=r"outside the engine's profile.*batch <= 3, "
                                                 r"image size 48"):
            trt.infer(images(4, hw=(48, 48)))


def test_rebinds_per_batch_shape(tmp_path, strict_rig):
    rig = strict_rig()
    with engine(write_model(tmp_path / "m.onnx"), tmp_path, batch=2, max_batch=4) as trt:
        assert trt.input_shape == (None, 3, 4, 4)
        for size in (1, 4, 2):
            batch = images(size, float(size))
            check_outputs(trt.infer(batch), batch)
        assert rig.gpu.live()["memory"] == 3  # one input and two outputs bound, older freed


# -- what the strict TensorRT can refuse -------------------------------------------------


@pytest.mark.parametrize("blob, status", [(b"TC|10.3.0.30/Another GPU|7", "refused"),
                                          (b"\x00garbage", "unreadable")])
def test_foreign_or_corrupt_timing_cache_is_replaced(tmp_path, strict_rig, blob, status):
    """set_timing_cache returns False for another device's cache and get_timing_cache is
    then None: on commit 96f8907 this crashed on None.serialize() after the build."""
    rig = strict_rig()
    timing = tmp_path / "engines" / "timing" / "Fake_Orin_sm8.7_trt10.3.0.30.cache"
    timing.parent.mkdir(parents=True)
    timing.write_bytes(blob)
    with engine(write_model(tmp_path / "m.onnx"), tmp_path) as trt:
        assert trt.extra_info()["timing_cache"] == status
    assert timing.read_bytes() == b"TC|10.3.0.30/Fake Orin|1"  # ours now, usable next time
    assert rig.trt.log.timing_refused == (1 if status == "refused" else 0)
    with engine(write_model(tmp_path / "m2.onnx", op="Mul"), tmp_path, batch=2) as again:
        assert again.extra_info()["timing_cache"] == "loaded"


def test_parser_failure_is_a_model_error_with_its_first_error(tmp_path, strict_rig):
    rig = strict_rig()
    model = write_model(tmp_path / "odd.onnx", op="Add")  # an op the stand-in has no importer for
    with pytest.raises(ModelError, match=r"ONNX parser failed \(1 error\(s\); first: In node 0: "
                                         r"No importer registered for op: Add\)"):
        engine(model, tmp_path).activate()
    assert all_freed(rig)


@pytest.mark.parametrize("version", ["8.6.2.3", "10.3.0.30"])
def test_calibration_runs_at_the_opt_shape(tmp_path, strict_rig, version):
    """TensorRT calibrates at the profile's OPT shape and ignores get_batch_size; at
    --batch 2 with batch-1 calibration images commit 96f8907 let it read past the buffer."""
    rig = strict_rig(version)
    model = write_model(tmp_path / "m.onnx")
    calibration = lambda: (images(1, float(i)) for i in range(5))  # noqa: E731
    with engine(model, tmp_path, kind="trt-implicit", calibrator="minmax", batch=2,
                calibration=calibration, calibration_id="c5") as trt:
        info = trt.extra_info()
    assert rig.trt.log.calibration_shapes == [(2, 3, 4, 4)]
    assert rig.trt.log.calibration_batches == 2 and rig.trt.log.swallowed == []
    assert info["calibration_batches"] == 2 and info["calibration_images_read"] == 5
    assert info["calibrator"] == "IInt8MinMaxCalibrator"
    assert all_freed(rig)


def test_an_error_inside_get_batch_is_raised_after_the_build(tmp_path, strict_rig):
    """The binding swallows an exception in get_batch as "no more batches"; commit 96f8907
    built a silently under-calibrated engine. Now the build fails with the error."""
    rig = strict_rig()
    model = write_model(tmp_path / "m.onnx")
    calibration = lambda: iter([images(1), images(1, hw=(5, 5))])  # noqa: E731
    with pytest.raises(InputDataError, match=r"calibration batch has shape \(1, 3, 5, 5\)"):
        engine(model, tmp_path, kind="trt-implicit", calibrator="entropy2",
               calibration=calibration).activate()
    assert not list((tmp_path / "engines").glob("*.engine"))  # nothing cached
    assert all_freed(rig)


def test_too_few_calibration_images_for_the_opt_batch(tmp_path, strict_rig):
    strict_rig()
    with pytest.raises(InputDataError, match=r"has 1 image\(s\).*needs at least 4"):
        engine(write_model(tmp_path / "m.onnx"), tmp_path, kind="trt-implicit",
               calibrator="minmax", batch=4, calibration=lambda: iter([images(1)])).activate()
    with pytest.raises(InputDataError, match="option calibration"):
        engine(write_model(tmp_path / "m.onnx"), tmp_path, kind="trt-implicit",
               calibrator="minmax").activate()


def test_trt11_refuses_what_it_cannot_build(tmp_path, strict_rig):
    rig = strict_rig("11.1.0.4")
    model = write_model(tmp_path / "m.onnx")
    with pytest.raises(EngineUnavailable, match="removed implicit INT8 calibration"):
        engine(model, tmp_path, kind="trt-implicit", calibrator="entropy2").activate()
    assert "removed" in TrtEngine.kind_unavailable_reason("trt-implicit", "minmax")
    with pytest.raises(ConfigError, match="no float16 weights"):
        engine(model, tmp_path, kind="fp16").activate()
    assert TrtEngine.artifact_kind("fp16") == "fp16"  # no FP16 flag any more
    assert TrtEngine.artifact_kind("qdq") == "qdq"
    assert not hasattr(rig.trt, "IInt8EntropyCalibrator2")
    assert not hasattr(rig.trt.BuilderFlag, "FP16")
    assert all_freed(rig)


def test_artifact_kind_on_weakly_typed_versions(tmp_path, strict_rig):
    strict_rig("10.3.0.30")
    assert TrtEngine.artifact_kind("fp16") == "fp32"  # built with BuilderFlag.FP16
    assert TrtEngine.artifact_kind("trt-implicit", "entropy2") == "fp32"
    with pytest.raises(EngineUnavailable, match="implicit calibrator 'percentile'"):
        TrtEngine.artifact_kind("trt-implicit", "percentile")


def test_the_stand_in_refuses_execute_without_every_address(strict_rig):
    rig = strict_rig()
    plan = {"version": rig.trt.__version__, "input": "images", "shape": [1, 3, 4, 4],
            "outputs": ["out"], "profile": None}
    runtime = rig.trt.Runtime(rig.trt.Logger())
    context = runtime.deserialize_cuda_engine(json.dumps(plan).encode()).create_execution_context()
    stream = next(rig.gpu._next)
    rig.gpu.streams.add(stream)
    context.set_tensor_address("images", rig.gpu.malloc(192))
    assert context.execute_async_v3(stream) is False  # "out" has no address
    context.set_tensor_address("out", rig.gpu.malloc(192))
    assert context.execute_async_v3(stream) is True


# -- the CUDA bindings ------------------------------------------------------------------


def test_cuda_python_13_on_a_cuda_12_driver_says_why(strict_rig):
    strict_rig(binding="cuda-python", driver_version=12060, runtime_version=13000)
    reason = TrtEngine.unavailable_reason("cuda")
    assert reason.startswith("no CUDA device (cuda-python sees none; cuda-python 13.9.0 "
                             "needs a CUDA 13 driver; this one is CUDA 12.6")
    assert "pip install 'cuda-python>=12,<13'" in reason
    report = cuda_buffers.cuda_binding_report()
    assert report[0] == "cuda binding pycuda       not installed"
    assert report[1].startswith("cuda binding cuda-python  13.9.0, driver CUDA 12.6, "
                                "0 device(s): unusable, cuda-python 13.9.0 needs")


def test_binding_report_on_a_working_rig(strict_rig):
    strict_rig(binding="pycuda")
    assert cuda_buffers.cuda_binding_report() == [
        "cuda binding pycuda       2025.1.2, driver CUDA 12.6, 1 device(s): ok",
        "cuda binding cuda-python  not installed"]


@pytest.mark.parametrize("binding, expected", [("pycuda", "0000:01:00.0"),
                                               ("cuda-python", "0000:01:00.0")])
def test_pci_bus_id_of_the_engine_device(strict_rig, binding, expected):
    strict_rig(binding=binding)
    backend = cuda_buffers.load_cuda_backend(0)
    try:
        assert backend.pci_bus_id().lower() == expected
        assert backend.driver_version() == 12060
    finally:
        backend.close()
