"""Content-addressed artifact cache.

An artifact (an FP16 or Q/DQ ONNX, a TensorRT engine) is stored under the hash of
everything that determines its bytes: the source model's hash, the variant, the
calibration settings, and the versions of the tools that built it. A second run with the
same inputs reuses the file; any change builds a new one beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.atomic import atomic_write_text

_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime) so big models hash once a run."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _HASHES[memo] = digest.hexdigest()
    return _HASHES[memo]


def cache_key(parts: Mapping[str, Any]) -> str:
    canonical = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Artifact:
    """A built (or reused) file and how it came to be."""

    path: Path
    bytes: int
    build_s: float
    cached: bool
    meta: dict[str, Any] = field(default_factory=dict)


class ArtifactCache:
    """Files under root/<kind>/<key><suffix>, each with a <key>.json sidecar."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def get_or_build(self, kind: str, parts: Mapping[str, Any], suffix: str,
                     build: Callable[[Path], Mapping[str, Any] | None]) -> Artifact:
        """Return the cached artifact for parts, or call build(tmp_path) and store it.

        build writes the artifact to the path it is given and may return metadata
        (calibration amax, timings) that is kept in the sidecar.
        """
        key = cache_key(parts)
        folder = self.root / kind
        path, sidecar = folder / f"{key}{suffix}", folder / f"{key}.json"
        if path.is_file() and sidecar.is_file():
            record = json.loads(sidecar.read_text())
            return Artifact(path, path.stat().st_size, record["build_s"], True, record["meta"])
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            tmp_path = Path(tmp) / f"artifact{suffix}"
            meta = dict(build(tmp_path) or {})
            build_s = time.perf_counter() - start
            os.replace(tmp_path, path)
        atomic_write_text(sidecar, json.dumps(
            {"parts": parts, "build_s": build_s, "meta": meta}, indent=1, default=str))
        return Artifact(path, path.stat().st_size, build_s, False, meta)
