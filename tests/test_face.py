"""The pytest face (the top-level conftest.py) and the progress bars, as users run them.

Each pytest run here is a real subprocess; `--collect-only` keeps them fast (the session
is built, nothing is measured or written).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import progress

ROOT = Path(__file__).resolve().parents[1]


def _pytest(*args: str, cwd: Path = ROOT, env: dict | None = None,
            ) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)


def test_unit_tests_start_no_session_and_read_no_bench_setting(tmp_path):
    # A bad BENCH_* setting would stop a suite run; the unit tests never read it.
    done = _pytest("tests/report/test_report_rows.py", "-q",
                   env={"BENCH_VARIANTS": "int4", "BENCH_RESULTS_DIR": str(tmp_path / "r")})
    assert done.returncode == 0, done.stdout[-2000:]
    assert "bench:" not in done.stdout and not (tmp_path / "r").exists()
    suite = _pytest("suites", "--collect-only", "-q", env={"BENCH_VARIANTS": "int4"})
    assert suite.returncode == 4 and "option variants: got 'int4'" in suite.stderr


@pytest.mark.parametrize("option, message", [
    ("--benchmark-min-rounds=200", "--benchmark-min-rounds=200: refused, the suite would "
                                   "ignore it; its latency pass times --bench-rounds N"),
    ("--benchmark-max-time=5", "--benchmark-max-time=5: refused"),
    ("--benchmark-warmup=on", "use --bench-warmup"),
    ("--benchmark-disable", "--benchmark-disable: refused"),
])
def test_ignored_pytest_benchmark_options_are_refused_in_one_line(option, message):
    done = _pytest("suites", "--collect-only", "-q", option)
    assert done.returncode == 4
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_pytest_benchmark_defaults_given_explicitly_are_fine():
    done = _pytest("suites", "--collect-only", "-q", "--benchmark-min-rounds=5",
                   "--variants", "fp32")
    assert done.returncode == 0, done.stderr
    assert "1 test collected" in done.stdout


def test_xdist_is_refused_at_start_with_the_reason():
    pytest.importorskip("xdist")
    done = _pytest("suites", "--collect-only", "-q", "-n", "2")
    assert done.returncode == 4
    assert "-n/--dist (pytest-xdist): refused; the suite times its variants one after " \
           "another" in done.stderr


def test_paths_resolve_against_the_rootdir_not_the_cwd(tmp_path):
    done = _pytest(str(ROOT / "suites"), "--collect-only", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"results {ROOT / 'results'}" in done.stdout
    assert f"bench: baseline {ROOT / 'results' / 'baseline.json'}" in done.stdout
    # given on the command line, a relative path is the user's: against the cwd
    given = _pytest(str(ROOT / "suites"), "--collect-only", "--results-dir", "mine",
                    cwd=tmp_path)
    assert f"results {tmp_path / 'mine'}" in given.stdout
    # pytest-benchmark's own store follows the rootdir too, not the cwd
    assert not (tmp_path / ".benchmarks").exists()


def test_surface_puts_the_cursor_back_at_the_end_of_pytests_line():
    stream = io.StringIO()
    flushed = []
    surface = progress.Surface(stream, column=lambda: 17, width=lambda: 80,
                               flush=lambda: flushed.append(True))
    with progress.surface_installed(surface):
        with progress.bar(total=3, desc="fp32 accuracy", unit="img") as bar:
            bar.update(3)
    out = stream.getvalue()
    assert flushed and out.startswith("\n") and "fp32 accuracy" in out
    assert out.endswith(progress.CLEAR_LINE + progress.CURSOR_UP + "\x1b[18G")
    assert surface.depth == 0


def test_no_bar_when_disabled_or_not_a_terminal(capsys):
    stream = io.StringIO()
    surface = progress.Surface(stream, column=lambda: 0, width=lambda: 80)
    with progress.surface_installed(surface, enabled=False):
        for _ in progress.bar(range(3), desc="x"):
            pass
    with progress.surface_installed(None):  # standalone: stderr here is not a terminal
        for _ in progress.bar(range(3), desc="calibration"):
            pass
    assert stream.getvalue() == "" and "calibration" not in capsys.readouterr().err
    assert not progress.is_interactive(io.StringIO())
