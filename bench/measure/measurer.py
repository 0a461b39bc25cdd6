"""The latency pass: a variant timed in short blocks interleaved with references.

A shared machine's speed drifts by up to 2x within a minute, so no figure here is taken
far in time from what it is compared with. The variant's calls run in blocks; after each
block the fp32 reference and the fixed speed probe each run a block of their own:

    R0 P0 | V1 R1 P1 | V2 R2 P2 | ... | Vn Rn Pn

Variant block k is compared with its neighbours R(k-1), R(k) (the speedup) and P(k-1),
P(k) (latency normalised by the probe, which is what is compared across runs). With
per_reference > 1 (--reference-every), that many variant blocks run between two
reference blocks and share them (R0 P0 | V1 V2 R1 P1 | ...). Every
block starts settled: a few untimed calls, after a pause as long as the engine declares
(Engine.settle_pause_s). ONNX Runtime's intra-op pools spin after each call unless told to
stop, and a session that ran last then slows the next one by 30-50 % until it stops; its
engine stops them when a call returns, so it needs no pause.

Power is read over a window of its own (the variant alone, back to back), since the
interleaved pass also runs other models; it is skipped where no power source exists.
Nothing here knows rows or gates: a Measurement is raw timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from bench.engines.base import Engine
    from bench.power.base import PowerReading, Sampler

# timer(target, rounds, setup): call setup() then target() `rounds` times, timing target.
Timer = Callable[[Callable[[], object], int, Callable[[], object]], None]

SETTLE_CALLS = 1  # measured: one untimed call settles a session that does not spin on
MAX_SPAN_CALLS = 3  # a probe block runs at most this many times its usual calls
E2E_ROUNDS = 20


def plain_timer(target: Callable[[], object], rounds: int, setup: Callable[[], object]) -> None:
    """The timer outside pytest: the same protocol as pytest-benchmark's pedantic."""
    for _ in range(rounds):
        setup()
        target()


@dataclass(frozen=True)
class Blocks:
    """Block medians in ms: n variant blocks, in groups of per_reference, and one reference
    and probe block before each group and after the last (empty tuples when that
    reference was not run)."""

    variant_ms: tuple[float, ...]
    reference_ms: tuple[float, ...] = ()
    probe_ms: tuple[float, ...] = ()
    per_reference: int = 1

    def to_dict(self) -> dict[str, list[float] | int]:
        return {"variant_ms": list(self.variant_ms), "reference_ms": list(self.reference_ms),
                "probe_ms": list(self.probe_ms), "per_reference": self.per_reference}


@dataclass(frozen=True)
class Measurement:
    """Every timed call of one variant, its blocks, the end-to-end calls and power."""

    seconds: tuple[float, ...]
    blocks: Blocks
    e2e_seconds: tuple[float, ...]
    power: PowerReading
    power_calls: int  # calls inside the power window (0 when none was run)
    per_call: int  # images per call
    seconds_total: float  # wall time of the whole pass, settling and references included


class _Block:
    """Times `calls` calls of one engine after settling it; returns their median (ms)."""

    def __init__(self, engine: Engine, batch: np.ndarray):
        self.engine, self.batch = engine, batch

    def settle(self) -> None:
        if self.engine.settle_pause_s:
            time.sleep(self.engine.settle_pause_s)
        for _ in range(SETTLE_CALLS):
            self.engine.infer(self.batch)

    def run(self, calls: int, span_s: float = 0.0) -> float:
        """At least `calls` calls, and more until the block spans `span_s` (at most
        MAX_SPAN_CALLS x calls): a short probe samples the machine over as long a
        stretch as the variant's block did, so drift within a block cancels too."""
        self.settle()
        seconds: list[float] = []
        began = time.perf_counter()
        while len(seconds) < calls or (time.perf_counter() - began < span_s
                                       and len(seconds) < MAX_SPAN_CALLS * calls):
            start = time.perf_counter()
            self.engine.infer(self.batch)
            seconds.append(time.perf_counter() - start)
        return float(np.median(seconds) * 1000.0)


