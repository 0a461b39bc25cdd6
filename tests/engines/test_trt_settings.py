"""Builder settings per artifact kind and per TensorRT version (pure logic, no TensorRT here)."""

import pytest

from bench.engines.trt_settings import (
    BuilderSettings,
    builder_settings,
    deprecation_note,
    parse_trt_version,
    precision_flag_note,
    profile_shapes,
)
from bench.errors import ConfigError, EngineUnavailable

WEAK = ["8.6.1", "8.6.2.3", "10.3.0", "10.8", "10.13.0.35"]
STRONG = ["11.0", "11.4.1"]


def test_parse_version_accepts_jetpack_and_wheel_spellings():
    for text, expected in (("8.6.2.3", (8, 6)), ("10.8", (10, 8)), ("11.0.0.post1", (11, 0))):
        version = parse_trt_version(text)
        assert (version.major, version.minor) == expected and version.text == text
    for bad in ("", "ten", "10", "v10.3"):
        with pytest.raises(ConfigError, match="expected a version"):
            parse_trt_version(bad)


def test_older_than_8_6_is_unavailable_with_reason():
    with pytest.raises(EngineUnavailable, match="8.5.2 is older than 8.6"):
        builder_settings("fp32", "8.5.2")


@pytest.mark.parametrize("version", ["8.6.1", "8.6.2.3"])
def test_trt8_needs_explicit_batch_flag(version):
    for kind, calibrator in (("fp32", None), ("fp16", None), ("qdq", None),
                             ("trt-implicit", "minmax")):
        settings = builder_settings(kind, version, calibrator=calibrator)
        assert settings.network_flags == ("EXPLICIT_BATCH",)


@pytest.mark.parametrize("version", ["10.3.0", "10.8", "11.0"])
def test_trt10_and_later_pass_no_explicit_batch(version):
    # Deprecated and ignored in 10 (networks are always explicit batch).
    for kind in ("fp32", "fp16", "qdq"):
        assert "EXPLICIT_BATCH" not in builder_settings(kind, version).network_flags


@pytest.mark.parametrize("version", WEAK)
def test_weakly_typed_flags(version):
    assert builder_settings("fp32", version).builder_flags == ()
    assert builder_settings("fp16", version).builder_flags == ("FP16",)
    fp16 = builder_settings("fp16", version)
    assert fp16.onnx == "fp32" and not fp16.strongly_typed
    settings = builder_settings("qdq", version)
    assert settings.onnx == "qdq"
    assert settings.builder_flags == ("INT8", "FP16")
    assert not settings.needs_calibrator


@pytest.mark.parametrize("version", WEAK)
@pytest.mark.parametrize("name, calibrator", [("entropy2", "IInt8EntropyCalibrator2"),
                                              ("minmax", "IInt8MinMaxCalibrator")])
def test_implicit_calibrators_until_10(version, name, calibrator):
    settings = builder_settings("trt-implicit", version, calibrator=name)
    assert settings.needs_calibrator and settings.calibrator == calibrator
    assert settings.onnx == "fp32"  # TensorRT calibrates the plain model itself
    assert "INT8" in settings.builder_flags
    note = deprecation_note(settings, version)
    assert (note is None) == version.startswith("8.")
    if note:
        assert "deprecated since TensorRT 10.1" in note
        assert ("deprecates BuilderFlag.INT8/BuilderFlag.FP16" in note) == (version == "10.13.0.35")


@pytest.mark.parametrize("version", STRONG)
def test_trt11_is_strongly_typed_without_precision_flags(version):
    for kind in ("fp32", "fp16", "qdq"):
        settings = builder_settings(kind, version)
        assert settings.strongly_typed
        assert settings.builder_flags == ()
        assert settings.network_flags == ()
    assert builder_settings("fp16", version).onnx == "fp16"  # no FP16 flag any more
    assert builder_settings("qdq", version).onnx == "qdq"


