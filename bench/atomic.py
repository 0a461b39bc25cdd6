"""Atomic file replacement: a reader sees the old file or the new one, never half of one.

Each write goes to a temporary file in the same directory (same file system, so
os.replace is atomic), is flushed and fsynced, then renamed over the target. On any
error the temporary file is removed and the old file is left as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call write(file) on a temporary file, then move it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_symlink(link: Path, target: str | Path) -> Path:
    """Point `link` at `target` atomically (a new link renamed over the old one).

    Where symlinks are not allowed (some Windows setups) `link` becomes a text file that
    holds the target instead; readers accept both.
    """
    link = Path(link)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    _remove_quietly(tmp)
    try:
        os.symlink(target, tmp)
    except OSError:
        return atomic_write_text(link, f"{target}\n")
    try:
        os.replace(tmp, link)
    except BaseException:
        _remove_quietly(tmp)
        raise
    return link


def _remove_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
