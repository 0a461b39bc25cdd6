"""Content-addressed, verified artifact cache.

An artifact (an FP16 or Q/DQ ONNX, a TensorRT engine) is stored under the hash of
everything that determines its bytes: the source model's fingerprint, the variant, the
calibration images' fingerprint and settings, and the versions of the tools that built
it. A second run with the same inputs reuses the file; any change builds a new one.

Each artifact has a sidecar <key>.json that records its size and sha256; a hit is
checked against both every time, and a missing, truncated or altered file or an
unreadable sidecar is rebuilt, with the reason kept in Artifact.rebuilt. Builds run in
a .bench-tmp-* folder under a per-key lock, so concurrent runs that want the same
artifact build it once, and what a killed run left behind is swept when a cache opens.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.atomic import (
    HAVE_LOCKS,
    TMP_PREFIX,
    OutputError,
    atomic_write_text,
    file_lock,
    lock_is_held,
    output_error,
    sweep_stale,
    temp_name,
)
from bench.errors import BenchError

SIDECAR_FORMAT = 2
# Without advisory locks a live build cannot be told from a dead one: only age tells.
UNLOCKED_SWEEP_AGE_S = 24 * 3600.0
LEGACY_SWEEP_AGE_S = 3600.0  # tempfile.TemporaryDirectory folders of earlier versions
_LEGACY_TMP = re.compile(r"tmp[a-z0-9_]{8}")
_DISK_FULL = {getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(errno, n)}
_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime) so big models hash once a run."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _HASHES:
        _HASHES[memo] = _hash_file(path)[1]
    return _HASHES[memo]


def _hash_file(path: Path) -> tuple[int, str]:
    """(bytes read, sha256 hex) of a file, not memoised."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def cache_key(parts: Mapping[str, Any]) -> str:
    canonical = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Artifact:
    """A built (or reused) file and how it came to be.

    rebuilt says why a cached file was not reused (e.g. "cached file corrupt: sha256
    mismatch"); None for a hit, a first build, or a file used as given. sha256 is the
    file's verified hash where the cache produced it.
    """

    path: Path
    bytes: int
    build_s: float
    cached: bool
    meta: dict[str, Any] = field(default_factory=dict)
    rebuilt: str | None = None
    sha256: str | None = None


class ArtifactCache:
    """Files under root/<kind>/<key><suffix>, each with a <key>.json sidecar.

    Opening a cache sweeps leftovers of killed builds in its kind folders: .bench-tmp-*
    entries whose key lock no process holds (where the platform has no locks: older than
    a day), and empty tmpXXXXXXXX folders of earlier versions older than an hour.
    swept lists what was removed.
    """

    def __init__(self, root: Path, *, sweep: bool = True):
        self.root = Path(root)
        self.swept: list[Path] = self._sweep() if sweep else []

    def get(self, kind: str, parts: Mapping[str, Any], suffix: str) -> Artifact | None:
        """The verified cached artifact for parts, or None (absent, or not usable)."""
        key = cache_key(parts)
        folder = self.root / kind
        return _lookup(key, folder / f"{key}{suffix}", folder / f"{key}.json")[0]

    def get_or_build(self, kind: str, parts: Mapping[str, Any], suffix: str,
                     build: Callable[[Path], Mapping[str, Any] | None]) -> Artifact:
        """Return the cached artifact for parts, or call build(tmp_path) and store it.

        build writes the artifact to the path it is given and may return metadata
        (calibration amax, timings) that is kept in the sidecar.
        """
        key = cache_key(parts)
        folder = self.root / kind
        path, sidecar = folder / f"{key}{suffix}", folder / f"{key}.json"
        found, _ = _lookup(key, path, sidecar)
        if found is not None:
            return found
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error(folder, exc, "cannot create the cache folder") from exc
        with file_lock(folder / f"{key}.lock"):
            found, problem = _lookup(key, path, sidecar)  # a concurrent run may have built it
            if found is not None:
                return found
            return _build(key, parts, suffix, path, sidecar, build, problem)

    def _sweep(self) -> list[Path]:
        removed: list[Path] = []
        try:
            folders = [p for p in self.root.iterdir() if p.is_dir()]
        except OSError:
            return removed
        for folder in folders:
            if HAVE_LOCKS:
                removed += sweep_stale(folder, 0.0, keep=_build_alive)
            else:
                removed += sweep_stale(folder, UNLOCKED_SWEEP_AGE_S)
            removed += sweep_stale(folder, LEGACY_SWEEP_AGE_S, prefix="tmp", keep=_not_legacy)
        return removed


