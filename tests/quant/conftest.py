"""The mini YOLO-like graph and its default Q/DQ plan, shared by the quant tests."""

import onnx
import pytest
from yolo_like import build_yolo_like

from bench.quant.placement import QuantPlan, plan_quantization


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return build_yolo_like()


@pytest.fixture(scope="module")
def plan(model) -> QuantPlan:
    return plan_quantization(model)
