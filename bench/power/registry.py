"""The power-source registry: source name -> sampler class.

Adding a source is one module (a Sampler subclass with unavailable_reason(options) and
from_options(options)) plus one line in SOURCES, or a register_source() call; AUTO_ORDER
says which sources "auto" probes, in order. Entries are "module:Class" strings so that
listing the sources imports none of them (jtop, NVML are imported lazily anyway).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.errors import ConfigError
from bench.lazy import resolve

if TYPE_CHECKING:
    from bench.power.base import Sampler

SOURCES: dict[str, str | type[Sampler]] = {
    "jtop": "bench.power.jtop:JtopSampler",
    "nvml": "bench.power.nvml:NvmlSampler",
    "rapl": "bench.power.rapl:RaplSampler",
    "none": "bench.power.none:NoneSampler",
}
# The board's rails, then the GPU, then the CPU package.
AUTO_ORDER: list[str] = ["jtop", "nvml", "rapl"]


def register_source(name: str, sampler: str | type[Sampler], *,
                    auto_before: str | None = None) -> None:
    """Add (or replace) a source; auto_before puts it in "auto"'s order before that one
    ("" appends it); None leaves it out of "auto"."""
    SOURCES[name] = sampler
    if auto_before is not None and name not in AUTO_ORDER:
        at = AUTO_ORDER.index(auto_before) if auto_before else len(AUTO_ORDER)
        AUTO_ORDER.insert(at, name)


def source_names() -> tuple[str, ...]:
    """Every name make_sampler accepts: "auto" and the registered sources."""
    return ("auto", *SOURCES)


def sampler_class(name: str) -> type[Sampler]:
    entry = SOURCES.get(name)
    if entry is None:
        raise ConfigError(f"power source {name!r} is unknown; expected one of "
                          f"{', '.join(source_names())}")
    return resolve(entry)