def _build_alive(entry: Path) -> bool:
    key = entry.name[len(TMP_PREFIX):].split(".", 1)[0]
    return lock_is_held(entry.parent / f"{key}.lock")


def _not_legacy(entry: Path) -> bool:
    return not (_LEGACY_TMP.fullmatch(entry.name) and entry.is_dir())


def _lookup(key: str, path: Path, sidecar: Path) -> tuple[Artifact | None, str | None]:
    """(the verified artifact, None), or (None, why it cannot be used; None if absent)."""
    has_file, has_sidecar = path.is_file(), sidecar.is_file()
    if not has_sidecar:
        return None, ("cached sidecar missing" if has_file else None)
    try:
        record = _read_sidecar(sidecar, key)
    except ValueError as exc:
        return None, f"cached sidecar unreadable: {exc}"
    if not has_file:
        return None, "cached file missing"
    try:
        size, sha = _hash_file(path)
    except OSError as exc:
        return None, f"cached file unreadable: {exc.strerror or exc}"
    if size != record["bytes"]:
        return None, (f"cached file corrupt: {size} bytes, sidecar records {record['bytes']}"
                      + (" (truncated)" if size < record["bytes"] else ""))
    if sha != record["sha256"]:
        return None, "cached file corrupt: sha256 mismatch"
    return Artifact(path, size, float(record["build_s"]), True, record["meta"],
                    sha256=sha), None


def _read_sidecar(sidecar: Path, key: str) -> dict[str, Any]:
    """The sidecar's record; ValueError saying what is wrong with it."""
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ValueError(f"holds a {type(record).__name__}, expected an object")
    if record.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"format {record.get('format')!r}, expected {SIDECAR_FORMAT}")
    if record.get("key") != key:
        raise ValueError(f"records key {record.get('key')!r}, expected {key}")
    checks = {"bytes": int, "sha256": str, "build_s": (int, float), "meta": dict}
    for name, kind in checks.items():
        if not isinstance(record.get(name), kind) or isinstance(record.get(name), bool):
            raise ValueError(f"{name!r} is {record.get(name)!r}")
    return record


def _build(key: str, parts: Mapping[str, Any], suffix: str, path: Path, sidecar: Path,
           build: Callable[[Path], Mapping[str, Any] | None], problem: str | None) -> Artifact:
    start = time.perf_counter()
    tmp_dir = path.parent / temp_name(key)
    try:
        tmp_dir.mkdir()
    except OSError as exc:
        raise output_error(tmp_dir, exc, "cannot create the build folder") from exc
    try:
        out = tmp_dir / f"artifact{suffix}"
        try:
            meta = dict(build(out) or {})
        except OSError as exc:
            if exc.errno in _DISK_FULL and not isinstance(exc, OutputError):
                raise output_error(path, exc) from exc
            raise
        build_s = time.perf_counter() - start
        if not out.is_file():
            raise BenchError(f"building {path.name} wrote nothing to {out}")
        size, sha = _hash_file(out)
        try:
            sidecar.unlink(missing_ok=True)  # an old sidecar must never pair with the new file
            os.replace(out, path)
        except OSError as exc:
            raise output_error(path, exc) from exc
        atomic_write_text(sidecar, json.dumps(
            {"format": SIDECAR_FORMAT, "key": key, "bytes": size, "sha256": sha,
             "build_s": build_s, "parts": parts, "meta": meta}, indent=1, default=str))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return Artifact(path, size, build_s, False, meta, rebuilt=problem, sha256=sha)
