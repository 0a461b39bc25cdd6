"""RAPL: x86 CPU energy counters read from the powercap sysfs tree.

Each intel-rapl:N domain (and its intel-rapl:N:M sub-domains) has a cumulative
energy_uj counter that wraps at max_energy_range_uj. The window's energy is the
counters' increase between the read at start() and the read at stop(); the reads in
between exist so that no counter wraps twice unseen. Only package-* domains add up to
the total (psys already contains the packages; core/uncore/dram sit inside them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bench.errors import EngineUnavailable
from bench.power.base import DEFAULT_POWERCAP, PowerOptions, PowerReading
from bench.power.integrate import counter_delta, median_interval_s
from bench.power.polling import DEFAULT_INTERVAL_S, PollingSampler

DEFAULT_ROOT = DEFAULT_POWERCAP
# intel-rapl-mmio:* repeats the package counter through another interface; skip it.
_DOMAIN_DIR = re.compile(r"^intel-rapl:\d+(:\d+)?$")


@dataclass(frozen=True)
class RaplDomain:
    label: str  # "package-0", or "package-0/dram" for a sub-domain
    counter: Path  # .../energy_uj
    max_range_uj: int
    is_package: bool


def find_domains(root: Path | str = DEFAULT_ROOT) -> list[RaplDomain]:
    """The RAPL domains under a powercap root, top-level ones first."""
    root = Path(root)
    if not root.is_dir():
        return []
    tops = sorted(p for p in root.iterdir() if _DOMAIN_DIR.match(p.name) and p.name.count(":") == 1)
    domains: list[RaplDomain] = []
    for top in tops:
        top_name = _read_text(top / "name")
        domains.append(_domain(top, top_name, top_name.startswith("package")))
        for sub in sorted(p for p in top.iterdir() if _DOMAIN_DIR.match(p.name)):
            domains.append(_domain(sub, f"{top_name}/{_read_text(sub / 'name')}", False))
    return domains


def _domain(folder: Path, label: str, is_package: bool) -> RaplDomain:
    max_range = int(_read_text(folder / "max_energy_range_uj") or 0)
    return RaplDomain(label, folder / "energy_uj", max_range, is_package)


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


class RaplSampler(PollingSampler):
    """Package energy from RAPL counters; rails = mean W per domain and sub-domain."""

    source = "rapl"

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, root: Path | str = DEFAULT_ROOT):
        super().__init__(interval_s)
        self.root = Path(root)

    @classmethod
    def from_options(cls, options: PowerOptions) -> RaplSampler:
        return cls(options.interval_s, root=options.rapl_root)

    @classmethod
    def unavailable_reason(cls, options: PowerOptions | None = None) -> str | None:
        return cls._reason(Path((options or PowerOptions()).rapl_root))

    @staticmethod
    def _reason(root: Path) -> str | None:
        domains = find_domains(root)
        if not any(d.is_package for d in domains):
            return f"rapl: no intel-rapl:N package domain under {root}"
        for domain in domains:
            try:
                int(domain.counter.read_text())
            except PermissionError:
                return f"rapl: {domain.counter} is not readable (root-only since Linux 5.10)"
            except (OSError, ValueError) as exc:
                return f"rapl: cannot read {domain.counter}: {exc}"
        return None

    def _open(self) -> None:
        reason = self._reason(self.root)
        if reason:
            raise EngineUnavailable(reason.removeprefix("rapl: "))
        self._domains = find_domains(self.root)
        self._raw: dict[str, int] = {}
        self._total_uj = {d.label: 0 for d in self._domains}
        self._wraps = 0

    def _read(self) -> dict[str, float]:
        for domain in self._domains:
            raw = int(domain.counter.read_text())
            if domain.label in self._raw:
                delta, wrapped = counter_delta(self._raw[domain.label], raw, domain.max_range_uj)
                self._total_uj[domain.label] += delta
                self._wraps += wrapped
            self._raw[domain.label] = raw
        return {label: uj / 1e6 for label, uj in self._total_uj.items()}

    def _summarize(self, t0: float, t1: float) -> PowerReading:
        span = self._times[-1] - self._times[0]
        if span <= 0:
            raise ValueError(f"window of {span:.6f} s between the first and last counter read")
        first, last = self._values[0], self._values[-1]
        energy = {label: last[label] - first[label] for label in last}
        package_j = sum(energy[d.label] for d in self._domains if d.is_package)
        return PowerReading(
            source=self.source,
            mean_w=package_j / span,
            energy_j=package_j,
            window_s=span,
            samples=len(self._times),
            interval_s=self.interval_s,
            rails={label: joules / span for label, joules in energy.items()},
            meta=self._meta(),
        )

    def _meta(self) -> dict[str, object]:
        return {
            "root": str(self.root),
            "domains": [d.label for d in self._domains],
            "total_of": [d.label for d in self._domains if d.is_package],
            "counter_wraps": self._wraps,
            "measured_interval_s": median_interval_s(self._times),
        }
