"""The TensorRT engine cache: keys, layout, and the rule that a stale engine is rebuilt.

Layout under <root>/engines (root: the `cache_dir` option, else $BENCH_CACHE_DIR, else
$XDG_CACHE_HOME/bench, else ~/.cache/bench):

    <key>.engine        the serialized plan
    <key>.json          its sidecar: what built it and the plan's own sha256
    timing/<gpu>_sm<cc>_trt<version>.cache   one timing cache per (TensorRT, GPU)

An engine is only valid for the TensorRT version and GPU that built it, so a cached plan is
loaded only when every field of its sidecar equals the current one and the file hashes to
what the sidecar says; anything else (missing, foreign, truncated) means rebuild.
No TensorRT import here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.atomic import atomic_write_bytes
from bench.engines.trt_settings import BuilderSettings

CACHE_SCHEMA = 2  # 2: keyed by artifact kind, not variant name


def engine_cache_dir(root: str | Path | None = None) -> Path:
    """The folder engines live in: <root>/engines (see the module docstring for root)."""
    if root is None:
        root = os.environ.get("BENCH_CACHE_DIR") or _xdg_cache() / "bench"
    return Path(root).expanduser() / "engines"


def _xdg_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def engine_cache_key(model_sha256: str, kind: str, trt_version: str, gpu_name: str,
                     compute_capability: str, settings: BuilderSettings, *,
                     calibration_id: str = "") -> str:
    """A file-name-safe key that changes with every field and is stable otherwise."""
    fields = _identity_fields(model_sha256, kind, trt_version, gpu_name,
                              compute_capability, settings, calibration_id)
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:32]
    return f"{_slug(kind)}-trt{_slug(trt_version)}-{digest}"


def _identity_fields(model_sha256: str, kind: str, trt_version: str, gpu_name: str,
                     compute_capability: str, settings: BuilderSettings,
                     calibration_id: str) -> dict[str, Any]:
    # Through JSON once, so that tuples compare equal to what a sidecar reads back (lists).
    settings_json = json.loads(json.dumps(settings.as_dict()))
    return {"schema": CACHE_SCHEMA, "model_sha256": model_sha256, "kind": kind,
            "trt_version": trt_version, "gpu_name": gpu_name,
            "compute_capability": str(compute_capability), "settings": settings_json,
            "calibration_id": calibration_id}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", str(text)).strip("_") or "x"


@dataclass(frozen=True)
class EngineIdentity:
    """What an engine was (or is to be) built from; the sidecar records exactly this."""

    model_sha256: str
    kind: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    settings: BuilderSettings
    calibration_id: str = ""

    @property
    def key(self) -> str:
        return engine_cache_key(self.model_sha256, self.kind, self.trt_version,
                                self.gpu_name, self.compute_capability, self.settings,
                                calibration_id=self.calibration_id)

    def fields(self) -> dict[str, Any]:
        return _identity_fields(self.model_sha256, self.kind, self.trt_version,
                                self.gpu_name, self.compute_capability, self.settings,
                                self.calibration_id)


@dataclass(frozen=True)
class CacheLookup:
    """The outcome of looking an engine up: the plan on a hit, else why it must be rebuilt."""

    path: Path
    reason: str
    plan: bytes | None = None

    @property
    def hit(self) -> bool:
        return self.plan is not None


def engine_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return Path(cache_dir) / f"{key}.engine", Path(cache_dir) / f"{key}.json"


def load_cached_engine(cache_dir: str | Path, identity: EngineIdentity) -> CacheLookup:
    """The cached plan if it is valid for identity; otherwise a miss saying why."""
    engine, sidecar = engine_paths(Path(cache_dir), identity.key)
    if not engine.is_file() or not sidecar.is_file():
        return CacheLookup(engine, "no cached engine")
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return CacheLookup(engine, f"sidecar {sidecar.name} is not readable JSON")
    mismatch = _sidecar_mismatch(record, identity.fields())
    if mismatch:
        return CacheLookup(engine, mismatch)
    plan = engine.read_bytes()
    if len(plan) != record.get("engine_bytes") or _sha256(plan) != record.get("engine_sha256"):
        return CacheLookup(engine, f"{engine.name} does not match its recorded size/sha256")
    return CacheLookup(engine, "cached", plan)


def _sidecar_mismatch(record: Any, expected: dict[str, Any]) -> str | None:
    if not isinstance(record, dict):
        return "sidecar is not a JSON object"
    for name, want in expected.items():
        got = record.get(name)
        if got != want:
            return f"cached engine's {name} is {_short(got)}, expected {_short(want)}"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def store_engine(cache_dir: str | Path, identity: EngineIdentity, plan: bytes,
                 build_s: float) -> Path:
    """Write plan and sidecar atomically (plan first, so a sidecar never lacks its plan)."""
    engine, sidecar = engine_paths(Path(cache_dir), identity.key)
    atomic_write_bytes(engine, plan)
    record = {**identity.fields(), "key": identity.key, "engine_bytes": len(plan),
              "engine_sha256": _sha256(plan), "build_s": round(build_s, 3),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_bytes(sidecar, json.dumps(record, indent=1, sort_keys=True).encode())
    return engine


def timing_cache_path(cache_dir: str | Path, trt_version: str, gpu_name: str,
                      compute_capability: str) -> Path:
    """One timing cache per (TensorRT version, GPU): timings do not carry across either."""
    name = f"{_slug(gpu_name)}_sm{_slug(compute_capability)}_trt{_slug(trt_version)}.cache"
    return Path(cache_dir) / "timing" / name


def read_timing_cache(path: Path) -> bytes:
    """The stored timing cache, or b'' (TensorRT then starts an empty one)."""
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