@pytest.mark.parametrize("version", STRONG)
@pytest.mark.parametrize("calibrator", ["entropy2", "minmax"])
def test_trt11_implicit_calibration_unavailable_with_reason(version, calibrator):
    with pytest.raises(EngineUnavailable) as info:
        builder_settings("trt-implicit", version, calibrator=calibrator)
    message = str(info.value)
    assert "removed implicit INT8 calibration" in message and version in message
    assert "\n" not in message


def test_unknown_kind_or_calibrator_is_config_error_naming_it():
    for bad in ("int8", "fp64", "int8-max", "FP16"):  # kinds, never variant names
        with pytest.raises(ConfigError, match=repr(bad)):
            builder_settings(bad, "10.3.0")
    for bad in (None, "percentile"):
        with pytest.raises(ConfigError, match=f"implicit calibrator {bad!r}"):
            builder_settings("trt-implicit", "10.3.0", calibrator=bad)


@pytest.mark.parametrize("version, flags, expected", [
    ("10.11.0", ("FP16",), None),
    ("10.12.0", ("FP16",), "BuilderFlag.FP16"),
    ("10.13.0.35", ("INT8", "FP16"), "BuilderFlag.INT8/BuilderFlag.FP16"),
    ("10.13.0.35", (), None),
    ("8.6.2", ("FP16",), None),
    ("11.0.0", (), None),
])
def test_precision_flag_note_from_10_12(version, flags, expected):
    note = precision_flag_note(version, flags)
    assert (note is None) == (expected is None)
    if note:
        assert f"deprecates {expected} (since 10.12; removed in 11)" in note


def test_sizes_are_checked_and_recorded():
    settings = builder_settings("fp16", "10.3.0", batch=4, max_batch=8,
                                workspace_bytes=256 << 20, image_size=320)
    assert (settings.min_batch, settings.opt_batch, settings.max_batch) == (1, 4, 8)
    assert settings.workspace_bytes == 256 << 20 and settings.image_size == 320
    assert builder_settings("fp32", "10.3.0", batch=2).max_batch == 2
    for kwargs in ({"batch": 0}, {"batch": 4, "max_batch": 2}, {"workspace_bytes": 1024},
                   {"image_size": 8}):
        with pytest.raises(ConfigError):
            builder_settings("fp32", "10.3.0", **kwargs)


def test_settings_are_frozen_and_serialisable():
    settings = builder_settings("qdq", "10.3.0")
    with pytest.raises(AttributeError):
        settings.kind = "fp32"
    as_dict = settings.as_dict()
    assert as_dict["builder_flags"] == ("INT8", "FP16")
    assert BuilderSettings(**as_dict) == settings


def test_profile_shapes_for_dynamic_and_static_inputs():
    settings = builder_settings("fp32", "10.3.0", batch=4, max_batch=16, image_size=320)
    assert profile_shapes((1, 3, 640, 640), settings) is None
    assert profile_shapes((-1, 3, 640, 640), settings) == (
        (1, 3, 640, 640), (4, 3, 640, 640), (16, 3, 640, 640))
    assert profile_shapes((-1, 3, -1, -1), settings)[2] == (16, 3, 320, 320)
    assert profile_shapes((2, -1, -1, -1), settings) == ((2, 3, 320, 320),) * 3
    with pytest.raises(ConfigError, match="4-D"):
        profile_shapes((-1, 3, 640), settings)


def test_tensorrt_builds_every_artifact_kind_the_registry_has():
    from bench.engines.trt_settings import IMPLICIT_CALIBRATORS, KINDS
    from bench.variants import ARTIFACT_KINDS, registry

    assert KINDS == ARTIFACT_KINDS  # engines keep no variant names, only these kinds
    for spec in registry().values():
        calibrator = spec.calibrator if spec.artifact == "trt-implicit" else None
        if calibrator is not None:
            assert calibrator in IMPLICIT_CALIBRATORS
        settings = builder_settings(spec.artifact, "10.3.0", calibrator=calibrator)
        assert settings.kind == spec.artifact
