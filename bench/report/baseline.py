"""The stored baseline (results/baseline.json): reading it, promoting a run to it, and
whether two runs' latencies can be compared at all.

Latency is only comparable between runs on the same machine and software stack. The
environment dict is read at these keys (dotted paths; see ENVIRONMENT_KEYS):
device, host.cpu, backend and versions.<backend> must be present in both and equal;
versions.cuda, versions.driver, power.mode, power.jetson_clocks, host.isa and
speed_probe.sha256 (which probe normalised the latencies) must be equal where either run
recorded them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.atomic import atomic_write_text
from bench.errors import InputDataError
from bench.report.runs import Run, load_run, read_report

REQUIRED_KEYS = ("device", "host.cpu", "backend")
OPTIONAL_KEYS = ("versions.cuda", "versions.driver", "power.mode", "power.jetson_clocks",
                 "host.isa", "speed_probe.sha256")
ENVIRONMENT_KEYS = REQUIRED_KEYS + ("versions.<backend>",) + OPTIONAL_KEYS
_MISSING = object()


@dataclass(frozen=True)
class Comparability:
    """Whether latency figures of two runs (or rows) may be compared, and why (not)."""

    comparable: bool
    why: str


def _get(env: Mapping[str, Any], dotted: str) -> Any:
    value: Any = env
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _difference(env_a: Mapping, env_b: Mapping, key: str, required: bool) -> str | None:
    a, b = _get(env_a, key), _get(env_b, key)
    if a is _MISSING and b is _MISSING:
        return f"{key} not recorded" if required else None
    if a is _MISSING or b is _MISSING:
        return f"{key} recorded in one run only ({'baseline' if a is _MISSING else 'this run'})"
    return None if a == b else f"{key} differs: {b!r} vs baseline {a!r}"


def comparability(env_a: Mapping[str, Any], env_b: Mapping[str, Any],
                  backend: str | None = None) -> Comparability:
    """Compare env_b (the run judged) with env_a (the baseline) for latency purposes.

    `backend` names the runtime whose version must match (default: env_a's backend).
    """
    backend = backend or _get(env_a, "backend")
    keys = [(k, True) for k in REQUIRED_KEYS]
    if isinstance(backend, str):
        keys.append((f"versions.{backend}", True))
    keys += [(k, False) for k in OPTIONAL_KEYS]
    found = [_difference(env_a, env_b, key, required) for key, required in keys]
    problems = [p for p in found if p]
    if problems:
        return Comparability(False, "; ".join(problems))
    return Comparability(True, f"same {', '.join(k for k, _ in keys)}")


def load_baseline(path: Path) -> Run | None:
    """The baseline run, or None when the file does not exist; a corrupt file raises."""
    path = Path(path)
    return read_report(path) if path.exists() else None


def _check_promotable(run: Run, allow_failed: bool) -> None:
    if not run.complete:
        raise InputDataError(f"{run.name}: partial run (complete: false); "
                             "a baseline is never taken from a partial run")
    missing = run.missing_files()
    if missing:
        raise InputDataError(f"{run.name}: files {missing} listed in its report are missing; "
                             "a baseline is never taken from an incomplete run folder")
    failed = [r.variant for r in run.rows if r.status == "failed"]
    if failed and not allow_failed:
        raise InputDataError(f"{run.name}: failed rows {failed}; "
                             "fix them or pass --allow-failed to promote anyway")
    if not any(r.ok for r in run.rows):
        raise InputDataError(f"{run.name}: no ok rows; nothing to use as a baseline")


@dataclass(frozen=True)
class Promotion:
    """What `bench baseline promote` did: the baseline written, and its detections
    sidecar (or why it has none) in one line."""

    path: Path
    detections: str


def promote_run(run_dir: str | Path, baseline_path: Path, allow_failed: bool = False,
                results_dir: Path = Path("results")) -> Promotion:
    """Copy a complete run's report to the baseline file atomically, its detections beside
    it (bench.report.detections: a sidecar whose sha256 the baseline records).

    `run_dir` may be a run dir, a report.json, 'latest' or a run id. Refuses a partial run
    and (unless allow_failed) a run with failed rows; the old baseline and its sidecar stay
    intact then, and also if writing fails. A run without detections is promoted all the
    same (ΔmAP against it then has no CI, which the promotion says).
    """
    from bench.report.detections import copy_sidecar

    run = load_run(run_dir, results_dir)
    _check_promotable(run, allow_failed)
    source = run.run_id or str(run.path.parent if run.path else run_dir)
    target = Path(baseline_path)
    old = _old_sidecar(target)
    sidecar = copy_sidecar(run, target)  # a name of its own: the old one is untouched
    data = replace(run, promoted_from=source, detections=sidecar.record).to_dict()
    try:
        written = atomic_write_text(target, json.dumps(data, indent=2) + "\n")
    except BaseException:
        if sidecar.path is not None and sidecar.path != old:
            _remove_quietly(sidecar.path)
        raise
    if old is not None and old != sidecar.path:
        _remove_quietly(old)  # the old baseline's, now referenced by nothing
    return Promotion(written, sidecar.note)


def promote(run_dir: str | Path, baseline_path: Path, allow_failed: bool = False,
            results_dir: Path = Path("results")) -> Path:
    """promote_run, returning the baseline's path."""
    return promote_run(run_dir, baseline_path, allow_failed, results_dir).path


def _old_sidecar(baseline_path: Path) -> Path | None:
    """The current baseline's sidecar, if it has one named as promote names them (an
    unreadable baseline has none; a file of another name is never removed)."""
    from bench.report.detections import detections_file, is_sidecar_name

    try:
        old = load_baseline(baseline_path)
    except InputDataError:
        return None
    path = detections_file(old) if old is not None else None
    return path if path is not None and is_sidecar_name(baseline_path, path.name) else None


def _remove_quietly(path: Path) -> None:
    try:
        Path(path).unlink()
    except OSError:
        pass
