"""`bench sensitivity VARIANT`: the ranked quantization groups of an INT8 variant."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.errors import BenchError


def add_sensitivity(sub: argparse._SubParsersAction) -> None:
    """Register the `sensitivity` subcommand on the `bench` parser."""
    from bench.diagnose.auto import AUTO_EVAL_IMAGES
    from bench.variants import registry

    names = [n for n, s in registry().items() if s.artifact == "qdq" and s.calibrator]
    parser = sub.add_parser(
        "sensitivity", help="rank an INT8 variant's quantization groups by the mAP each costs",
        description="From nothing kept float, leave each quantization group (a conv with its "
                    "Q/DQ, or a shared-scale group) float in turn and measure mAP on the first "
                    "--images evaluation images; print the groups, most sensitive first. "
                    "Suite options (--model, --coco, --calib, ...) apply as BENCH_<NAME> "
                    "environment variables or [tool.bench] keys. 1 + N evaluations "
                    "(2 + 2N with --alone).")
    parser.add_argument("variant", choices=names)
    parser.add_argument("--images", type=int, default=AUTO_EVAL_IMAGES,
                        help=f"evaluation images per trial (default {AUTO_EVAL_IMAGES})")
    parser.add_argument("--alone", action="store_true",
                        help="also measure each group quantized alone (all else float)")
    parser.add_argument("--top", type=int, default=20, help="groups printed (default 20)")
    parser.add_argument("--plot", help="also draw the ranking to this PNG file")
    parser.set_defaults(handler=run_sensitivity)


def run_sensitivity(args: argparse.Namespace) -> int:
    from bench.config import load_config
    from bench.diagnose.auto import rank_variant
    from bench.diagnose.sensitivity import plot_ranking

    if args.images < 1:
        raise BenchError(f"option --images: got {args.images}; expected >= 1")
    cfg = load_config({"variants": args.variant})
    ranking, fp32_map, seconds = rank_variant(cfg, args.variant, images=args.images,
                                              alone=args.alone)
    print(f"{args.variant}: {len(ranking.rows)} groups, {ranking.evaluations} evaluations on "
          f"{args.images} images in {seconds:.0f} s; fp32 {fp32_map:.4f}, "
          f"all INT8 {ranking.map_int8:.4f}")
    print(f"{'rank':>4}  {'gain float':>10}  {'drop alone':>10}  group")
    for row in ranking.rows[:args.top]:
        alone = "" if row.drop_alone is None else f"{row.drop_alone:+.4f}"
        print(f"{row.rank:>4}  {row.gain_float:+10.4f}  {alone:>10}  {row.group.name}")
    if args.plot:
        print(f"plot: {plot_ranking(ranking, Path(args.plot), top=args.top)}")
    return 0
