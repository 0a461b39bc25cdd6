"""Adding a calibrator is one function plus one registry line: its variant then exists
everywhere (config, floors, QAT inits, TensorRT's artifact kind) and builds."""

from __future__ import annotations

import onnx
import pytest

from bench.build import build_variant
from bench.config import load_config
from bench.quant import calibrators
from bench.report.gate import GateConfig
from bench.run import RunContext
from bench.variants import qat_inits, registry, spec_of


@pytest.fixture
def toy_calibrator(monkeypatch):
    # Half of the largest |x| seen: a deliberately bad calibrator, easy to recognise.
    monkeypatch.setitem(calibrators.CALIBRATORS, "toy", lambda hist, s: hist.amax_seen / 2)
    return "int8-toy"


def test_a_registered_calibrator_is_a_variant_everywhere(toy_calibrator):
    spec = spec_of(toy_calibrator)
    assert (spec.artifact, spec.builder, spec.calibrator, spec.floor) == \
        ("qdq", "ptq", "toy", "int8")
    assert list(registry())[-3:] == ["int8-qat", "trt-entropy2", "trt-minmax"]
    assert "toy" in qat_inits()
    assert GateConfig().floor_for(toy_calibrator) == 0.95
    cfg = load_config({"variants": f"fp32,{toy_calibrator}"}, env={}, pyproject=None)
    assert cfg.variants == ("fp32", toy_calibrator)


def test_a_registered_calibrator_builds(toy_calibrator, tmp_path, tiny_detector, tiny_coco):
    cfg = load_config({"model": str(tiny_detector), "coco": str(tiny_coco), "calib_count": 2,
                       "progress": False, "cache_dir": str(tmp_path / "cache"),
                       "results_dir": str(tmp_path / "results"),
                       "baseline": str(tmp_path / "baseline.json")}, env={}, pyproject=None)
    context = RunContext(cfg).build_context()
    toy = build_variant(toy_calibrator, context)
    mx = build_variant("int8-max", context)
    assert toy.meta["method"] == "toy"
    toy_scales, max_scales = _scales(toy.path), _scales(mx.path)
    ratio = [toy_scales[k] / max_scales[k] for k in max_scales if max_scales[k] > 0]
    assert ratio and all(abs(r - 0.5) < 1e-6 for r in ratio)  # toy = half of max, per tensor


def _scales(path) -> dict[str, float]:
    """The activation scales of a Q/DQ model: QuantizeLinear's scale input, by tensor."""
    model = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in inits
            and inits[n.input[1]].size == 1}
