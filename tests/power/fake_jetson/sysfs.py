"""Builds the fake sysfs that jtop.service reads when JTOP_TESTING is set.

jetson-stats hard-codes the fake root: with JTOP_TESTING its services read
/fake_sys/stat, /fake_sys/devices/system/cpu, /fake_sys/class/devfreq (the iGPU) and
/fake_sys/bus/i2c/devices (the INA3221 power monitors). The tree below is the smallest
one that gives jtop a CPU, an iGPU and three INA3221 rails shaped like an Orin NX.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

FAKE_ROOT = Path("/fake_sys")  # fixed by jetson-stats (jtop/core/*.py)
MARKER = ".yolo-qbench-fake-jetson"  # only a tree carrying this is ever removed
INA_HWMON = "bus/i2c/devices/1-0040/hwmon/hwmon3"
GPU = "17000000.gpu"
GPU_FREQ_HZ = 1_300_500_000  # min == max: jtop then reports jetson_clocks as on


@dataclass(frozen=True)
class Rail:
    label: str
    millivolts: int
    milliamps: int

    @property
    def watts(self) -> float:
        return self.millivolts * self.milliamps / 1e6


CPU_FREQ_FILES = {
    "scaling_governor": "schedutil",
    **{
        f"{kind}_{end}_freq": khz
        for kind in ("scaling", "cpuinfo")
        for end, khz in (("min", 729600), ("max", 1984000), ("cur", 1984000))
    },
}
GPU_STATUS_FILES = {"railgate_enable": 0, "tpc_pg_mask": 0, "enable_3d_scaling": 1, "load": 300}

# VDD_IN is the board input: jtop reports it as the total ("tot").
RAILS = (Rail("VDD_IN", 5000, 1200), Rail("VDD_CPU_GPU_CV", 5000, 400), Rail("VDD_SOC", 5000, 300))


def build(root: Path = FAKE_ROOT, rails: tuple[Rail, ...] = RAILS) -> Path:
    """Write the tree; refuse to touch an existing one that is not ours."""
    if root.exists() and not (root / MARKER).exists():
        raise FileExistsError(f"{root} exists and was not made by these tests; remove it first")
    remove(root)
    _cpus(root, count=2)
    _gpu(root)
    _ina3221(root, rails)
    _write(root / MARKER, "made by tests/power/fake_jetson\n")
    return root


def remove(root: Path = FAKE_ROOT) -> None:
    if (root / MARKER).exists():
        shutil.rmtree(root)


def set_current(rail_index: int, milliamps: int, root: Path = FAKE_ROOT) -> None:
    """Change one rail's current as the service runs (rail_index counts from 1)."""
    _write(root / INA_HWMON / f"curr{rail_index}_input", milliamps)


def _cpus(root: Path, count: int) -> None:
    stat = "cpu  200 0 100 4000 0 0 0 0 0 0\n"
    for n in range(count):
        stat += f"cpu{n} 100 0 50 2000 0 0 0 0 0 0\n"
        freq = root / f"devices/system/cpu/cpu{n}/cpufreq"
        for name, value in CPU_FREQ_FILES.items():
            _write(freq / name, value)
    _write(root / "stat", stat)


def _gpu(root: Path) -> None:
    devfreq = root / f"devices/platform/{GPU}/devfreq/{GPU}"
    _write(devfreq / "device/of_node/name", "gpu")
    for name in ("cur_freq", "max_freq", "min_freq"):
        _write(devfreq / name, GPU_FREQ_HZ)
    _write(devfreq / "governor", "nvhost_podgov")
    for name, value in GPU_STATUS_FILES.items():
        _write(devfreq / "device" / name, value)
    (root / "class/devfreq").mkdir(parents=True, exist_ok=True)
    os.symlink(devfreq, root / "class/devfreq" / GPU)


def _ina3221(root: Path, rails: tuple[Rail, ...]) -> None:
    _write(root / "bus/i2c/devices/1-0040/name", "ina3221")
    hwmon = root / INA_HWMON
    for n, rail in enumerate(rails, start=1):
        _write(hwmon / f"in{n}_label", rail.label)
        _write(hwmon / f"in{n}_input", rail.millivolts)
        _write(hwmon / f"curr{n}_input", rail.milliamps)
        _write(hwmon / f"curr{n}_max", 5000)
        _write(hwmon / f"curr{n}_crit", 6000)


def _write(path: Path, value: object) -> None:
    # Atomic: the service reads these files on its own thread, and a half-written
    # number would stop its timer for good.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)
