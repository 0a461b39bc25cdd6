"""The report side of the `bench` command: `report`, `compare`, `baseline promote`.

bench/cli.py calls add_report_commands(subparsers) and then `args.handler(args)`; every
handler returns an exit code: 0 fine, 1 a gate failed (compare), 2 bad input, with a
one-line message on stderr and no traceback.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from bench.config import BenchConfig, load_config
from bench.errors import BenchError
from bench.report.baseline import comparability, promote_run
from bench.report.gate import gate_passed
from bench.report.render_compare import compare_renderable
from bench.report.render_markdown import render_markdown
from bench.report.render_rich import make_console, print_run, render_text
from bench.report.runs import Run, load_run

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT = 0, 1, 2
Handler = Callable[[argparse.Namespace], int]


def one_line_errors(name: str) -> Callable[[Handler], Handler]:
    """Turn BenchError/OSError into 'bench <name>: error: ...' on stderr and exit code 2."""
    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def run(args: argparse.Namespace) -> int:
            try:
                return handler(args)
            except (BenchError, OSError) as exc:
                print(f"bench {name}: error: {exc}", file=sys.stderr)
                return EXIT_BAD_INPUT
        return run
    return wrap


def locate(run: str, results: Path) -> str | Path:
    """A run as a user names it: a path (run dir or report.json) as given or under the
    results folder (`runs/<id>`, as `bench compare runs/A runs/B` writes it), an id,
    or 'latest'."""
    given = Path(run)
    if given.exists() or given.is_absolute():
        return given
    under = Path(results) / given
    return under if under.exists() else run


def _load(run: str, results: Path) -> Run:
    return load_run(locate(run, results), results)


@one_line_errors("report")
def cmd_report(args: argparse.Namespace) -> int:
    run = _load(args.run, args.results)
    if args.markdown:
        sys.stdout.write(render_markdown(run))
    elif args.text:
        sys.stdout.write(render_text(run))
    else:
        print_run(run, make_console(), verbosity=1 if args.verbose else 0)
    return EXIT_OK


@one_line_errors("compare")
def cmd_compare(args: argparse.Namespace) -> int:
    from bench.report.judge import Judge, gate_config

    a, b = _load(args.a, args.results), _load(args.b, args.results)
    # The suite's gate: its configured floors, with the tolerances given here.
    settings = _settings().with_(map_tolerance=args.map_tolerance,
                                 latency_tolerance=args.latency_tolerance)
    judge = Judge(gate_config(settings), a, b.environment,
                  fail_inconclusive=settings.fail_inconclusive)
    judged = judge.judge_all(b.rows)
    comp = comparability(a.environment, b.environment)
    make_console().print(compare_renderable(a, b, judged, comp))
    return EXIT_OK if gate_passed(judged) else EXIT_GATE_FAILED


@one_line_errors("baseline promote")
def cmd_promote(args: argparse.Namespace) -> int:
    target = args.to if args.to is not None else args.results / "baseline.json"
    done = promote_run(locate(args.run, args.results), target, allow_failed=args.allow_failed,
                       results_dir=args.results)
    print(f"promoted {args.run} -> {done.path}")
    print(done.detections)
    return EXIT_OK


def _settings() -> BenchConfig:
    """The suite's own settings (BENCH_* environment, [tool.bench] of ./pyproject.toml), so
    that `bench` and `pytest suites/` agree on the results folder, floors and tolerances."""
    try:
        return load_config()
    except BenchError:  # a bad setting is reported by the suite; fall back to defaults
        return BenchConfig()


def _defaults() -> dict[str, object]:
    cfg = _settings()
    return {"results": cfg.results_dir, "map_tolerance": cfg.map_tolerance,
            "latency_tolerance": cfg.latency_tolerance}


def _add_results_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", "--results-dir", type=Path,
                        default=_defaults()["results"],
                        help="results folder holding runs/ and latest (default: %(default)s)")


def _add_report(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="render a run again (rich table or Markdown)")
    p.add_argument("run", nargs="?", default="latest",
                   help="run dir, report.json, run id or 'latest' (default)")
    p.add_argument("--markdown", action="store_true", help="print summary.md instead")
    p.add_argument("--text", action="store_true", help="print summary.txt (plain text)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="the full environment and every gate check")
    _add_results_option(p)
    p.set_defaults(handler=cmd_report)


def _add_compare(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help="two runs side by side; gate of B against A")
    defaults = _defaults()
    p.add_argument("a", help="the reference run: run dir (e.g. runs/<id>), report.json, "
                             "run id or 'latest'")
    p.add_argument("b", help="the run judged against A (as A)")
    # The suite's option names; the old names stay accepted.
    p.add_argument("--map-tolerance", "--max-map-drop", dest="map_tolerance", type=float,
                   default=defaults["map_tolerance"],
                   help="largest absolute mAP drop against A (default: %(default)s)")
    p.add_argument("--latency-tolerance", "--max-latency-growth", dest="latency_tolerance",
                   type=float, default=defaults["latency_tolerance"],
                   help="largest relative median-latency growth against A "
                        "(default: %(default)s)")
    _add_results_option(p)
    p.set_defaults(handler=cmd_compare)


def _add_baseline(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("baseline", help="manage results/baseline.json")
    actions = p.add_subparsers(dest="baseline_action", required=True)
    promo = actions.add_parser("promote", help="make a complete run the baseline")
    promo.add_argument("run", help="run dir, report.json, run id or 'latest'")
    promo.add_argument("--to", type=Path, default=None,
                       help="baseline file (default: <results>/baseline.json)")
    promo.add_argument("--allow-failed", action="store_true",
                       help="promote even when some rows failed")
    _add_results_option(promo)
    promo.set_defaults(handler=cmd_promote)


def add_report_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `report`, `compare` and `baseline promote` to the `bench` command's subparsers."""
    _add_report(subparsers)
    _add_compare(subparsers)
    _add_baseline(subparsers)
