"""Fixtures shared by the integration tests: a tiny generated dataset and a tiny detector.

Both are real: the dataset comes from the project's generator, the detector is the
project's yolov7-tiny (random weights, width 0.25) exported to ONNX at 64 px.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("coco"), n_train=8, n_eval=6, progress=False)


@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from bench.models.export import export_onnx
    from bench.models.yolov7 import build_model

    torch.manual_seed(0)
    model = build_model("yolov7-tiny", num_classes=8, width=0.25).eval()
    return export_onnx(model, tmp_path_factory.mktemp("model") / "tiny.onnx", 64)
