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


def promote(run_dir: str | Path, baseline_path: Path, allow_failed: bool = False,
            results_dir: Path = Path("results")) -> Path:
    """Copy a complete run's report to the baseline file atomically; returns its path.

    `run_dir` may be a run dir, a report.json, 'latest' or a run id. Refuses a partial run
    and (unless allow_failed) a run with failed rows; the old baseline stays intact then,
    and also if writing fails.
    """
    run = load_run(run_dir, results_dir)
    _check_promotable(run, allow_failed)
    source = run.run_id or str(run.path.parent if run.path else run_dir)
    data = replace(run, promoted_from=source).to_dict()
    return atomic_write_text(Path(baseline_path), json.dumps(data, indent=2) + "\n")
