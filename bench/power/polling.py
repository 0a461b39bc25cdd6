"""A sampler that polls its source in a background thread.

Subclasses say how to open the source, read one sample and summarise the window; this
class owns the thread, the timing and the rule that a failing source never fails the
benchmark: whatever goes wrong, stop() returns a reading (empty, with the reason).
"""

from __future__ import annotations

import abc
import threading
import time
from typing import Any

from bench.errors import BenchError
from bench.power.base import DEFAULT_INTERVAL_S, PowerOptions, PowerReading, Sampler, one_line

__all__ = ["DEFAULT_INTERVAL_S", "PollingSampler"]


class PollingSampler(Sampler):
    """start() opens the source and takes the first sample; stop() summarises the window."""

    # True where a read can be taken on demand (a counter, NVML): stop() reads once more
    # so the window ends exactly at stop(). jtop pushes samples on its own clock instead.
    final_sample = True

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S):
        if interval_s <= 0:
            raise ValueError(f"power sampling interval must be > 0 s, got {interval_s}")
        self.interval_s = float(interval_s)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._reset()

    @classmethod
    def from_options(cls, options: PowerOptions) -> PollingSampler:
        return cls(options.interval_s)

    # -- what a source implements ------------------------------------------------------

    @abc.abstractmethod
    def _open(self) -> None:
        """Connect to the source; raise with a one-line message when it cannot be read."""

    @abc.abstractmethod
    def _read(self) -> dict[str, float]:
        """One sample: a value per rail or domain (W, or cumulative J for counters)."""

    @abc.abstractmethod
    def _summarize(self, t0: float, t1: float) -> PowerReading:
        """The reading for the window [t0, t1] from self._times / self._values."""

    def _close(self) -> None:
        """Release the source; called once after the last sample."""

    def _wait(self) -> bool:
        """Pace the loop; False when stop() was asked for."""
        return not self._stopping.wait(self.interval_s)

    # -- the sampling loop -------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.source} sampler already started")
        self._reset()
        try:
            self._open()
            self._opened = True
            self._t0 = time.monotonic()
            self._take()
        except Exception as exc:  # a sensor that cannot be read must not fail the run
            self._fail("cannot start", exc)
            return
        self._thread = threading.Thread(target=self._loop, name=f"power-{self.source}", daemon=True)
        self._thread.start()

    def stop(self) -> PowerReading:
        t1 = time.monotonic()
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 5 * self.interval_s))
            self._thread = None
        self._drop_after(t1)  # a tick that landed while the thread was being stopped
        if self._error is None and self.final_sample and self._opened:
            t1 = self._guarded_take(t1)
        reading = self._reading(t1)  # before closing: a summary may still query the source
        self._close_quietly()
        return reading

    def _loop(self) -> None:
        try:
            while self._wait():
                self._take()
        except Exception as exc:
            self._fail(f"failed after {len(self._times)} samples", exc)

    def _drop_after(self, t1: float) -> None:
        while len(self._times) > 1 and self._times[-1] > t1:
            self._times.pop()
            self._values.pop()

    def _take(self) -> float:
        values = self._read()
        now = time.monotonic()
        self._times.append(now)
        self._values.append(values)
        return now

    def _guarded_take(self, fallback: float) -> float:
        try:
            return self._take()
        except Exception as exc:
            self._fail(f"failed on the last read after {len(self._times)} samples", exc)
            return fallback

    def _reading(self, t1: float) -> PowerReading:
        if self._error is not None:
            return PowerReading.empty(self.source, self._error, interval_s=self.interval_s)
        if not self._times:
            return PowerReading.empty(self.source, f"{self.source}: stop() without start()")
        try:
            return self._summarize(self._t0, t1)
        except Exception as exc:
            return PowerReading.empty(self.source, f"{self.source}: cannot summarise: {exc}")

    def _fail(self, what: str, exc: BaseException) -> None:
        if self._error is None:
            detail = one_line(str(exc))
            if not isinstance(exc, BenchError):  # our own messages already say what failed
                detail = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
            self._error = f"{self.source}: {what}: {detail}"

    def _close_quietly(self) -> None:
        if not self._opened:
            return
        self._opened = False
        try:
            self._close()
        except Exception:  # noqa: S110 - the window is measured; a failed release changes nothing
            pass

    def _reset(self) -> None:
        self._times: list[float] = []
        self._values: list[dict[str, Any]] = []
        self._error: str | None = None
        self._opened = False
        self._t0 = 0.0
        self._stopping.clear()
