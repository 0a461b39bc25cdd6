"""Fixtures of the report tests: a results folder and a writer of standard runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_builders import make_env, standard_rows

from bench.atomic import atomic_write_text
from bench.report.runs import REPORT_NAME, Run
from bench.report.writer import update_latest, write_run


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def write_standard_run(results_dir: Path):
    """Write a run with every file (write_run), as the suite does."""
    def write(run_id: str = "r1", rows=None, env=None, complete: bool = True) -> Path:
        return write_run(results_dir / "runs" / run_id, env or make_env(),
                         rows if rows is not None else standard_rows(), {"benchmarks": []},
                         complete)
    return write


@pytest.fixture
def write_report_only(results_dir: Path):
    """Write just runs/<id>/report.json and point latest at it: the fast path for tests
    about reading, promoting and comparing runs (the plot costs ~0.5 s a run)."""
    def write(run_id: str = "r1", rows=None, env=None, complete: bool = True) -> Path:
        run_dir = results_dir / "runs" / run_id
        run = Run(env or make_env(), tuple(rows if rows is not None else standard_rows()),
                  complete, "2025-01-01T00:00:00+00:00", run_id=run_id)
        atomic_write_text(run_dir / REPORT_NAME, json.dumps(run.to_dict()))
        update_latest(results_dir, run_dir)
        return run_dir
    return write
