"""Atomic file replacement: a reader sees the old file or the new one, never half of one.

Each write goes to a temporary file in the same directory (same file system, so
os.replace is atomic), is flushed and fsynced, then renamed over the target. On any
error the temporary file is removed and the old file is left as it was.

Temporary names start with TMP_PREFIX, so that what a killed process left behind is
recognisable: sweep_stale removes such leftovers (only those, and only old ones).
The final file gets the permissions of any newly created file (0666 & ~umask), not
the 0600 of tempfile.mkstemp. A write that fails for lack of space or permission
raises OutputError naming the path that was being written.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from bench.errors import BenchError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; callers fall back to age alone
    fcntl = None  # type: ignore[assignment]

HAVE_LOCKS = fcntl is not None
_NO_LOCKS = {getattr(errno, n) for n in ("ENOLCK", "EOPNOTSUPP", "ENOSYS") if hasattr(errno, n)}

TMP_PREFIX = ".bench-tmp-"
DEFAULT_STALE_S = 3600.0
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
_REASONS = {
    getattr(errno, name): reason for name, reason in (
        ("ENOSPC", "no space left on the device"), ("EDQUOT", "disk quota exceeded"),
        ("EACCES", "permission denied"), ("EPERM", "operation not permitted"),
        ("EROFS", "read-only file system"),
        ("EFBIG", "file too large"), ("ENOTDIR", "a parent is not a folder"),
        ("EEXIST", "a parent is not a folder"))
    if hasattr(errno, name)
}


class OutputError(BenchError, OSError):
    """A file or folder the harness writes cannot be written (disk full, no permission).

    Also an OSError, so callers that already catch OSError keep working.
    """

    kind = "output"

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "cannot write"


def output_error(path: Path, exc: OSError, doing: str = "cannot write") -> OutputError:
    """An OutputError naming path, with the system's reason in words."""
    reason = _REASONS.get(exc.errno or -1) or exc.strerror or str(exc)
    err = OutputError(f"{doing} {path}: {reason}")
    err.errno, err.filename = exc.errno, str(path)
    return err


def temp_name(name: str) -> str:
    """A fresh name for a temporary file or folder that belongs to target `name`."""
    return f"{TMP_PREFIX}{name}.{os.getpid()}.{secrets.token_hex(4)}"


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    # os.open applies the umask itself, as for any new file (mkstemp would force 0600).
    for _ in range(100):
        tmp = folder / temp_name(name)
        try:
            return os.open(tmp, _OPEN_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(folder / name))


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call write(file) on a temporary file, then move it over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path.parent, path.name)
    except OSError as exc:
        raise output_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        _remove_quietly(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise output_error(path, exc) from exc
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
    tmp = link.with_name(temp_name(link.name))
    try:
        os.symlink(target, tmp)
    except OSError:
        return atomic_write_text(link, f"{target}\n")
    try:
        os.replace(tmp, link)
    except BaseException as exc:
        _remove_quietly(tmp)
        if isinstance(exc, OSError):
            raise output_error(link, exc) from exc
        raise
    return link


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on path (created, and kept, if absent) while inside.

    Released when the block ends or the process dies, however it dies. Where the platform
    or the file system has no advisory locks this is a no-op (what is locked stays
    correct without it, only possibly done twice).
    """
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise output_error(Path(path), exc, "cannot create the lock file") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:  # a file system without locks (some network mounts)
            if exc.errno not in _NO_LOCKS:
                raise output_error(Path(path), exc, "cannot lock") from exc
        yield
    finally:
        os.close(fd)


def lock_is_held(path: Path) -> bool:
    """Whether some open file (in any process) holds file_lock(path) now."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def sweep_stale(folder: Path, max_age_s: float = DEFAULT_STALE_S,
                keep: Callable[[Path], bool] | None = None,
                prefix: str = TMP_PREFIX) -> list[Path]:
    """Remove prefix* files, links and folders directly in folder older than max_age_s.

    Only names with this harness's prefix are touched; keep(path) -> True spares one
    (e.g. a temporary folder whose build is still running). Returns what was removed;
    entries that vanish or cannot be removed meanwhile are skipped.
    """
    removed: list[Path] = []
    now = time.time()
    try:
        entries = [p for p in Path(folder).iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        try:
            if now - entry.lstat().st_mtime < max_age_s or (keep is not None and keep(entry)):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    return removed


def writer_alive(entry: Path) -> bool:
    """Whether the process that named the temporary `entry` (temp_name: ...<pid>.<hex>)
    may still be writing it: its pid runs on this machine, or the name carries no pid.
    A folder shared with other machines should rely on age alone (sweep_stale)."""
    parts = Path(entry).name.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return True
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (EPERM): alive
        return True
    return True


def _remove_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
