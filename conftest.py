"""The pytest face of the harness: options -> BenchConfig, one session, the report at the end.

Every option is also an environment variable (BENCH_<NAME>) and a [tool.bench] key of the
rootdir's pyproject.toml; see `pytest suites/ --help` under "bench".

The options are registered for every pytest run of this repository, but the harness only
starts when the run collects suites/ (`pytest suites/`, `pytest suites/test_matrix.py`,
`pytest .`): `pytest tests` builds no session, reads no config and writes nothing.

pytest-benchmark stays in charge of its own table, its JSON and its storage; the harness
takes the JSON from its public `pytest_benchmark_update_json` hook and points
`--benchmark-json` (when not given) at the run folder's benchmark.json before
pytest-benchmark configures, so the path it prints is the file that is kept.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.config import FIELDS, HELP

SUITES = "suites"
# pytest-benchmark's options that its pedantic mode ignores (the suite times a fixed
# number of rounds, --bench-rounds/--bench-warmup, in blocks interleaved with fp32) or
# that would leave rows without latency: refused when set, naming what to use instead.
REFUSED_BENCHMARK_OPTIONS = {
    "benchmark_min_rounds": "times --bench-rounds N rounds (default 50), in blocks "
                            "interleaved with fp32; use --bench-rounds",
    "benchmark_max_time": "has no time budget: it times --bench-rounds N rounds; "
                          "use --bench-rounds",
    "benchmark_min_time": "times one call per round (no loop calibration)",
    "benchmark_calibration_precision": "times one call per round (no loop calibration)",
    "benchmark_precision": "times a fixed --bench-rounds N rounds; use --bench-rounds",
    "benchmark_confidence": "times a fixed --bench-rounds N rounds; use --bench-rounds",
    "benchmark_warmup": "makes --bench-warmup N untimed calls; use --bench-warmup",
    "benchmark_warmup_iterations": "makes --bench-warmup N untimed calls; use --bench-warmup",
    "benchmark_timer": "times each call with time.perf_counter",
    "benchmark_disable": "is part of every row (there is no accuracy-only run)",
}
BENCHMARK_COLUMNS = ("median", "iqr", "rounds")  # pytest-benchmark's table, unless chosen
_FACE_KEY = pytest.StashKey["SuiteFace"]()
_benchmark_defaults: dict[str, Any] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bench", "benchmark harness (also BENCH_<NAME> env, [tool.bench])")
    for name in FIELDS:
        if name == "progress":
            group.addoption("--no-progress", dest="bench_progress", action="store_false",
                            default=None, help="no progress bars")
            continue
        group.addoption("--" + name.replace("_", "-"), dest=f"bench_{name}", default=None,
                        help=HELP[name].replace("%", "%%"))  # argparse formats help
    _benchmark_defaults.update(_defaults_of(parser.getgroup("benchmark")))


def _defaults_of(group: Any) -> dict[str, Any]:
    """pytest-benchmark's option defaults, as argparse would convert them."""
    found = {}
    for option in getattr(group, "options", ()):
        default = option.default
        if isinstance(default, str) and callable(option.type):
            try:
                default = option.type(default)
            except Exception:  # an unconvertible default: compare as given
                pass
        found[option.dest] = default
    return found


def suite_requested(config: pytest.Config) -> bool:
    """Whether this run collects suites/: an argument at, inside or above rootdir/suites."""
    suites = (config.rootpath / SUITES).resolve()
    for arg in config.args:
        path = Path(str(arg).split("::")[0])
        if not path.is_absolute():
            path = config.invocation_params.dir / path
        path = path.resolve()
        if path == suites or suites in path.parents or path in suites.parents:
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """In a suite run, check the options, load the config and start the session before
    pytest-benchmark configures (it reads --benchmark-json then)."""
    if not suite_requested(config):
        return
    face = SuiteFace.start(config, _benchmark_defaults, REFUSED_BENCHMARK_OPTIONS)
    config.stash[_FACE_KEY] = face
    config.pluginmanager.register(face, "bench-suite-face")
    config.pluginmanager.register(FinishGuard(face), "bench-finish-guard")


def pytest_unconfigure(config: pytest.Config) -> None:
    face = config.stash.get(_FACE_KEY, None)
    if face is not None:
        face.stop()


def bench_face(config: pytest.Config) -> Any:
    """The running SuiteFace; a usage error when the suite was collected some other way."""
    face = config.stash.get(_FACE_KEY, None)
    if face is None:
        raise pytest.UsageError(
            f"the bench suite did not start: name {SUITES}/ on the command line "
            f"(e.g. `pytest {SUITES}/ --benchmark-only`); got {config.args}")
    return face


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    face = config.stash.get(_FACE_KEY, None)
    return face.header_lines() if face is not None else None



@pytest.fixture(scope="session")
def bench_session(request: pytest.FixtureRequest) -> Any:
    """The run's BenchSession (bench.session): prepare, measure, rows."""
    return bench_face(request.config).session


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "variant" in metafunc.fixturenames and metafunc.definition.path.parent.name == SUITES:
        from bench.config import ALL_VARIANTS

        cfg = bench_face(metafunc.config).session.cfg
        # fp32 first: every other variant's delta and floor are measured against it.
        metafunc.parametrize("variant", sorted(cfg.variants, key=ALL_VARIANTS.index))


