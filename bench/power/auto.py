"""Choosing the power source: by name, or the first one this machine can read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.errors import ConfigError
from bench.power.base import Sampler, one_line
from bench.power.jtop import JtopSampler
from bench.power.none import NoneSampler
from bench.power.nvml import NvmlSampler
from bench.power.polling import DEFAULT_INTERVAL_S
from bench.power.rapl import DEFAULT_ROOT, RaplSampler

SOURCES = ("auto", "jtop", "nvml", "rapl", "none")
AUTO_ORDER = ("jtop", "nvml", "rapl")  # the board's rails, then the GPU, then the CPU package


def make_sampler(
    source: str = "auto",
    interval_s: float = DEFAULT_INTERVAL_S,
    *,
    rapl_root: Path | str = DEFAULT_ROOT,
    nvml_device: int = 0,
) -> Sampler:
    """A sampler for `source`; "auto" takes jtop, then NVML, then RAPL, else none.

    An explicitly named source that cannot be read here still gives a sampler: its
    reading is empty with the reason, so the benchmark runs on without power.
    """
    if source not in SOURCES:
        allowed = ", ".join(SOURCES)
        raise ConfigError(f"power source {source!r} is unknown; expected one of {allowed}")
    if not interval_s > 0:
        raise ConfigError(f"power sampling interval {interval_s!r} s must be > 0")
    builders, probes = _table(interval_s, Path(rapl_root), nvml_device)
    if source == "none":
        return NoneSampler()
    if source != "auto":
        return builders[source]()
    reasons = []
    for name in AUTO_ORDER:
        reason = _probe(name, probes[name])
        if reason is None:
            return builders[name]()
        reasons.append(reason)
    return NoneSampler("no power source: " + "; ".join(reasons))


def _table(
    interval_s: float, rapl_root: Path, nvml_device: int
) -> tuple[dict[str, Callable[[], Sampler]], dict[str, Callable[[], str | None]]]:
    builders: dict[str, Callable[[], Sampler]] = {
        "jtop": lambda: JtopSampler(interval_s),
        "nvml": lambda: NvmlSampler(interval_s, device_index=nvml_device),
        "rapl": lambda: RaplSampler(interval_s, root=rapl_root),
    }
    probes: dict[str, Callable[[], str | None]] = {
        "jtop": lambda: JtopSampler.unavailable_reason(interval_s),
        "nvml": lambda: NvmlSampler.unavailable_reason(nvml_device),
        "rapl": lambda: RaplSampler.unavailable_reason(rapl_root),
    }
    return builders, probes


def _probe(name: str, probe: Callable[[], str | None]) -> str | None:
    try:
        reason = probe()
    except Exception as exc:  # a probe must only ever say "no", never stop the run
        return one_line(f"{name}: {type(exc).__name__}: {exc}")
    return None if reason is None else one_line(reason)
