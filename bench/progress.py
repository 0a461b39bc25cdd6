"""Progress bars that never overwrite anyone else's output.

Every bar of the harness comes from `bar(...)` (calibration, QAT, the accuracy pass, the
dataset generator), so one place decides where bars draw:

- no bar at all when the output is not an interactive terminal (CI logs, pipes, files),
  whatever the colour settings, and none when TERM is "dumb";
- standalone (the `bench` command, scripts): tqdm on stderr when stderr is a terminal;
- under pytest, the suite's plugin installs a `Surface` (see `use_surface`): a bar then
  draws on a line of its own below pytest's current line and, once closed, clears that
  line and puts the cursor back at the end of pytest's line, so that pytest's progress
  line, `-v` test ids and failure summaries come out intact.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm

CURSOR_UP = "\x1b[1A"
CLEAR_LINE = "\r\x1b[2K"


def is_interactive(stream: IO[str] | None) -> bool:
    """True when `stream` is a terminal a bar may redraw on (not a pipe, file or dumb TERM)."""
    if stream is None or os.environ.get("TERM", "") == "dumb":
        return False
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False


class Surface:
    """Where bars draw while another writer owns the current terminal line.

    `stream` is the terminal; `column` returns how many characters the owner has written
    on its current line (so the cursor can be put back there); `flush` pushes the owner's
    buffered output out before a bar draws.
    """

    def __init__(self, stream: IO[str], column: Callable[[], int],
                 width: Callable[[], int], flush: Callable[[], None] = lambda: None):
        self.stream = stream
        self._column = column
        self._width = width
        self._flush = flush
        self.depth = 0
        self._saved = 0

    def enter(self) -> int:
        """A bar opens: the first one moves to a fresh line. Returns the bar's position."""
        if self.depth == 0:
            self._flush()
            self._saved = self._column() % max(1, self._width())
            self.stream.write("\n")
            self.stream.flush()
        self.depth += 1
        return self.depth - 1

    def leave(self) -> None:
        """A bar closed: the last one clears its line and returns to the owner's column."""
        self.depth = max(0, self.depth - 1)
        if self.depth == 0:
            self.stream.write(f"{CLEAR_LINE}{CURSOR_UP}\x1b[{self._saved + 1}G")
            self.stream.flush()


_surface: Surface | None = None
_enabled = True


def use_surface(surface: Surface | None, enabled: bool = True) -> None:
    """Install where bars draw (None: back to stderr-when-a-terminal); `enabled` False
    turns every bar off (--no-progress, -qq, non-interactive output)."""
    global _surface, _enabled
    _surface, _enabled = surface, enabled


class _SurfaceBar(tqdm):
    """A tqdm bar that tells its surface when it opens and closes."""

    def __init__(self, *args: Any, surface: Surface, **kwargs: Any):
        self._surface = surface
        self._open = False
        position = surface.enter()
        self._open = True
        try:
            super().__init__(*args, file=surface.stream, position=position, leave=False,
                             dynamic_ncols=True, **kwargs)
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if getattr(self, "_open", False):
            self._open = False
            self._surface.leave()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release()


def bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
        unit: str = "it", enabled: bool = True) -> tqdm:
    """A progress bar (a tqdm object: iterate it, or call .update(n) and .close()).

    Call it wherever a bar is wanted, with `enabled` = the caller's own progress flag;
    whether it shows is decided here. Use it as a context manager or close it, so that
    the line is handed back.
    """
    surface = _surface
    show = enabled and _enabled
    if show and surface is not None:
        return _SurfaceBar(iterable, total=total, desc=desc, unit=unit, surface=surface)
    show = show and surface is None and is_interactive(sys.stderr)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not show, leave=False,
                file=sys.stderr)


@contextlib.contextmanager
def surface_installed(surface: Surface | None, enabled: bool = True) -> Iterator[None]:
    """use_surface for the duration of a block (tests, the CLI)."""
    previous = (_surface, _enabled)
    use_surface(surface, enabled)
    try:
        yield
    finally:
        use_surface(*previous)