def _path_fields() -> tuple[str, ...]:
    import typing

    from bench.config import BenchConfig

    hints = typing.get_type_hints(BenchConfig)
    return tuple(n for n in FIELDS if Path in (hints[n], *typing.get_args(hints[n])))


def pyproject_of(config: pytest.Config) -> Path | None:
    """The pyproject.toml whose [tool.bench] applies: pytest's own config file when it is
    one, else the rootdir's."""
    if config.inipath is not None and config.inipath.name == "pyproject.toml":
        return config.inipath
    candidate = config.rootpath / "pyproject.toml"
    return candidate if candidate.is_file() else None


def load_suite_config(config: pytest.Config, env: dict[str, str] | None = None) -> Any:
    """Options > BENCH_* > [tool.bench] > defaults, with relative paths resolved as a user
    expects: given on the command line or in the environment, against the directory pytest
    was started in; from [tool.bench] or the defaults (results/, results/baseline.json),
    against the pyproject's folder (the rootdir), never against wherever the cwd is."""
    from bench.config import load_config
    from bench.errors import BenchError

    env = dict(os.environ) if env is None else env
    options = {name: config.getoption(f"bench_{name}") for name in FIELDS}
    pyproject = pyproject_of(config)
    try:
        cfg = load_config(options, env=env, pyproject=pyproject)
    except BenchError as exc:
        raise pytest.UsageError(str(exc)) from None
    home = pyproject.parent if pyproject is not None else config.rootpath
    changes = {}
    for name in _path_fields():
        value = getattr(cfg, name)
        if value is None or Path(value).is_absolute():
            continue
        given = options.get(name) is not None or f"BENCH_{name.upper()}" in env
        changes[name] = (config.invocation_params.dir if given else home) / value
    return cfg.with_(**changes)


def refuse_conflicts(config: pytest.Config, defaults: dict[str, Any],
                     refused: dict[str, str]) -> None:
    """One usage error for the first option the suite would otherwise ignore."""
    if config.getoption("numprocesses", None) or config.getoption("dist", "no") != "no" \
            or os.environ.get("PYTEST_XDIST_WORKER"):
        raise pytest.UsageError(
            "-n/--dist (pytest-xdist): refused; the suite times its variants one after "
            "another on one machine (parallel workers would share the cores being timed, "
            "split one run into several folders and leave floors unchecked): run without -n")
    for dest, instead in refused.items():
        if dest not in defaults:
            continue
        value = config.getoption(dest, None)
        if value == defaults[dest] or str(value) == str(defaults[dest]):
            continue
        flag = "--" + dest.replace("_", "-")
        given = flag if isinstance(value, bool) else f"{flag}={value}"
        raise pytest.UsageError(f"{given}: refused, the suite would ignore it; "
                                f"its latency pass {instead}")


