"""A fake powercap sysfs tree (the shape of /sys/class/powercap) with live counters."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

PACKAGE_W, DRAM_W, PSYS_W = 20.0, 2.0, 30.0
PACKAGE_RANGE_UJ = 5_000_000  # 5 J: at 20 W the package counter wraps every 0.25 s
BIG_RANGE_UJ = 262_143_328_850  # a real package's range


def write_counter(path: Path, value: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)  # the sampler must never read half a number


def _domain(folder: Path, name: str, max_range: int) -> Path:
    folder.mkdir(parents=True)
    write_counter(folder / "name", name)
    write_counter(folder / "max_energy_range_uj", max_range)
    write_counter(folder / "energy_uj", 0)
    return folder / "energy_uj"


def build_powercap(root: Path) -> dict[Path, tuple[float, int]]:
    """A tree shaped like /sys/class/powercap; returns counter -> (W, max range µJ)."""
    (root / "intel-rapl").mkdir(parents=True)  # the control type: no counter of its own
    package = root / "intel-rapl:0"
    counters = {
        _domain(package, "package-0", PACKAGE_RANGE_UJ): (PACKAGE_W, PACKAGE_RANGE_UJ),
        _domain(package / "intel-rapl:0:2", "dram", BIG_RANGE_UJ): (DRAM_W, BIG_RANGE_UJ),
        _domain(root / "intel-rapl:1", "psys", BIG_RANGE_UJ): (PSYS_W, BIG_RANGE_UJ),
    }
    # As on a real machine: the sub-domain is also linked at the top, and the MMIO
    # interface repeats the package; neither may be counted twice.
    os.symlink(package / "intel-rapl:0:2", root / "intel-rapl:0:2")
    _domain(root / "intel-rapl-mmio:0", "package-0", PACKAGE_RANGE_UJ)
    return counters


class CounterWriter(threading.Thread):
    """Advances each counter as a constant power would, wrapping at its range."""

    def __init__(self, counters: dict[Path, tuple[float, int]]):
        super().__init__(daemon=True)
        self.counters, self.halt, self.lock = dict(counters), threading.Event(), threading.Lock()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.halt.wait(0.002):
            elapsed = time.monotonic() - t0
            with self.lock:
                for path, (watts, max_range) in self.counters.items():
                    write_counter(path, int(watts * elapsed * 1e6) % max_range)

    def remove(self, counter: Path) -> None:
        """The domain disappears (a driver unloaded, a hot-unplug)."""
        with self.lock:
            del self.counters[counter]
            counter.unlink()
