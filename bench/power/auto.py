"""Choosing the power source: by name, or the first one this machine can read."""

from __future__ import annotations

from pathlib import Path

from bench.errors import ConfigError
from bench.power.base import DEFAULT_INTERVAL_S, DEFAULT_POWERCAP, PowerOptions, Sampler, one_line
from bench.power.registry import AUTO_ORDER, sampler_class, source_names

SOURCES = source_names()  # kept for callers that list them; the registry is the truth
DEFAULT_ROOT = DEFAULT_POWERCAP


def make_sampler(
    source: str = "auto",
    interval_s: float = DEFAULT_INTERVAL_S,
    *,
    rapl_root: Path | str = DEFAULT_POWERCAP,
    nvml_device: int | None = None,
    cuda_device: str | None = None,
) -> Sampler:
    """A sampler for `source`; "auto" takes the first of AUTO_ORDER (jtop, NVML, RAPL)
    that can be read here, else none.

    cuda_device ("cuda:1"): the engine's GPU, which NVML then finds by PCI bus id
    (nvml_device, an NVML index, overrides it). An explicitly named source that cannot
    be read here still gives a sampler: its reading is empty with the reason, so the
    benchmark runs on without power.
    """
    if source not in source_names():
        raise ConfigError(f"power source {source!r} is unknown; expected one of "
                          f"{', '.join(source_names())}")
    if not interval_s > 0:
        raise ConfigError(f"power sampling interval {interval_s!r} s must be > 0")
    options = PowerOptions(interval_s=interval_s, rapl_root=Path(rapl_root),
                           nvml_device=nvml_device, cuda_device=cuda_device)
    if source != "auto":
        return sampler_class(source).from_options(options)
    reasons = []
    for name in AUTO_ORDER:
        reason = _probe(name, options)
        if reason is None:
            return sampler_class(name).from_options(options)
        reasons.append(reason)
    none = sampler_class("none")
    return none("no power source: " + "; ".join(reasons))  # type: ignore[call-arg]


def _probe(name: str, options: PowerOptions) -> str | None:
    try:
        reason = sampler_class(name).unavailable_reason(options)
    except Exception as exc:  # a probe must only ever say "no", never stop the run
        return one_line(f"{name}: {type(exc).__name__}: {exc}")
    return None if reason is None else one_line(reason)
