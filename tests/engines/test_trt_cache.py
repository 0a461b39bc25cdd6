"""Engine cache keys, layout and staleness, with real files in tmp_path."""

import dataclasses
import json

import pytest

from bench.engines.trt_cache import (
    EngineIdentity,
    engine_cache_dir,
    engine_cache_key,
    engine_paths,
    load_cached_engine,
    read_timing_cache,
    store_engine,
    timing_cache_path,
)
from bench.engines.trt_settings import builder_settings

PLAN = b"\x00serialized-plan\xff" * 64


def identity(**changes) -> EngineIdentity:
    base = EngineIdentity(model_sha256="a" * 64, kind="fp16", trt_version="10.3.0.30",
                          gpu_name="Orin", compute_capability="8.7",
                          settings=builder_settings("fp16", "10.3.0.30"))
    return dataclasses.replace(base, **changes)


def key_of(ident: EngineIdentity) -> str:
    return engine_cache_key(ident.model_sha256, ident.kind, ident.trt_version, ident.gpu_name,
                            ident.compute_capability, ident.settings,
                            calibration_id=ident.calibration_id)


def test_key_is_stable_and_file_name_safe():
    assert key_of(identity()) == key_of(identity()) == identity().key
    odd = identity(kind="fp16", gpu_name="NVIDIA GeForce RTX 4090 / x")
    assert "/" not in odd.key and " " not in odd.key
    assert odd.key.startswith("fp16-trt10.3.0.30-")


@pytest.mark.parametrize("changes", [
    {"model_sha256": "b" * 64},
    {"kind": "qdq", "settings": builder_settings("qdq", "10.3.0.30")},
    {"trt_version": "10.3.0.31"},
    {"gpu_name": "NVIDIA H100 80GB HBM3"},
    {"compute_capability": "9.0"},
    {"calibration_id": "calib-64-abc"},
    {"settings": builder_settings("fp16", "10.3.0.30", batch=4)},
    {"settings": builder_settings("fp16", "10.3.0.30", workspace_bytes=2 << 30)},
    {"settings": builder_settings("fp16", "10.3.0.30", image_size=320)},
    {"settings": builder_settings("fp32", "10.3.0.30")},
    {"settings": builder_settings("fp16", "10.3.0.30", profiling_verbosity="DETAILED")},
])
def test_key_changes_with_each_field(changes):
    assert identity(**changes).key != identity().key


def test_keys_of_many_identities_are_distinct():
    versions = ["8.6.2.3", "10.3.0", "10.8.0"]
    keys = {identity(trt_version=v, settings=builder_settings(kind, v), kind=kind).key
            for v in versions for kind in ("fp32", "fp16", "qdq")}
    assert len(keys) == 9


def test_store_then_load_is_a_hit(tmp_path):
    path = store_engine(tmp_path, identity(), PLAN, build_s=12.5)
    assert path.read_bytes() == PLAN
    lookup = load_cached_engine(tmp_path, identity())
    assert lookup.hit and lookup.plan == PLAN and lookup.path == path
    record = json.loads(engine_paths(tmp_path, identity().key)[1].read_text())
    assert record["trt_version"] == "10.3.0.30" and record["gpu_name"] == "Orin"
    assert record["engine_bytes"] == len(PLAN) and record["build_s"] == 12.5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_engine_means_rebuild(tmp_path):
    lookup = load_cached_engine(tmp_path, identity())
    assert not lookup.hit and lookup.reason == "no cached engine"
    store_engine(tmp_path, identity(), PLAN, 1.0)
    for changed in (identity(trt_version="10.8.0"), identity(gpu_name="Xavier"),
                    identity(model_sha256="c" * 64)):
        assert not load_cached_engine(tmp_path, changed).hit


@pytest.mark.parametrize("field, foreign", [
    ("trt_version", "8.6.2.3"),
    ("gpu_name", "Xavier"),
    ("compute_capability", "7.2"),
    ("model_sha256", "d" * 64),
    ("kind", "fp32"),
])
def test_foreign_sidecar_under_our_key_means_rebuild(tmp_path, field, foreign):
    # An engine copied from another rig into the cache folder, under the name we look for.
    store_engine(tmp_path, identity(), PLAN, 1.0)
    sidecar = engine_paths(tmp_path, identity().key)[1]
    record = json.loads(sidecar.read_text())
    record[field] = foreign
    sidecar.write_text(json.dumps(record))
    lookup = load_cached_engine(tmp_path, identity())
    assert not lookup.hit
    assert field in lookup.reason and foreign in lookup.reason


def test_settings_mismatch_in_sidecar_means_rebuild(tmp_path):
    store_engine(tmp_path, identity(), PLAN, 1.0)
    sidecar = engine_paths(tmp_path, identity().key)[1]
    record = json.loads(sidecar.read_text())
    record["settings"]["builder_flags"] = ["FP16", "INT8"]
    sidecar.write_text(json.dumps(record))
    lookup = load_cached_engine(tmp_path, identity())
    assert not lookup.hit and "settings" in lookup.reason


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_corrupt_engine_file_means_rebuild(tmp_path, damage):
    path = store_engine(tmp_path, identity(), PLAN, 1.0)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[10] ^= 0xFF
    elif damage == "truncate":
        data = data[:-7]
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    lookup = load_cached_engine(tmp_path, identity())
    assert not lookup.hit and "sha256" in lookup.reason


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_corrupt_sidecar_means_rebuild(tmp_path, text):
    store_engine(tmp_path, identity(), PLAN, 1.0)
    engine_paths(tmp_path, identity().key)[1].write_text(text)
    assert not load_cached_engine(tmp_path, identity()).hit


def test_engine_without_sidecar_means_rebuild(tmp_path):
    store_engine(tmp_path, identity(), PLAN, 1.0)
    engine_paths(tmp_path, identity().key)[1].unlink()
    assert load_cached_engine(tmp_path, identity()).reason == "no cached engine"


def test_restore_after_rebuild_is_a_hit_again(tmp_path):
    path = store_engine(tmp_path, identity(), PLAN, 1.0)
    path.write_bytes(b"garbage")
    assert not load_cached_engine(tmp_path, identity()).hit
    store_engine(tmp_path, identity(), PLAN + b"v2", 2.0)
    assert load_cached_engine(tmp_path, identity()).plan == PLAN + b"v2"


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert engine_cache_dir() == tmp_path / "xdg" / "bench" / "engines"
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "env"))
    assert engine_cache_dir() == tmp_path / "env" / "engines"
    assert engine_cache_dir(tmp_path / "opt") == tmp_path / "opt" / "engines"


def test_default_cache_dir_is_under_home(monkeypatch, tmp_path):
    monkeypatch.delenv("BENCH_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert engine_cache_dir() == tmp_path / ".cache" / "bench" / "engines"


def test_timing_cache_per_trt_version_and_gpu(tmp_path):
    a = timing_cache_path(tmp_path, "10.3.0", "Orin", "8.7")
    assert a == timing_cache_path(tmp_path, "10.3.0", "Orin", "8.7")
    assert a.parent == tmp_path / "timing"
    others = {timing_cache_path(tmp_path, "10.8.0", "Orin", "8.7"),
              timing_cache_path(tmp_path, "10.3.0", "Xavier", "8.7"),
              timing_cache_path(tmp_path, "10.3.0", "Orin", "7.2")}
    assert a not in others and len(others) == 3
    assert read_timing_cache(a) == b""
    a.parent.mkdir()
    a.write_bytes(b"tactics")
    assert read_timing_cache(a) == b"tactics"
