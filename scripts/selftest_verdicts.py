"""The harness proves its own error rates on the machine it runs on (prints figures).

On the embedded default, with the suite's own session, measurer and judge:

- A/A: a run is promoted to the baseline, and the unchanged model is run again; every
  latency verdict "regression" is a false alarm (target: at most 1 in 20 trials).
- a known slowdown: the baseline runs the default; the trial runs a copy made about 10 %
  slower without changing its outputs (a side branch multiplied by zero), under the same
  file name (target: "regression" in at least 19 of 20 trials).
- a known accuracy loss: copies whose boxes are shrunk until their mAP is about 0.01 lower
  must fail on mAP against the baseline; the unchanged model must not.

Usage: python scripts/selftest_verdicts.py [--trials 20] [--variants fp32,int8-max]
Each trial is a whole session (accuracy pass on --eval-count images, interleaved latency
pass); artifacts are cached after the first. About 10-20 s a trial on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.config import load_config  # noqa: E402
from bench.report.baseline import promote  # noqa: E402
from bench.session import BenchSession  # noqa: E402

PASS_SECONDS: list[float] = []  # every judged row's latency pass, for the summary


def run_once(model: Path, coco: Path, work: Path, args: argparse.Namespace,
             eval_count: int | None) -> tuple[BenchSession, Path]:
    cfg = load_config({
        "model": str(model), "coco": str(coco), "variants": args.variants,
        "eval_count": eval_count, "results_dir": str(work / "results"),
        "baseline": str(work / "baseline.json"), "cache_dir": str(args.cache),
        "progress": False, "power": "none", "latency_tolerance": args.tolerance,
        "bench_rounds": args.rounds, "latency_blocks": args.blocks,
        "reference_every": args.reference_every}, env={}, pyproject=None)
    session = BenchSession(cfg)
    for variant in cfg.variants:
        prepared = session.prepare(variant)
        if prepared.status == "ok":
            session.measure(prepared)
    return session, session.finish(None, complete=True)


def latency_trials(name: str, baseline_model: Path, trial_model: Path, coco: Path,
                   args: argparse.Namespace) -> list[str]:
    """Each trial: promote a fresh baseline run of baseline_model, then judge a run of
    trial_model (same file name) against it. Returns every row's latency verdict."""
    verdicts: list[str] = []
    for trial in range(args.trials):
        work = Path(tempfile.mkdtemp(prefix=f"selftest-{name}-"))
        _, base_dir = run_once(_named(baseline_model, work / "a"), coco, work, args,
                               args.eval_count)
        promote(base_dir, work / "baseline.json", results_dir=work / "results")
        session, _ = run_once(_named(trial_model, work / "b"), coco, work, args, args.eval_count)
        row_verdicts = [r.baseline_latency_verdict or "none" for r in session.rows.values()]
        verdicts += row_verdicts
        PASS_SECONDS.extend(float((r.extra or {}).get("latency_pass_s") or 0.0)
                            for r in session.rows.values())
        ratios = [f"{r.variant} {r.baseline_latency_ratio:.3f}"
                  f" [{r.baseline_latency_low:.3f}, {r.baseline_latency_high:.3f}]"
                  for r in session.rows.values() if r.baseline_latency_ratio]
        why = sorted({n for r in session.rows.values() for n in r.gate.notes
                      if n.startswith("latency not comparable")})
        print(f"  {name} trial {trial + 1:2d}: {', '.join(row_verdicts)}  ({'; '.join(ratios)})"
              + (f"  [{'; '.join(why)}]" if why else ""), flush=True)
        shutil.rmtree(work, ignore_errors=True)
    return verdicts


