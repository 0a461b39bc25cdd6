import json
from pathlib import Path

import pytest

from bench.atomic import atomic_write_text
from bench.cache import ArtifactCache, cache_key, file_sha256


def test_second_call_reuses_the_artifact(tmp_path: Path):
    cache, calls = ArtifactCache(tmp_path), []

    def build(out: Path):
        calls.append(out)
        out.write_bytes(b"model-bytes")
        return {"amax": {"x": 1.5}}

    first = cache.get_or_build("int8", {"model": "abc", "variant": "int8-max"}, ".onnx", build)
    second = cache.get_or_build("int8", {"model": "abc", "variant": "int8-max"}, ".onnx", build)
    assert len(calls) == 1 and not first.cached and second.cached
    assert second.path == first.path and second.path.read_bytes() == b"model-bytes"
    assert second.meta == {"amax": {"x": 1.5}}


def test_any_changed_part_builds_anew(tmp_path: Path):
    cache = ArtifactCache(tmp_path)
    paths = {cache.get_or_build("int8", {"model": "abc", "percentile": p}, ".onnx",
                                lambda out: out.write_bytes(b"x") and None).path
             for p in (99.9, 99.99)}
    assert len(paths) == 2


def test_failed_build_leaves_nothing_behind(tmp_path: Path):
    cache = ArtifactCache(tmp_path)

    def build(out: Path):
        out.write_bytes(b"half")
        raise RuntimeError("calibration crashed")

    with pytest.raises(RuntimeError):
        cache.get_or_build("int8", {"model": "abc"}, ".onnx", build)
    assert not any(p.is_file() for p in (tmp_path / "int8").rglob("*"))


def test_key_is_order_independent_and_hash_memoised(tmp_path: Path):
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1})
    model = tmp_path / "m.onnx"
    model.write_bytes(b"abc")
    assert file_sha256(model) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path, monkeypatch):
    target = tmp_path / "report.json"
    atomic_write_text(target, json.dumps({"ok": 1}))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "{half")
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
