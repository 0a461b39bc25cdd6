"""Stand-ins for the two Jetson command-line tools jtop.service runs.

jtop.service finds `nvpmodel` on PATH and `jetson_clocks` at a fixed path list; the
launcher puts these first, so the service's own parsing of their output is exercised.
"""

from __future__ import annotations

from pathlib import Path

from fake_jetson.sysfs import GPU_FREQ_HZ

NVPMODEL_MODE = ("MODE_15W", 1)

_NVPMODEL = """#!/bin/sh
# Fake nvpmodel: two modes, currently {name} ({id}).
case "$1" in
  -q) echo "NV Power Mode: {name}"; echo {id} ;;
  -p) echo "NVPM VERB: PM_CONFIG: DEFAULT=MAXN(0)"
      echo "NVPM VERB: POWER_MODEL: ID=0 NAME=MAXN"
      echo "NVPM VERB: POWER_MODEL: ID=1 NAME=MODE_15W" ;;
  -m) exit 0 ;;
esac
"""

_JETSON_CLOCKS = """#!/bin/sh
# Fake jetson_clocks: reports the GPU pinned at one frequency.
case "$1" in
  --show) echo "GPU MinFreq={f} MaxFreq={f} CurrentFreq={f}" ;;
  --store) echo "stored" > "$2"; echo "stored in $2" ;;
esac
"""


def write_tools(bin_dir: Path) -> Path:
    """Write nvpmodel (for PATH) and jetson_clocks into bin_dir; return jetson_clocks."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    name, mode_id = NVPMODEL_MODE
    _script(bin_dir / "nvpmodel", _NVPMODEL.format(name=name, id=mode_id))
    return _script(bin_dir / "jetson_clocks", _JETSON_CLOCKS.format(f=GPU_FREQ_HZ))


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path
