"""`bench make-default` options, one-line errors, and a miniature end-to-end build."""

import argparse
import json

import numpy as np
import onnxruntime as ort
import pytest

from bench.data.synthetic import generate
from bench.errors import ModelError
from bench.models import make_default
from bench.models.default import default_model_path, load_manifest, verify_default


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    make_default.add_arguments(parser)
    return parser.parse_args(list(argv))


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    return err


def test_missing_output_folder_is_one_line_error(tmp_path, capsys):
    assert make_default.run(_args("--out", str(tmp_path / "nope"))) == 2
    assert "--out" in _error_line(capsys)


def test_unknown_model_size_is_one_line_error(tmp_path, capsys):
    assert make_default.run(_args("--out", str(tmp_path), "--arch", "yolov7-huge")) == 2
    err = _error_line(capsys)
    assert "yolov7-huge" in err and "yolov7-tiny" in err


def test_dataset_not_in_coco_format_is_one_line_error(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert make_default.run(_args("--out", str(tmp_path), "--data", str(tmp_path / "data"))) == 2
    assert "not a COCO-format dataset" in _error_line(capsys)


def test_iterations_and_epochs_are_exclusive():
    with pytest.raises(SystemExit):
        _args("--iterations", "5", "--epochs", "1")


def test_reproduce_command_names_every_choice():
    cmd = make_default.reproduce_command(_args("--width", "0.5", "--epochs", "3"))
    assert cmd.startswith("bench make-default --arch yolov7-tiny --width 0.5 --imgsz 256")
    assert "--seed 0" in cmd and "--epochs 3.0" in cmd and "--iterations" not in cmd


def test_missing_default_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="make-default"):
        default_model_path(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_manifest(tmp_path)


def test_end_to_end_miniature_build(tmp_path, capsys):
    data = generate(tmp_path / "data", seed=1, n_train=4, n_eval=4, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    args = _args("--out", str(out), "--data", str(data), "--width", "0.25", "--imgsz", "64",
                 "--iterations", "2", "--threads", "1")
    assert make_default.run(args) == 0
    manifest = verify_default(out)  # sha256 in the manifest matches the file
    assert manifest["model"] | {"parameters": 0, "parameters_fused": 0} == {
        "arch": "yolov7-tiny", "width": 0.25, "depth": 1.0, "imgsz": 64, "num_classes": 8,
        "strides": [8.0, 16.0, 32.0], "parameters": 0, "parameters_fused": 0}
    assert [c["category_id"] for c in manifest["classes"]] == [2, 5, 11, 17, 23, 42, 64, 90]
    assert manifest["training"]["iterations"] == 2 and manifest["training"]["wall_s"] > 0
    assert manifest["evaluation"]["num_images"] == 4 and 0 <= manifest["evaluation"]["map"] <= 1
    assert manifest["onnx"]["max_abs_diff_vs_torch"]["scores"] < 1e-4
    assert "--iterations 2" in manifest["command"] and "--data" in manifest["command"]
    session = ort.InferenceSession(str(default_model_path(out)), providers=["CPUExecutionProvider"])
    y = session.run(None, {"images": np.zeros((2, 3, 64, 64), np.float32)})[0]
    assert y.shape == (2, 3 * (64 + 16 + 4), 13)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert "wrote" in capsys.readouterr().out


def test_shipped_default_matches_its_manifest():
    manifest = verify_default()  # the packaged ONNX's sha256 is the manifest's
    assert manifest["evaluation"]["map"] >= 0.60 and manifest["evaluation"]["num_images"] >= 200
    assert manifest["training"]["wall_s"] <= 15 * 60
    model = manifest["model"]
    session = ort.InferenceSession(str(default_model_path()), providers=["CPUExecutionProvider"])
    size = model["imgsz"]
    y = session.run(None, {"images": np.full((1, 3, size, size), 0.45, np.float32)})[0]
    cells = sum((size // s) ** 2 for s in (8, 16, 32))
    assert y.shape == (1, 3 * cells, 5 + model["num_classes"])
    assert len(manifest["classes"]) == model["num_classes"]
