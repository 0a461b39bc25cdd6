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
from bench.errors import BenchError

_PACKAGES = ("onnxruntime", "onnx", "numpy", "torch", "tensorrt", "pycocotools",
             "pytest-benchmark", "jetson-stats", "nvidia-ml-py")


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, which containers narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def collect_environment(cfg: BenchConfig, inputs: Any | None,
                        runtime: dict[str, str | None] | None = None) -> dict[str, Any]:
    """runtime: what the engine itself reported (runtime_version, device_name), which wins
    over what the harness can find out from outside (a TensorRT rig has no torch)."""
    runtime = runtime or {}
    env = {
        "backend": cfg.backend,
        # The device's model is part of its identity: latency on one GPU or CPU model is
        # never compared with another's.
        "device": f"{cfg.device}: {runtime.get('device_name') or device_name(cfg)}",
        "host": {"name": platform.node(), "cpu": cpu_model(), "cpus": os.cpu_count(),
                 "isa": cpu_isa_flags()},
        "platform": platform.platform(),
        "python": platform.python_version(),
        "bench": __version__,
        "versions": {**package_versions(),
                     **({cfg.backend: runtime["runtime_version"]}
                        if runtime.get("runtime_version") else {})},
        "commit": git_commit(),
        "threads": cfg.threads,
        "qdq_profile": cfg.profile,
        "speed_probe": _probe_identity(),
    }
    if inputs is not None:
        env.update(model=inputs.model_label, model_path=str(inputs.model_path),
                   model_sha256=inputs.model_sha, imgsz=inputs.imgsz,
                   dataset=str(inputs.dataset.annotation_path),
                   calibration=inputs.calib_label, calib_count=cfg.calib_count,
                   eval_count=cfg.eval_count)
        dropped = dict(getattr(inputs.dataset, "dropped", {}) or {})
        if dropped:  # --coco-lenient: what was left out of the evaluation, never silently
            env["dataset_dropped"] = dropped
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


# Instruction sets that change INT8 results or speed on the CPU: ONNX Runtime picks its
# int8 GEMM kernels by them (VNNI hosts gave int8-entropy 0.640 where another gave 0.625).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",
             "asimd", "asimddp", "i8mm", "sve")


def cpu_isa_flags() -> list[str]:
    """The ISA_FLAGS this CPU reports in /proc/cpuinfo (empty where it is not readable)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return []
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.lower().startswith(("flags", "features")):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in ISA_FLAGS if flag in present]
    return []


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


def _probe_identity() -> dict[str, str] | None:
    """Which speed probe normalised this run's latencies (None when its file is missing)."""
    from bench.measure.probe import probe_identity

    try:
        return probe_identity()
    except BenchError:
        return None
