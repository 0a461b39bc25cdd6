"""One contract for every engine that runs here: ONNX Runtime, PyTorch, and TensorRT on the
strict stand-ins; plus a toy backend registered in one line.

Each engine is built the way the session builds it (the registry's class, from_config
with the run's config and a variant spec) from the same tiny ONNX file, and must give the
same outputs as ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from test_trt_wiring import check_outputs, images, write_model

from bench.config import BenchConfig
from bench.engines import registry as backends
from bench.engines.base import Engine
from bench.engines.factory import engine_class, make_engine, skip_reason
from bench.errors import BenchError, ConfigError, ModelError
from bench.variants import registry

ENGINES = ["onnxruntime", "torch", "tensorrt"]


@pytest.fixture
def backend(request, strict_rig, tmp_path) -> str:
    if request.param == "tensorrt":
        strict_rig("10.3.0.30")
    return request.param


def config(backend: str, tmp_path: Path) -> BenchConfig:
    device = "cuda" if backend == "tensorrt" else "cpu"
    return BenchConfig(backend=backend, device=device, batch=2, eval_batch=3, threads=1,
                       cache_dir=tmp_path / "cache")


def fp32_engine(backend: str, tmp_path: Path, model: Path | None = None) -> Engine:
    model = model or write_model(tmp_path / "m.onnx")
    cfg = config(backend, tmp_path)
    return make_engine(cfg, registry()["fp32"], model, image_size=32, max_batch=3)


@pytest.mark.parametrize("backend", ENGINES, indirect=True)
def test_lifecycle_and_outputs(backend, tmp_path):
    engine = fp32_engine(backend, tmp_path)
    assert isinstance(engine, engine_class(backend)) and not engine.active
    with pytest.raises(BenchError, match=r"infer\(\) before activate\(\)"):
        engine.infer(images(1))
    with engine:
        assert engine.active
        for n in (2, 3, 1):  # the latency batch, the accuracy batch, a last partial one
            batch = images(n, 0.5 * n)
            check_outputs(engine.infer(batch), batch)
        assert engine.input_shape[1:] == (3, 4, 4)
        assert isinstance(engine.runtime_version(), str)
        assert engine.device_name() in (None, "Fake Orin")
        assert engine.reset_timings() is None
        assert isinstance(engine.extra_info(), dict)
        streams = engine.infer_streams(2)
        assert streams and all(callable(s) for s in streams)
        for infer in streams:
            check_outputs(infer(images(2, 7.0)), images(2, 7.0))
    assert not engine.active
    engine.deactivate()  # twice is harmless
    with pytest.raises(BenchError, match="after deactivate"):
        engine.infer(images(1))


@pytest.mark.parametrize("backend", ENGINES, indirect=True)
def test_missing_model_is_a_model_error_and_nothing_opens(backend, tmp_path):
    engine = fp32_engine(backend, tmp_path, tmp_path / "absent.onnx")
    with pytest.raises(ModelError, match=r"absent.onnx: file not found"):
        engine.activate()
    assert not engine.active


@pytest.mark.parametrize("backend", ENGINES, indirect=True)
def test_unreadable_model_names_the_file(backend, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelError, match="broken.onnx"):
        fp32_engine(backend, tmp_path, broken).activate()


@pytest.mark.parametrize("backend", ENGINES, indirect=True)
def test_options_are_typed(backend, tmp_path):
    cls = engine_class(backend)
    with pytest.raises(TypeError, match=f"expected {cls.Options.__name__}"):
        cls(tmp_path / "m.onnx", options={"threads": 1})


# -- a toy backend: one class, one registry line ----------------------------------------


@dataclass(frozen=True)
class ToyOptions:
    scale: float = 2.0


class ToyEngine(Engine):
    """A numpy engine for the model out = 2 * images, score = per-image sum."""

    name = "toy"
    Options = ToyOptions

    @classmethod
    def unavailable_reason(cls, device: str = "cpu") -> str | None:
        return None if device == "cpu" else f"toy runs on the CPU only, not {device}"

    @classmethod
    def from_config(cls, cfg, spec, artifact_path, *, calibration=None, calibration_id="",
                    image_size=None, max_batch=None) -> ToyEngine:
        return cls(artifact_path, device=cfg.device, options=ToyOptions())

    @classmethod
    def skip_reason(cls, cfg, spec) -> str | None:
        return None if spec.artifact == "fp32" else f"toy runs fp32 only, not {spec.name}"

    def _activate(self) -> None:
        self.calls = 0

    def _deactivate(self) -> None:
        pass

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        return {"out": self.options.scale * batch,
                "score": batch.sum(axis=(1, 2, 3)).reshape(-1, 1)}

    @property
    def input_shape(self) -> tuple:
        return ("N", 3, 4, 4)


@pytest.fixture
def toy_backend(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, "toy", ToyEngine)  # == register_backend("toy", ...)
    return "toy"


def test_a_registered_toy_backend_runs_through_the_factory(toy_backend, tmp_path):
    assert "toy" in backends.backend_names()
    # BenchConfig validates backend names against its own list; the factory only needs the
    # attributes, so the toy config is a copy of a valid one with the backend swapped.
    cfg = config("onnxruntime", tmp_path)
    object.__setattr__(cfg, "backend", toy_backend)
    specs = registry()
    assert skip_reason(cfg, specs["fp32"]) is None
    assert skip_reason(cfg, specs["int8-entropy"]) == "toy runs fp32 only, not int8-entropy"
    assert "needs --backend tensorrt" in skip_reason(cfg, specs["trt-minmax"])
    engine = make_engine(cfg, specs["fp32"], write_model(tmp_path / "m.onnx"))
    assert isinstance(engine, ToyEngine)
    with engine:
        check_outputs(engine.infer(images(2)), images(2))
    assert engine.runtime_version() is None and engine.device_name() is None


def test_register_backend_by_path_and_unknown_backends(monkeypatch):
    monkeypatch.setattr(backends, "BACKENDS", dict(backends.BACKENDS))
    backends.register_backend("toy-by-path", f"{__name__}:ToyEngine")
    assert backends.engine_class("toy-by-path").__name__ == "ToyEngine"
    with pytest.raises(ConfigError, match="backend 'tpu': unknown; expected one of "
                                          "onnxruntime, tensorrt, torch, toy-by-path"):
        backends.engine_class("tpu")


def test_factory_rules_per_backend(tmp_path):
    specs = registry()
    ort = config("onnxruntime", tmp_path)
    assert "needs --backend tensorrt" in skip_reason(ort, specs["trt-entropy2"])
    assert skip_reason(ort, specs["int8-mse"]) is None
    torch_cfg = replace(ort, backend="torch")
    assert "fp32 and fp16 only" in skip_reason(torch_cfg, specs["int8-max"])
    assert "not a deployment path" in skip_reason(torch_cfg, specs["fp16"])
    assert skip_reason(torch_cfg, specs["fp32"]) is None
