"""Measure the harness against its own performance targets and print the figures.

  1. harness-timed median latency (the suite's pytest-benchmark figure) vs a raw
     InferenceSession.run loop on the same input (target: within 3 %);
  2. accuracy-pass throughput vs the raw engine's (target: >= 90 %);
  3. the INT8 variants' speed against FP32 (target: one INT8 variant faster on the CPU);
  4. the full matrix cold (empty cache) and warm (target: <= 5 min and <= 1 min on 2 cores),
     with the peak RSS of each run (target: <= 3 GiB).

Usage: python scripts/bench_harness.py [--model M.onnx --coco DIR] [--skip-matrix]
Timings are wall-clock on whatever machine runs this; the script prints its CPU model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def raw_median_ms(model: Path, batch: np.ndarray, rounds: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(5):
        session.run(None, {name: batch})
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        session.run(None, {name: batch})
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def suite(args: list[str], cache: Path, results: Path) -> tuple[float, float, dict]:
    """Run the suite in a subprocess; wall seconds, peak RSS GiB, and its report."""
    env = {**os.environ, "BENCH_CACHE_DIR": str(cache), "BENCH_PROGRESS": "false"}
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "suites"), "--benchmark-only", "-q",
           "-p", "no:cacheprovider", "--results-dir", str(results), *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 2**20
    if done.returncode not in (0, 1):
        sys.exit(f"suite failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    report = json.loads((results / "latest" / "report.json").read_text())
    return wall, peak, report


def staged_batch(model_args: list[str]) -> tuple[Path, np.ndarray]:
    from bench.config import load_config
    from bench.session import BenchSession

    session = BenchSession(load_config(_options(model_args)))
    return session.inputs().model_path, session.staged_batch()


def _options(model_args: list[str]) -> dict:
    pairs = dict(zip(model_args[::2], model_args[1::2]))
    return {"model": pairs.get("--model"), "coco": pairs.get("--coco")}


def latency_check(model_args: list[str], cache: Path, work: Path) -> None:
    model, batch = staged_batch(model_args)
    raw_before = raw_median_ms(model, batch, 200)
    _, _, report = suite([*model_args, "--variants", "fp32", "--bench-rounds", "200"],
                         cache, work / "latency")
    raw_after = raw_median_ms(model, batch, 200)
    harness = report["rows"][0]["latency_ms"]["median"]
    raw = (raw_before + raw_after) / 2
    print(f"1. latency: harness median {harness:.3f} ms, raw InferenceSession.run "
          f"{raw:.3f} ms (before {raw_before:.3f}, after {raw_after:.3f}): "
          f"{100 * (harness / raw - 1):+.1f} %  (target within 3 %)")


def accuracy_check(model_args: list[str]) -> None:
    from bench.config import load_config
    from bench.engines.ort import OrtEngine
    from bench.eval.accuracy import LetterboxCache, run_accuracy
    from bench.session import BenchSession

    session = BenchSession(load_config({**_options(model_args), "progress": False}))
    inputs = session.inputs()
    with OrtEngine(inputs.model_path) as engine:
        batch = session.staged_batch()
        count = 100
        start = time.perf_counter()
        for _ in range(count):
            engine.infer(batch)
        raw_ips = count * batch.shape[0] / (time.perf_counter() - start)
        cache = LetterboxCache()  # as in the suite: images prepared once per session
        passes = [run_accuracy(engine.infer, inputs.dataset, imgsz=inputs.imgsz,
                               progress=False, fixed_batch=inputs.fixed_batch, cache=cache)
                  for _ in range(2)]
    for name, result in zip(("first (cold images)", "later (cached images)"), passes):
        busy = result.infer_seconds / (result.n_images / result.images_per_s)
        print(f"2. accuracy pass, {name}: {result.images_per_s:.1f} img/s over "
              f"{result.n_images} images vs raw engine {raw_ips:.1f} img/s: "
              f"{100 * result.images_per_s / raw_ips:.0f} % (target >= 90 %); engine busy "
              f"{100 * busy:.0f} % of the pass; mAP {result.metrics['map']:.4f}")


def matrix_check(model_args: list[str], work: Path) -> None:
    cache = work / "cold-cache"
    cold, cold_peak, report = suite(model_args, cache, work / "matrix")
    warm, warm_peak, report = suite(model_args, cache, work / "matrix")
    print(f"4. full matrix: cold {cold:.0f} s (peak RSS {cold_peak:.2f} GiB), "
          f"warm {warm:.0f} s (peak RSS {warm_peak:.2f} GiB); targets 300 s, 60 s, 3 GiB")
    rows = {r["variant"]: r for r in report["rows"]}
    fp32 = rows["fp32"]["latency_ms"]["median"]
    print("3. speed against fp32 (warm run):")
    for name, row in rows.items():
        if row["status"] == "ok":
            median = row["latency_ms"]["median"]
            print(f"   {name:<16} median {median:7.2f} ms  x{fp32 / median:4.2f}  "
                  f"mAP {row['map']:.4f}")
        else:
            print(f"   {name:<16} {row['status']}: {row.get('error') or row.get('reason')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--coco")
    parser.add_argument("--skip-matrix", action="store_true")
    args = parser.parse_args()
    model_args = [a for pair in (("--model", args.model), ("--coco", args.coco)) if pair[1]
                  for a in pair]
    from bench.environment import cpu_model

    print(f"machine: {cpu_model()}, {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from bench.config import default_cache_dir

        latency_check(model_args, default_cache_dir(), work)
        accuracy_check(model_args)
        if not args.skip_matrix:
            matrix_check(model_args, work)


if __name__ == "__main__":
    main()