def _named(model: Path, folder: Path) -> Path:
    """The model under the file name the baseline knows it by (model.onnx)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "model.onnx"
    shutil.copyfile(model, target)
    return target


def accuracy_trials(src: Path, coco: Path, args: argparse.Namespace
                    ) -> tuple[list[tuple[float, bool]], bool]:
    """([(measured mAP drop, flagged) per --shrink], unchanged model flagged), on all
    evaluation images. Flagged: the row's gate failed on mAP (a latency verdict in the
    same gate is the latency trials' business)."""
    from bench.measure.perturb import write_shrunk_boxes_model

    work = Path(tempfile.mkdtemp(prefix="selftest-acc-"))
    one = argparse.Namespace(**{**vars(args), "variants": "fp32"})
    _, base_dir = run_once(_named(src, work / "a"), coco, work, one, None)
    promote(base_dir, work / "baseline.json", results_dir=work / "results")
    base_map = _fp32_map(base_dir)
    losses = []
    for k, shrink in enumerate(float(x) for x in args.shrink.split(",")):
        shrunk = write_shrunk_boxes_model(src, work / f"shrunk{k}.onnx", shrink)
        lossy, _ = run_once(_named(shrunk, work / f"b{k}"), coco, work, one, None)
        losses.append((base_map - lossy.rows["fp32"].map, _map_flagged(lossy.rows["fp32"])))
    same, _ = run_once(_named(src, work / "c"), coco, work, one, None)
    unchanged_flagged = _map_flagged(same.rows["fp32"])
    shutil.rmtree(work, ignore_errors=True)
    return losses, unchanged_flagged


def _map_flagged(row) -> bool:
    return row.gate.passed is False and any(r.startswith("mAP") for r in row.gate.reasons)


def _fp32_map(run_dir: Path) -> float:
    from bench.report.runs import load_run

    return next(r.map for r in load_run(run_dir).rows if r.variant == "fp32")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--variants", default="fp32,int8-max")
    parser.add_argument("--eval-count", type=int, default=20,
                        help="images of the accuracy pass in latency trials (mAP is not "
                             "what they test)")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--reference-every", type=int, default=None,
                        help="variant blocks between reference blocks (default: the "
                             "suite's default)")
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--slowdown", type=float, default=1.10)
    parser.add_argument("--shrink", default="0.98,0.975",
                        help="box scales of the accuracy-loss models, comma-separated "
                             "(0.98: mAP about 0.0125 lower on the default)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "selftest")
    parser.add_argument("--only", choices=["aa", "slow", "acc"])
    args = parser.parse_args()

    from bench.data.synthetic import ensure_default
    from bench.measure.perturb import calibrate_slowdown
    from bench.models.default import default_model_path

    src = default_model_path()
    coco = ensure_default(args.cache / "datasets")
    began = time.perf_counter()
    figures = []
    if args.only in (None, "aa"):
        aa = latency_trials("aa", src, src, coco, args)
        alarms = aa.count("regression")
        figures.append(f"A/A: {alarms} false alarms in {len(aa)} row-trials "
                       f"({args.trials} runs; target <= 5 %); verdicts {_counts(aa)}")
    if args.only in (None, "slow"):
        import numpy as np

        slow_dir = Path(tempfile.mkdtemp(prefix="selftest-slow-"))
        batch = np.zeros((1, 3, 256, 256), np.float32)
        slowed, convs, measured = calibrate_slowdown(src, slow_dir / src.name, batch,
                                                     target=args.slowdown)
        print(f"slowed model: {convs} extra convs, measured {measured.fmt_ratio()} "
              "(interleaved, one process)", flush=True)
        slow = latency_trials("slow", src, slowed, coco, args)
        caught = slow.count("regression")
        figures.append(f"slowdown {measured.estimate:.3f}x: caught in {caught} of {len(slow)} "
                       f"row-trials (target >= 95 %); verdicts {_counts(slow)}")
    if args.only in (None, "acc"):
        losses, unchanged = accuracy_trials(src, coco, args)
        said = "; ".join(f"mAP −{drop:.4f}: {'flagged' if flagged else 'NOT flagged'}"
                         for drop, flagged in losses)
        figures.append(f"accuracy losses {said}; unchanged model "
                       f"{'FLAGGED on mAP' if unchanged else 'not flagged on mAP'}")
    if PASS_SECONDS:
        import numpy as np

        figures.append(f"latency pass of a judged row: median {np.median(PASS_SECONDS):.2f} s "
                       f"({len(PASS_SECONDS)} rows)")
    print("\n".join(["", "selftest of the verdicts", *figures,
                     f"({time.perf_counter() - began:.0f} s)"]))
    return 0


def _counts(verdicts: list[str]) -> str:
    return ", ".join(f"{k}: {verdicts.count(k)}" for k in sorted(set(verdicts)))


if __name__ == "__main__":
    raise SystemExit(main())
