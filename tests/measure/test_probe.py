
import numpy as np
import onnx

from bench.engines.ort import OrtEngine, OrtOptions
from bench.measure import probe


def test_probe_bytes_are_deterministic_and_named_by_their_hash(tmp_path):
    first = probe.probe_model_path(tmp_path / "a")
    second = probe.probe_model_path(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes() == probe.probe_bytes()
    assert probe.probe_sha256()[:12] in first.name and f"v{probe.PROBE_VERSION}" in first.name
    # a fresh build, not the cached one, gives the same bytes
    assert probe._network_bytes() == probe.probe_bytes()
    assert probe.probe_identity() == {"version": probe.PROBE_VERSION,
                                      "sha256": probe.probe_sha256()}


def test_probe_file_with_wrong_content_is_replaced(tmp_path):
    path = probe.probe_model_path(tmp_path)
    path.write_bytes(b"truncated")
    assert probe.probe_model_path(tmp_path) == path
    assert path.read_bytes() == probe.probe_bytes()
    onnx.checker.check_model(onnx.load(path))


def test_probe_runs_on_the_ort_engine_deterministically(tmp_path):
    batch = probe.probe_batch()
    assert batch.shape == probe.INPUT_SHAPE and batch.dtype == np.float32
    assert np.array_equal(batch, probe.probe_batch())
    with OrtEngine(probe.probe_model_path(tmp_path), options=OrtOptions(threads=1)) as engine:
        (out,) = engine.infer(batch).values()
        assert out.shape[0] == 1 and np.all(np.isfinite(out)) and out.max() > 0
        assert np.array_equal(out, next(iter(engine.infer(batch).values())))


def test_the_probe_is_the_shipped_default_detector():
    from bench.models.default import default_model_path, verify_default

    assert probe.probe_bytes() == default_model_path().read_bytes()
    assert probe.probe_sha256() == verify_default()["onnx"]["sha256"]
    assert probe.INPUT_SHAPE[2:] == (verify_default()["model"]["imgsz"],) * 2


def test_the_int8_probe_is_the_default_in_q_dq_the_same_file_every_time(tmp_path):
    cpu = probe.probe_file(tmp_path / "a", "int8", "cpu")
    assert cpu.read_bytes() == probe.probe_file(tmp_path / "b", "int8", "cpu").read_bytes()
    trt = probe.probe_file(tmp_path / "a", "int8", "tensorrt")
    assert trt.read_bytes() != cpu.read_bytes()  # each Q/DQ profile has its own probe
    ops = {n.op_type for n in onnx.load(cpu).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    identity = probe.row_probe_identity("int8", "cpu")
    assert identity["kind"] == "int8" and identity["sha256"][:12] in cpu.name
    assert probe.probe_kind("qdq") == probe.probe_kind("trt-implicit") == "int8"
    assert probe.probe_kind("fp16") == probe.probe_kind("fp32") == "fp32"
    with OrtEngine(cpu, options=OrtOptions(threads=1)) as engine:
        (out,) = engine.infer(probe.probe_batch()).values()
        assert np.all(np.isfinite(out))