class Measurer:
    """Times one engine at a time against a reference engine and the speed probe.

    reference / probe: the fp32 engine, and the probe engine with its own input, opened by
    the caller, or None when they are not available (then the speedup, or the cross-run comparison,
    cannot be made and the caller says so).
    """

    def __init__(self, *, rounds: int, blocks: int, warmup: int, per_reference: int = 1):
        self.rounds, self.blocks, self.warmup = rounds, max(1, min(blocks, rounds)), warmup
        self.per_reference = max(1, per_reference)

    def measure(self, engine: Engine, batch: np.ndarray, *, reference: Engine | None,
                probe: tuple[Engine, np.ndarray] | None, sampler: Sampler,
                timer: Timer = plain_timer,
                end_to_end: Callable[[], object] | None = None) -> Measurement:
        began = time.perf_counter()
        for _ in range(self.warmup):
            engine.infer(batch)
        engine.reset_timings()  # GPU event times of this pass only
        seconds, blocks = self._interleaved(engine, batch, reference, probe, timer)
        power, power_calls = self._power_window(engine, batch, sampler)
        e2e = time_calls(end_to_end, min(E2E_ROUNDS, self.rounds)) if end_to_end else ()
        return Measurement(tuple(seconds), blocks, tuple(e2e), power, power_calls, len(batch),
                           time.perf_counter() - began)

    def _interleaved(self, engine: Engine, batch: np.ndarray, reference: Engine | None,
                     probe: tuple[Engine, np.ndarray] | None,
                     timer: Timer) -> tuple[list[float], Blocks]:
        size = -(-self.rounds // self.blocks)  # calls per block, rounded up
        ref_out: list[float] = []
        probe_out: list[float] = []
        start = time.perf_counter()
        engine.infer(batch)  # one more warm call, timed: the first probe block's span
        first_call = time.perf_counter() - start
        others = [(_Block(reference, batch), ref_out)] if reference is not None else []
        if probe is not None:
            others.append((_Block(*probe), probe_out))
        variant = _Block(engine, batch)
        seconds: list[float] = []
        block_medians: list[float] = []
        done = [0]

        def references() -> None:
            # the probe spans as long as the variant's blocks take (seconds of calls)
            span = float(np.sum(seconds[-size:])) if seconds else size * first_call
            for block, out in others:
                out.append(block.run(size, span if out is probe_out else 0.0))

        def setup() -> None:  # untimed: runs before every timed call
            if done[0] % size == 0:
                if done[0]:
                    block_medians.append(float(np.median(seconds[-size:]) * 1000.0))
                if len(block_medians) % self.per_reference == 0:
                    references()
                variant.settle()

        def target() -> None:
            start = time.perf_counter()
            engine.infer(batch)
            seconds.append(time.perf_counter() - start)
            done[0] += 1

        timer(target, self.rounds, setup)
        tail = done[0] - size * len(block_medians)  # calls of the block still open
        if tail > 0:
            block_medians.append(float(np.median(seconds[-tail:]) * 1000.0))
            references()
        return seconds, Blocks(tuple(block_medians), tuple(ref_out), tuple(probe_out),
                               self.per_reference)

    def _power_window(self, engine: Engine, batch: np.ndarray,
                      sampler: Sampler) -> tuple[PowerReading, int]:
        if sampler.source == "none":
            sampler.start()
            return sampler.stop(), 0
        sampler.start()
        try:
            for _ in range(self.rounds):
                engine.infer(batch)
        finally:
            reading = sampler.stop()
        return reading, self.rounds


def time_calls(call: Callable[[], object], rounds: int) -> list[float]:
    """Wall time of each of `rounds` calls (perf_counter)."""
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        timings.append(time.perf_counter() - start)
    return timings
