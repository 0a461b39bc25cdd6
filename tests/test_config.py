from pathlib import Path

import pytest

from bench.config import BenchConfig, load_config
from bench.errors import ConfigError


def test_precedence_option_over_env_over_pyproject(tmp_path: Path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.bench]\neval-count = 5\ncalib_count = 7\nbatch = 3\n')
    cfg = load_config({"eval_count": 9}, env={"BENCH_CALIB_COUNT": "8"}, pyproject=pyproject)
    assert (cfg.eval_count, cfg.calib_count, cfg.batch) == (9, 8, 3)


def test_defaults_follow_yolov7_protocol():
    cfg = load_config({}, env={}, pyproject=None)
    assert (cfg.conf, cfg.iou, cfg.max_det) == (0.001, 0.65, 300)
    assert cfg.variants[0] == "fp32" and "int8-qat" in cfg.variants


@pytest.mark.parametrize("source", ["option", "env", "pyproject"])
def test_unknown_keys_rejected_everywhere(tmp_path: Path, source: str):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[tool.bench]\nbogus = 1\n" if source == "pyproject" else "")
    options = {"bogus": 1} if source == "option" else {}
    env = {"BENCH_BOGUS": "1"} if source == "env" else {}
    with pytest.raises(ConfigError, match="(?i)bogus"):
        load_config(options, env=env, pyproject=pyproject)


def test_bad_values_name_the_option():
    with pytest.raises(ConfigError, match="option variants: got 'int4'"):
        load_config({"variants": "fp32,int4"}, env={}, pyproject=None)
    with pytest.raises(ConfigError, match="option imgsz: got 'big'; expected an integer"):
        load_config({"imgsz": "big"}, env={}, pyproject=None)
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_config({"imgsz": "100"}, env={}, pyproject=None)
    with pytest.raises(ConfigError, match="percentile"):
        BenchConfig(percentile=0)
    with pytest.raises(ConfigError, match="option reference_every: got 0; expected a positive"):
        load_config({"reference_every": "0"}, env={}, pyproject=None)
    assert load_config({}, env={"BENCH_REFERENCE_EVERY": "3"}, pyproject=None).reference_every == 3


def test_profile_follows_backend():
    assert BenchConfig().profile == "cpu"
    assert BenchConfig(backend="tensorrt", device="cuda").profile == "tensorrt"
    assert BenchConfig(qdq_profile="tensorrt").profile == "tensorrt"


def test_lists_and_none_from_strings():
    cfg = load_config({"variants": "fp32, int8-mse", "eval_count": "none"}, env={},
                      pyproject=None)
    assert cfg.variants == ("fp32", "int8-mse") and cfg.eval_count is None
