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


@pytest.fixture(scope="module")
def mini_detector(tmp_path_factory):
    """tests/quant/yolo_like.py's 32 px graph (3 classes, 26 groups: the search stays
    fast) mapped onto the first three categories of the generated dataset."""
    import json

    from bench.data.synthetic import CATEGORIES

    folder = tmp_path_factory.mktemp("mini")
    onnx.save(build_yolo_like(), str(folder / "mini.onnx"))
    mapping = {str(i): CATEGORIES[i][0] for i in range(3)}
    (folder / "classes.json").write_text(json.dumps(mapping))
    return folder / "mini.onnx", folder / "classes.json"
