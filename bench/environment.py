"""What a result was measured on: backend, device, versions, host and commit.

Latency is only compared against a baseline whose environment matches, so this records
everything that changes speed: the CPU or GPU model, runtime versions and thread count.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench import __version__
from bench.config import BenchConfig

_PACKAGES = ("onnxruntime", "onnx", "numpy", "torch", "tensorrt", "pycocotools",
             "pytest-benchmark", "jetson-stats", "nvidia-ml-py")


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, which containers narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def collect_environment(cfg: BenchConfig, inputs: Any | None) -> dict[str, Any]:
    env = {
        "backend": cfg.backend,
        # The device's model is part of its identity: latency on one GPU or CPU model is
        # never compared with another's.
        "device": f"{cfg.device}: {device_name(cfg)}",
        "host": {"name": platform.node(), "cpu": cpu_model(), "cpus": os.cpu_count()},
        "platform": platform.platform(),
        "python": platform.python_version(),
        "bench": __version__,
        "versions": package_versions(),
        "commit": git_commit(),
        "threads": cfg.threads,
        "qdq_profile": cfg.profile,
    }
    if inputs is not None:
        env.update(model=inputs.model_label, model_path=str(inputs.model_path),
                   model_sha256=inputs.model_sha, imgsz=inputs.imgsz,
                   dataset=str(inputs.dataset.annotation_path),
                   calibration=inputs.calib_label, calib_count=cfg.calib_count,
                   eval_count=cfg.eval_count)
    return env


def package_versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def device_name(cfg: BenchConfig) -> str:
    if cfg.device == "cpu":
        return cpu_model()
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception:  # no torch or no CUDA: the engine reports its own reason
        return "cuda (unknown)"


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
