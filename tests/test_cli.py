"""The `bench` command's own subcommands (report/compare/baseline have tests in report/)."""

import onnx
import pytest

from bench.cli import main
from bench.quant.qdq import quantized_tensor_set


def test_build_writes_a_tensorrt_qdq_model(tmp_path, tiny_detector, tiny_coco, monkeypatch,
                                           capsys):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BENCH_CALIB_COUNT", "4")
    out = tmp_path / "int8.onnx"
    assert main(["build", "int8-mse", "--model", str(tiny_detector), "--coco",
                 str(tiny_coco), "--out", str(out)]) == 0
    assert "int8-mse: wrote" in capsys.readouterr().out
    model = onnx.load(str(out))
    zero_points = {i.name: i.data_type for i in model.graph.initializer
                   if i.name.endswith("zero_point")}
    assert quantized_tensor_set(model) and zero_points
    # tensorrt profile: every activation zero point is int8 (s8 symmetric)
    assert set(zero_points.values()) == {onnx.TensorProto.INT8}


def test_build_refuses_a_missing_output_folder_before_building(tmp_path, capsys):
    assert main(["build", "int8-max", "--out", str(tmp_path / "nope" / "x.onnx")]) == 2
    assert "option --out: folder" in capsys.readouterr().err


def test_env_lists_versions_engines_and_power(capsys):
    import importlib.metadata

    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "engine onnxruntime  cpu   ok" in out and "power  auto picks" in out
    ort = importlib.metadata.version("onnxruntime")
    assert f"runtime onnxruntime      onnxruntime {ort}" in out
    assert "runtime tensorrt         " in out and "sensors pynvml" in out


def test_module_versions_come_from_metadata_without_importing():
    import sys

    from bench.cli import module_versions

    sys.modules.pop("pycocotools", None)
    found = module_versions(["pycocotools", "no_such_module_here"])
    assert found["pycocotools"].startswith("pycocotools ") and "pycocotools" not in sys.modules
    assert found["no_such_module_here"] is None


def test_version(capsys):
    from bench import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and f"bench {__version__}" in capsys.readouterr().out


def test_unknown_variant_is_an_argparse_error():
    with pytest.raises(SystemExit) as exc:
        main(["build", "int4", "--out", "x.onnx"])
    assert exc.value.code == 2
