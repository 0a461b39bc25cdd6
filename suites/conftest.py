"""The suite's pytest plugin: options -> BenchConfig, one session, the report at the end.

Every option is also an environment variable (BENCH_<NAME>) and a [tool.bench] key; see
`pytest suites/ --help` under "bench". Kept here rather than in a root conftest so that the
unit tests under tests/ do not grow benchmark options.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

from bench.config import ALL_VARIANTS, FIELDS, HELP, load_config
from bench.errors import BenchError
from bench.session import BenchSession

_SESSION_KEY = pytest.StashKey[BenchSession]()
_TEMP_JSON_KEY = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bench", "benchmark harness (also BENCH_<NAME> env, [tool.bench])")
    for name in FIELDS:
        flag = "--" + name.replace("_", "-")
        if name == "progress":
            group.addoption("--no-progress", dest="bench_progress", action="store_false",
                            default=None, help="no progress bars")
            continue
        group.addoption(flag, dest=f"bench_{name}", default=None, help=HELP[name])


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    options = {name: config.getoption(f"bench_{name}") for name in FIELDS}
    try:
        cfg = load_config(options)
    except BenchError as exc:
        raise pytest.UsageError(str(exc)) from None
    if cfg.progress and not _interactive(config):
        cfg = cfg.with_(progress=False)  # no bar refreshes in CI logs and captured output
    config.stash[_SESSION_KEY] = BenchSession(cfg)
    _capture_benchmark_json(config)


def _capture_benchmark_json(config: pytest.Config) -> None:
    """Have pytest-benchmark write its JSON (all timings) even without --benchmark-json,
    so every run folder carries it; the user's own --benchmark-json path still wins."""
    bench = getattr(config, "_benchmarksession", None)
    if bench is not None and not bench.json:
        fd, path = tempfile.mkstemp(prefix="bench-benchmark-", suffix=".json")
        os.close(fd)
        bench.json = Path(path)
        config.stash[_TEMP_JSON_KEY] = Path(path)


def _interactive(config: pytest.Config) -> bool:
    # hasmarkup: pytest writes to a terminal (or was told --color=yes)
    try:
        return bool(config.get_terminal_writer().hasmarkup)
    except (AssertionError, AttributeError):  # no terminal reporter (e.g. -p no:terminal)
        return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "variant" in metafunc.fixturenames:
        cfg = metafunc.config.stash[_SESSION_KEY].cfg
        # fp32 first: every other variant's delta and floor are measured against it.
        ordered = sorted(cfg.variants, key=ALL_VARIANTS.index)
        metafunc.parametrize("variant", ordered)


@pytest.fixture(scope="session")
def bench_session(request: pytest.FixtureRequest) -> BenchSession:
    return request.config.stash[_SESSION_KEY]


@pytest.fixture
def live_output(request: pytest.FixtureRequest, bench_session: BenchSession):
    """A context in which progress bars reach the terminal instead of pytest's capture."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is None or not bench_session.cfg.progress:
        return contextlib.nullcontext
    return capture.global_and_fixture_disabled


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    bench = session.config.stash.get(_SESSION_KEY, None)
    if bench is None or not bench.rows:
        return
    complete = set(bench.rows) == set(bench.cfg.variants) and exitstatus != 2
    benchmark_json = _benchmark_json(session.config)
    from bench.report.render_rich import print_run
    from bench.report.runs import load_run

    run_dir = bench.finish(benchmark_json, complete)
    terminal = session.config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        terminal.ensure_newline()
    print_run(load_run(run_dir))
    print(f"report: {run_dir}", file=sys.stdout)


def _benchmark_json(config: pytest.Config) -> dict | None:
    path = getattr(getattr(config, "_benchmarksession", None), "json", None)
    try:
        text = Path(path).read_text() if path else ""
        return json.loads(text) if text.strip() else None
    finally:
        temp = config.stash.get(_TEMP_JSON_KEY, None)
        if temp is not None:
            temp.unlink(missing_ok=True)
