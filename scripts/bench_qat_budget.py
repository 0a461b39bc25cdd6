"""What QAT's step budget buys on the embedded default (prints figures).

    python scripts/bench_qat_budget.py [--steps 60,100,200] [--init percentile]

For each budget, int8-qat is trained as the suite trains it (the run's calibration and QAT
images, the default schedule shortened or stretched to that many steps, the held-out
check), and what it would write is scored on the evaluation set: steps, training seconds,
held-out error before and after, which weights it kept, and mAP. The PTQ start's own mAP
is printed first. This is the evidence behind bench.quant.qat.MIN_DEFAULT_STEPS.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.config import load_config  # noqa: E402
from bench.engines.factory import make_engine  # noqa: E402
from bench.quant import qat  # noqa: E402
from bench.quant.qdq import write_qdq  # noqa: E402
from bench.run import RunContext  # noqa: E402
from bench.variants import spec_of  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="60,100,200", help="budgets, comma-separated")
    parser.add_argument("--init", default="percentile", help="the PTQ calibration to start from")
    args = parser.parse_args()
    budgets = [int(s) for s in args.steps.split(",")]
    if not budgets or min(budgets) < 1:
        parser.error(f"--steps {args.steps!r}: expected positive step counts")

    cfg = load_config({"progress": False}, env={}, pyproject=None)
    run = RunContext(cfg)
    ctx = run.build_context()
    model, plan = ctx.quant_plan(())
    amax = ctx.calibrate(plan, args.init)
    settings = qat.qat_settings(cfg)
    images = np.concatenate([np.rint(b * 255).astype(np.uint8)
                             for b in qat._limited(ctx.qat_batches(), settings.images)])
    work = Path(tempfile.mkdtemp(prefix="qat-budget-"))

    def score(tuned: onnx.ModelProto, tuned_amax: dict[str, float], name: str) -> float:
        path = work / f"{name}.onnx"
        onnx.save(write_qdq(tuned, plan, tuned_amax, profile=cfg.profile), str(path))
        engine = make_engine(cfg, spec_of("int8-max"), path).activate()
        try:
            return float(run.accuracy(engine, name).metrics["map"])
        finally:
            engine.deactivate()

    print(f"{len(images)} QAT images; start: int8-{args.init}, mAP "
          f"{score(model, dict(amax), 'start'):.4f}", flush=True)
    for steps in budgets:
        result = qat.run_qat(model, plan, amax, images, replace(settings, steps=steps),
                             profile=cfg.profile, progress=False)
        before, after = (f"{e:.5f}" if e is not None else "none"
                         for e in (result.holdout_initial, result.holdout_trained))
        print(f"{steps:4d} steps: training {result.seconds:5.1f} s "
              f"({result.seconds / result.steps:.3f} s a step), held-out error "
              f"{before} -> {after}, kept "
              f"{result.kept}, mAP {score(result.model, result.amax, f'qat{steps}'):.4f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
