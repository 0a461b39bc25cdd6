"""The quant tests' mini YOLO-like graph, its plan and Q/DQ files, for the diagnosis tests."""

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quant"))

from yolo_like import build_yolo_like  # noqa: E402

from bench.quant.placement import QuantPlan, plan_quantization  # noqa: E402


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return build_yolo_like()


@pytest.fixture(scope="module")
def plan(model) -> QuantPlan:
    return plan_quantization(model)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32)


@pytest.fixture(scope="module")
def fp32_path(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "fp32.onnx"
    onnx.save(model, str(path))
    return path