def _sigterm_as_interrupt() -> None:
    """SIGTERM (a CI job cancelled, a `kill`) ends the run like Ctrl-C: the variants done
    so far are written as a partial run (complete: false), never lost."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


class FinishGuard:
    """The outermost sessionfinish: when a plugin's sessionfinish raises before the face's
    ran (pytest-benchmark's does for a benchmark interrupted before its first round, on
    Ctrl-C or SIGTERM), the variants done so far are still written, as a partial run."""

    def __init__(self, face: SuiteFace):
        self.face = face

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> Any:
        try:
            return (yield)
        except BaseException:
            self.face.write_partial()
            raise


class SuiteFace:
    """The suite run's state and hooks: registered as a plugin only when suites/ runs."""

    def __init__(self, config: pytest.Config, session: Any, run_dir: Path,
                 json_path: Path | None):
        self.config = config
        self.session = session
        self.run_dir = run_dir
        self.json_path = json_path  # where pytest-benchmark writes, when it is ours
        self.benchmark_json: dict | None = None
        self.written: Path | None = None
        self.finishing = False  # the face's sessionfinish started
        self._bar_stream: Any = None
        self.started = time.perf_counter()  # the time split's wall clock

    @classmethod
    def start(cls, config: pytest.Config, defaults: dict[str, Any],
              refused: dict[str, str]) -> SuiteFace:
        from bench.errors import BenchError
        from bench.report.writer import new_run_id
        from bench.session import BenchSession

        refuse_conflicts(config, defaults, refused)
        cfg = load_suite_config(config)
        run_dir = Path(cfg.results_dir) / "runs" / new_run_id()
        json_path = None
        if not config.getoption("benchmark_json", None) and not config.option.collectonly:
            json_path = run_dir / "benchmark.json"
            config.option.benchmark_json = json_path  # read by pytest-benchmark's configure
        storage = config.getoption("benchmark_storage", None)
        if storage is not None and storage == defaults.get("benchmark_storage"):
            # pytest-benchmark's own store (--benchmark-save/--benchmark-compare), created
            # at start: under the rootdir like results/, not wherever pytest was started.
            config.option.benchmark_storage = f"file://{config.rootpath / '.benchmarks'}"
        if not config.getoption("benchmark_columns", None):
            # Its table repeats ours; its default nine columns need ~200 characters.
            config.option.benchmark_columns = list(BENCHMARK_COLUMNS)
        try:
            session = BenchSession(cfg)  # checks options, baseline and folders first
        except BenchError as exc:
            raise pytest.UsageError(str(exc)) from None
        _sigterm_as_interrupt()
        return cls(config, session, run_dir, json_path)

    # -- progress bars --------------------------------------------------------------------
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._start_bars(self.session.cfg.progress)

    def _start_bars(self, wanted: bool) -> bool:
        """Bars only on an interactive terminal (never in logs, whatever --color says),
        drawn below pytest's line on a copy of the terminal that capture does not touch.
        Called once the terminal reporter exists, outside any capture."""
        from bench import progress

        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        verbosity = self.config.getoption("verbose", 0) or 0
        if not wanted or reporter is None or not reporter.isatty or verbosity < -1:
            progress.use_surface(None, enabled=False)
            return False
        try:
            fd = os.dup(sys.__stdout__.fileno())
        except (AttributeError, OSError, ValueError):
            progress.use_surface(None, enabled=False)
            return False
        self._bar_stream = os.fdopen(fd, "w", buffering=1, encoding="utf-8", errors="replace")
        if not progress.is_interactive(self._bar_stream):
            progress.use_surface(None, enabled=False)
            return False
        writer = self.config.get_terminal_writer()
        progress.use_surface(progress.Surface(
            self._bar_stream, column=lambda: writer.width_of_current_line,
            width=lambda: writer.fullwidth, flush=reporter.flush))
        return True

    def stop(self) -> None:
        from bench import progress

        progress.use_surface(None)
        if self._bar_stream is not None:
            self._bar_stream.close()
            self._bar_stream = None

    # -- hooks ----------------------------------------------------------------------------
    def header_lines(self) -> list[str]:
        cfg = self.session.cfg
        pyproject = pyproject_of(self.config)
        baseline = Path(cfg.baseline)
        return [f"bench: config {pyproject or 'defaults (no pyproject.toml)'}; "
                f"results {cfg.results_dir}",
                f"bench: baseline {baseline} ({'found' if baseline.is_file() else 'none yet'})"]

    def pytest_benchmark_update_json(self, config: pytest.Config, benchmarks: Any,
                                     output_json: dict) -> None:
        import json

        self.benchmark_json = json.loads(json.dumps(output_json, default=str))
        if self.json_path is not None:  # pytest-benchmark writes there next
            self.json_path.parent.mkdir(parents=True, exist_ok=True)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.finishing = True
        rows = self.session.rows
        if not rows:
            return
        complete = set(self.session.cfg.variants) <= set(rows) and exitstatus != 2
        self.written = self.session.finish(self.benchmark_json, complete, run_dir=self.run_dir)
        if self.session.nothing_measured() and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a green run measured something

    def write_partial(self) -> None:
        """Write the run as partial (complete: false) unless sessionfinish already ran."""
        if self.finishing or not self.session.rows:
            return
        self.finishing = True
        self.written = self.session.finish(self.benchmark_json, False, run_dir=self.run_dir)
        sys.stderr.write(f"bench: partial run written to {self.written} (complete: false)\n")

    @pytest.hookimpl(trylast=True)  # after pytest-benchmark's table: the verdict comes last
    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int,
                                config: pytest.Config) -> None:
        if self.written is None:
            return
        from bench.errors import BenchError
        from bench.report.baseline import load_baseline
        from bench.report.render_rich import LOG_WIDTH, render_text, verdict_text
        from bench.report.runs import load_run
        from bench.report.timing import time_split

        run = load_run(self.written)
        path = Path(self.session.cfg.baseline)
        try:
            baseline = load_baseline(path)
        except BenchError as exc:
            baseline, used = None, f"unreadable: {exc}"
        else:
            used = (f"{path} (run {baseline.name})" if baseline is not None
                    else f"none ({path} not found)")
        verbosity = config.getoption("verbose", 0) or 0
        if verbosity <= -2:
            terminalreporter.write_line(f"bench: {verdict_text(run.rows).plain} · report "
                                        f"{self.written}")
            return
        width = config.get_terminal_writer().fullwidth
        if not terminalreporter.isatty and "COLUMNS" not in os.environ:
            width = LOG_WIDTH  # a CI log is read in a wide window
        terminalreporter.ensure_newline()
        terminalreporter.write_sep("=", "bench report")
        terminalreporter.write(render_text(run, width, baseline=baseline,
                                           verbosity=min(1, verbosity),
                                           color=terminalreporter.hasmarkup))
        terminalreporter.write_line(f"baseline: {used}")
        terminalreporter.write_line(f"report: {self.written}")
        split = time_split(run.rows, time.perf_counter() - self.started)
        if split:
            terminalreporter.write_line(split)
        nothing = self.session.nothing_measured()
        if nothing:
            terminalreporter.write_line(nothing, red=True, bold=True)
