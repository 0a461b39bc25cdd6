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

from bench.errors import BenchError
from bench.report.baseline import comparability, promote
from bench.report.gate import GateConfig, gate_passed, gate_rows
from bench.report.render_compare import compare_renderable
from bench.report.render_markdown import render_markdown
from bench.report.render_rich import make_console, print_run
from bench.report.runs import load_run

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


@one_line_errors("report")
def cmd_report(args: argparse.Namespace) -> int:
    run = load_run(args.run, args.results)
    if args.markdown:
        sys.stdout.write(render_markdown(run))
    else:
        print_run(run, make_console())
    return EXIT_OK


@one_line_errors("compare")
def cmd_compare(args: argparse.Namespace) -> int:
    a, b = load_run(args.a, args.results), load_run(args.b, args.results)
    cfg = GateConfig(map_drop_abs=args.max_map_drop, latency_growth=args.max_latency_growth)
    judged = gate_rows(b.rows, b.environment, a, cfg)
    comp = comparability(a.environment, b.environment)
    make_console().print(compare_renderable(a, b, judged, comp))
    return EXIT_OK if gate_passed(judged) else EXIT_GATE_FAILED


@one_line_errors("baseline promote")
def cmd_promote(args: argparse.Namespace) -> int:
    target = args.to if args.to is not None else args.results / "baseline.json"
    written = promote(args.run, target, allow_failed=args.allow_failed, results_dir=args.results)
    print(f"promoted {args.run} -> {written}")
    return EXIT_OK


def _add_results_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="results folder holding runs/ and latest (default: results)")


def _add_report(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="render a run again (rich table or Markdown)")
    p.add_argument("run", nargs="?", default="latest",
                   help="run dir, report.json, run id or 'latest' (default)")
    p.add_argument("--markdown", action="store_true", help="print summary.md instead")
    _add_results_option(p)
    p.set_defaults(handler=cmd_report)


def _add_compare(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help="two runs side by side; gate of B against A")
    p.add_argument("a", help="the reference run (as for `report`)")
    p.add_argument("b", help="the run judged against A")
    p.add_argument("--max-map-drop", type=float, default=GateConfig.map_drop_abs,
                   help="largest allowed absolute mAP drop (default: %(default)s)")
    p.add_argument("--max-latency-growth", type=float, default=GateConfig.latency_growth,
                   help="largest allowed relative median-latency growth (default: %(default)s)")
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
