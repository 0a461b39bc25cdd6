"""Writing a run folder: results/runs/<id>/{report.json, report.csv, summary.md,
summary.txt, pareto.png, benchmark.json, detections.npz}, each file atomically, then pointing
results/latest at it.

report.json is written last and lists the files written before it: a run folder with a
report.json is whole on disk, and one killed before it has none (nothing to promote).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.atomic import atomic_symlink, atomic_write_text
from bench.report.frame import rows_to_frame
from bench.report.render_markdown import render_markdown
from bench.report.render_plot import write_pareto
from bench.report.render_rich import render_text
from bench.report.rows import ResultRow
from bench.report.runs import REPORT_NAME, Run

if TYPE_CHECKING:
    import numpy as np

    from bench.diagnose.session import Diagnoser


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id: UTC timestamp plus 6 random hex digits."""
    stamp = (now or utc_now()).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def _results_dir_of(run_dir: Path) -> Path | None:
    # Only the standard layout results/runs/<id> gets a `latest` link, so that writing a
    # run to an arbitrary folder never drops a link in its grandparent.
    return run_dir.parent.parent if run_dir.parent.name == "runs" else None


def update_latest(results_dir: Path, run_dir: Path) -> Path:
    """Point results_dir/latest at run_dir (relative, so the folder can be moved)."""
    target = os.path.relpath(run_dir.resolve(), Path(results_dir).resolve())
    return atomic_symlink(Path(results_dir) / "latest", target)


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, default=str) + "\n"


def _baseline_info(baseline: Run | None, source: str | None) -> dict[str, Any] | None:
    """Which baseline the run was judged against: run id, commit, date, host, file."""
    from bench.report.judge import BaselineInfo

    return BaselineInfo.of(baseline, source or "").to_dict() if baseline is not None else None


def write_files(run_dir: Path, run: Run, benchmark_json: Mapping | None,
                thresholds: str | None, baseline: Run | None = None,
                baseline_source: str | None = None, diagnosis: Diagnoser | None = None,
                detections: Mapping[str, np.ndarray] | None = None) -> None:
    extra: list[str] = []
    if detections:  # first: report.json records its sha256
        from bench.report.detections import DETECTIONS_NAME, write_detections

        record = write_detections(run_dir / DETECTIONS_NAME, detections)
        run = replace(run, detections=record)
        extra.append(DETECTIONS_NAME)
    atomic_write_text(run_dir / "report.csv", rows_to_frame(run.rows).to_csv(index=False))
    atomic_write_text(run_dir / "summary.md", render_markdown(
        run, thresholds, baseline=baseline, baseline_source=baseline_source))
    atomic_write_text(run_dir / "summary.txt", render_text(run, baseline=baseline))
    write_pareto(run.rows, run_dir / "pareto.png")
    files = ["report.csv", "summary.md", "summary.txt", "pareto.png", *extra]
    if diagnosis is not None:  # --diagnose: profiles, layers.csv, layers.png
        files += diagnosis.write(run_dir)
    if benchmark_json is not None:
        atomic_write_text(run_dir / "benchmark.json", _json_text(benchmark_json))
        files.append("benchmark.json")
    run = replace(run, files=tuple(files))
    atomic_write_text(run_dir / REPORT_NAME, _json_text(run.to_dict()))


def write_run(run_dir: Path, environment: Mapping[str, Any], rows: Iterable[ResultRow],
              benchmark_json: Mapping[str, Any] | None = None, complete: bool = True, *,
              results_dir: Path | None = None, thresholds: str | None = None,
              baseline: Run | None = None, baseline_source: str | None = None,
              diagnosis: Diagnoser | None = None,
              detections: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write every file of a run and update `latest`; returns the run dir.

    results_dir (where `latest` goes) defaults to the parent of runs/ when run_dir is
    results/runs/<id>; otherwise no link is made. thresholds (GateConfig.describe()) is
    printed in summary.md; baseline (the run gated against) fills the summaries' "base"
    columns and baseline_source says where it came from (or why there is none);
    diagnosis (--diagnose) writes its tables and plot into the run folder; detections
    (variant -> the results array its accuracy pass scored) go to detections.npz, whose
    sha256 report.json records (bench.report.detections).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = Run(environment=dict(environment), rows=tuple(rows), complete=bool(complete),
              created=utc_now().isoformat(timespec="seconds"), run_id=run_dir.name,
              baseline=_baseline_info(baseline, baseline_source))
    write_files(run_dir, run, benchmark_json, thresholds, baseline, baseline_source, diagnosis,
                detections)
    link_home = results_dir if results_dir is not None else _results_dir_of(run_dir)
    if link_home is not None:
        update_latest(link_home, run_dir)
    return run_dir
