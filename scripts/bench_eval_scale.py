"""Does the accuracy pass scale to COCO val2017 (5000 images, 300 detections an image)?

    python scripts/bench_eval_scale.py [--images 5000] [--batch 1] [--threads 2] [--streams 2]
                                       [--passes 2]

The embedded default's evaluation set (250 generated images) is replicated to --images
images (new ids, the same image files). Two measurements, in one process:

1. The accuracy pass with the embedded default model on ONNX Runtime, as the suite runs
   it (CPU, --threads threads in --streams streams, batch --batch): load + letterbox +
   infer + decode + NMS (the ONNX Runtime decode path of bench.eval.decode_ort) + COCO
   evaluation (--evaluator, default the harness's; with the bootstrap's per-image table
   and the results array kept, as a session keeps them), timed per phase; the engine alone
   (the same streams in threads over staged letterboxed batches, nothing else) is timed
   on a probe just before and just after, so the overhead is pass - engine. The pass runs cold
   (the first variant of a session) and then warm (later variants: letterboxed images
   shared through a LetterboxCache, as a session does). Then the pass's own detections
   are scored again by each evaluator in turn.
2. COCO evaluation at val2017's shape: the replicated ground truth topped up to val2017's
   36,781 annotations, 300 detections an image jittered from it (1.5 M at 5000 images),
   scored by each evaluator.

Peak memory is the resident set's high-water mark above the level before the step,
sampled every 20 ms. Targets (issue 15): evaluation overhead (everything but the
engine's own time) <= 25 % of the pass; memory bounded apart from the detections
themselves (bytes per detection about the same at any image count).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.config import BenchConfig
from bench.data import synthetic
from bench.data.coco import CocoDataset
from bench.data.letterbox import letterbox
from bench.eval.accuracy import LetterboxCache, run_accuracy
from bench.eval.coco_eval import DEFAULT_EVALUATOR, EVALUATORS, evaluate
from bench.models.default import default_model_path, load_manifest

VAL2017_IMAGES = 5000
VAL2017_ANNOTATIONS = 36781
TARGET_OVERHEAD = 0.25


class PeakRss:
    """The process's resident set high-water mark above its level at start, sampled."""

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self.base = self.peak = _rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, _rss())

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def replicated(source: CocoDataset, images: int, folder: Path) -> CocoDataset:
    """source's images and annotations repeated (new ids) up to `images` images."""
    data = source.coco.dataset
    base_images, base_anns = data["images"], data["annotations"]
    by_image: dict[int, list[dict]] = {}
    for ann in base_anns:
        by_image.setdefault(ann["image_id"], []).append(ann)
    out_images, out_anns = [], []
    for k in range(images):
        img = base_images[k % len(base_images)]
        new_id = k + 1
        out_images.append({**img, "id": new_id})
        for ann in by_image.get(img["id"], []):
            out_anns.append({**ann, "id": len(out_anns) + 1, "image_id": new_id})
    path = folder / "annotations" / "instances_val.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {**data, "images": out_images, "annotations": out_anns}
    path.write_text(json.dumps(body))
    return CocoDataset.open(path, images_dir=source.images_dir)


def topped_up(ds: CocoDataset, total: int, rng: np.random.Generator) -> dict:
    """ds's ground truth with annotations borrowed from other images (boxes clipped) until
    it holds `total`: val2017's objects-per-image."""
    data = json.loads(json.dumps(ds.coco.dataset))
    images, anns = data["images"], data["annotations"]
    extra = max(0, total - len(anns))
    picks = rng.integers(0, len(anns), extra)
    targets = rng.integers(0, len(images), extra)
    for a, t in zip(picks.tolist(), targets.tolist(), strict=True):
        img = images[t]
        x, y, w, h = anns[a]["bbox"]
        w, h = min(w, img["width"] - 1.0), min(h, img["height"] - 1.0)
        x, y = min(x, img["width"] - w), min(y, img["height"] - h)
        anns.append({**anns[a], "id": len(anns) + 1, "image_id": img["id"],
                     "bbox": [x, y, w, h], "area": w * h})
    return data


def jittered_detections(data: dict, per_image: int, rng: np.random.Generator) -> np.ndarray:
    """per_image detections an image: noisy copies of its ground truth (most with the right
    category), scores uniform, as a detector at conf 0.001 gives."""
    by_image: dict[int, list[list[float]]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append([*ann["bbox"], ann["category_id"]])
    cats = np.array(sorted(c["id"] for c in data["categories"]), dtype=np.float64)
    blocks = []
    for img in data["images"]:
        gt = np.array(by_image.get(img["id"], [[0, 0, img["width"], img["height"], cats[0]]]))
        src = gt[rng.integers(0, len(gt), per_image)]
        det = np.empty((per_image, 7))
        det[:, 0] = img["id"]
        det[:, 1:5] = src[:, :4] * (1 + rng.normal(0, 0.15, (per_image, 4)))
        det[:, 3:5] = np.abs(det[:, 3:5]) + 1
        det[:, 5] = rng.uniform(0.001, 1, per_image).round(5)
        wrong = rng.uniform(size=per_image) < 0.3
        det[:, 6] = np.where(wrong, rng.choice(cats, per_image), src[:, 4])
        blocks.append(det)
    out = np.concatenate(blocks)
    out[:, 1:5] = out[:, 1:5].round(3)
    return out


def ort_streams(threads: int, streams: int | None):
    """The embedded default on ONNX Runtime as the suite opens it for the accuracy pass:
    Engine.infer_streams' callables (streams of threads // streams threads each; one
    stream is the latency session itself), the engine (to deactivate) and the image size."""
    from bench.engines.ort import OrtEngine, OrtOptions

    engine = OrtEngine(default_model_path(), options=OrtOptions(threads=threads)).activate()
    return engine.infer_streams(streams), engine, load_manifest()["model"]["imgsz"]


def engine_alone(infers: list[Callable], ds: CocoDataset, imgsz: int, batch: int,
                 images: int) -> float:
    """Wall seconds of the callables alone over `images` images, one thread each as the
    pass runs them: the source's distinct images are letterboxed once, staged in
    batches, and cycled."""
    distinct = min(len(ds), images)
    chw = np.stack([letterbox(ds.load_rgb(i), imgsz)[0] for i in ds.image_ids[:distinct]])
    batches = [chw[i : i + batch] for i in range(0, distinct, batch)]
    share = -(-images // len(infers))

    def loop(infer: Callable) -> None:
        done, k = 0, 0
        while done < share:
            x = batches[k % len(batches)][: share - done]
            infer(x)
            done += len(x)
            k += 1

    workers = [threading.Thread(target=loop, args=(f,)) for f in infers]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return (time.perf_counter() - start) * images / (share * len(infers))


def timed_eval(coco, results: np.ndarray, evaluator: str) -> tuple[dict, float, float]:
    with PeakRss() as mem:
        t0 = time.perf_counter()
        metrics = evaluate(coco, results, evaluator=evaluator)
        seconds = time.perf_counter() - t0
    return metrics, seconds, mem.extra_mb


def accuracy_pass(args, source: CocoDataset, work: Path) -> None:
    ds = replicated(source, args.images, work / "replicated")
    infer, ort_engine, imgsz = ort_streams(args.threads, args.streams)
    print(f"evaluation set: {len(ds)} images ({min(len(source), len(ds))} distinct),"
          f" {len(ds.coco.anns)} annotations; model: embedded default at {imgsz} px,"
          f" ONNX Runtime CPU, {args.threads} threads in {len(infer)} stream(s), batch"
          f" {args.batch}")
    cache = LetterboxCache()  # as a session shares it between its variants
    try:
        warm: list[float] = []
        for k in range(args.passes):
            name = "cold: the first variant" if k == 0 else f"warm: later variants ({k})"
            res, engine, mem_mb = one_pass(args, infer, ds, source, imgsz, cache)
            share = report_pass(f"1{chr(ord('a') + k)}. accuracy pass, {name}", res, engine,
                                mem_mb, len(ds))
            warm += [share] if k else []
    finally:
        ort_engine.deactivate()
    if len(warm) > 1:
        print(f"\n   warm passes' overhead: {', '.join(f'{w:.1%}' for w in warm)}; median "
              f"{np.median(warm):.1%} (target <= {TARGET_OVERHEAD:.0%})")
    print(f"   letterbox cache: {len(cache)} images, {cache.used / 2**20:.0f} MB"
          f" (bounded by its max_bytes, {cache.max_bytes / 2**20:.0f} MB)")
    results, res = res.results, None
    print("   the same detections scored again, interleaved:")
    for evaluator in ("numpy", "faster", "pycocotools", "numpy", "faster"):
        _, seconds, extra = timed_eval(ds.coco, results, evaluator)
        print(f"     {evaluator:12s} {seconds:6.1f} s  ({1e6 * seconds / len(results):.1f}"
              f" µs/detection), peak +{extra:5.0f} MB")


def one_pass(args, infer, ds, source, imgsz, cache):
    """One accuracy pass, with the engine alone timed on a probe just before and after."""
    probe = min(args.images, args.engine_probe)
    cached_mb = -cache.used / 2**20  # the cache's growth in this pass is reported apart
    before = engine_alone(infer, source, imgsz, args.batch, probe) / probe
    with PeakRss() as mem:
        # as a session runs it: the results array and the bootstrap's table kept
        res = run_accuracy(infer, ds, imgsz=imgsz, batch=args.batch, progress=args.progress,
                           evaluator=args.evaluator, cache=cache, keep_results=True,
                           keep_matches=True)
    after = engine_alone(infer, source, imgsz, args.batch, probe) / probe
    cached_mb += cache.used / 2**20
    print(f"   (letterbox cache grew by {cached_mb:.0f} MB: left out of the peak below)")
    print(f"   (engine alone, its {len(infer)} stream(s) in threads, on {probe} images:"
          f" {1000 * before:.1f} ms/img before, {1000 * after:.1f} after)")
    return res, (before + after) / 2 * len(ds), mem.extra_mb - cached_mb


def report_pass(title: str, res, engine: float, mem_mb: float, n: int) -> float:
    """Print one pass's figures; returns its overhead's share of the pass."""
    n_det = res.n_detections
    phases = res.phase_seconds
    pass_s = res.seconds
    overhead = pass_s - engine
    print(f"\n{title}: {n} images, {n_det} detections ({n_det / n:.0f} an image)")
    print(f"   engine alone            {engine:8.1f} s  ({1000 * engine / n:.1f} ms/img)")
    print(f"   pass, wall              {pass_s:8.1f} s  (the results kept as an array, as a"
          " session keeps them)")
    print(f"     inside infer          {res.infer_seconds:8.1f} s")
    print(f"     decode + NMS (threads){res.decode_seconds:8.1f} s"
          f"  ({1000 * res.decode_seconds / n:.2f} ms/img)")
    print(f"     evaluation ({res.evaluator:11s}){phases['evaluation']:6.1f} s"
          f"  ({1e6 * phases['evaluation'] / max(n_det, 1):.1f} µs/detection)")
    print(f"     matching in the pass  {phases['matching']:8.1f} s  (numpy evaluator: parts"
          " matched in threads while the engine ran)")
    print(f"     input wait            {res.input_wait_seconds:8.1f} s")
    met = overhead <= TARGET_OVERHEAD * pass_s
    print(f"   overhead (pass-engine)  {overhead:8.1f} s = {overhead / pass_s:5.1%} of the pass;"
          f" target <= {TARGET_OVERHEAD:.0%}: {'met' if met else 'NOT met'}")
    need = overhead / n * (1 - TARGET_OVERHEAD) / TARGET_OVERHEAD
    print(f"   the same overhead meets the target with an engine of >= {1000 * need:.1f} ms/img")
    print(f"   peak memory above start {mem_mb:8.0f} MB ({mem_mb * 2**20 / max(n_det, 1):.0f}"
          f" B/detection; the results array: 56 B/detection)")
    print(f"   mAP {res.metrics['map']:.4f}  AR100 {res.metrics['ar100']:.4f}")
    return overhead / pass_s


def val2017_shape(args, source: CocoDataset, work: Path) -> None:
    rng = np.random.default_rng(0)
    ds = replicated(source, args.images, work / "shape")
    total = round(VAL2017_ANNOTATIONS * args.images / VAL2017_IMAGES)
    data = topped_up(ds, total, rng)
    results = jittered_detections(data, args.per_image, rng)
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    print(f"\n2. COCOeval at val2017's shape: {len(data['images'])} images,"
          f" {len(data['annotations'])} annotations, {len(results)} detections"
          f" ({args.per_image} an image; array {results.nbytes / 2**20:.0f} MB)")
    figures = {}
    for evaluator in ("numpy", "faster", "pycocotools", "numpy", "faster"):
        metrics, seconds, extra = timed_eval(gt, results, evaluator)
        figures.setdefault(evaluator, metrics)
        print(f"   {evaluator:12s} {seconds:6.1f} s  ({1e6 * seconds / len(results):.1f} µs/det),"
              f" peak +{extra:5.0f} MB ({extra * 2**20 / len(results):.0f} B/detection)")
    ref = figures["pycocotools"]
    for evaluator in ("numpy", "faster"):
        got = figures[evaluator]
        exact = all(got[k] == ref[k] or (np.isnan(got[k]) and np.isnan(ref[k])) for k in ref)
        close = all(np.isclose(got[k], ref[k], rtol=1e-12, equal_nan=True) for k in ref)
        print(f"   {evaluator} against pycocotools: twelve figures"
              f" {'the same floats' if exact else 'equal to 1e-12' if close else 'DIFFERENT'}")
    print(f"   mAP {ref['map']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=VAL2017_IMAGES)
    parser.add_argument("--per-image", type=int, default=300,
                        help="detections an image in part 2")
    parser.add_argument("--batch", type=int, default=BenchConfig().eval_batch,
                        help="images a call (default: the suite's eval_batch, %(default)s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--streams", type=int, default=BenchConfig().eval_streams,
                        help="inferences at once (default: the suite's, as many as cores)")
    parser.add_argument("--engine-probe", type=int, default=500,
                        help="images the engine alone is timed on, before and after the pass")
    parser.add_argument("--passes", type=int, default=2,
                        help="a cold pass, then passes - 1 warm ones reusing the letterboxed "
                             "images (the overhead of each, and their median, is printed)")
    parser.add_argument("--only", choices=("pass", "shape"), default=None)
    parser.add_argument("--evaluator", choices=EVALUATORS, default=DEFAULT_EVALUATOR,
                        help="the evaluator of the accuracy passes (default %(default)s)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    if args.passes < 1:
        parser.error(f"--passes {args.passes}: expected at least 1 (the cold pass)")
    source = CocoDataset.open(synthetic.ensure_default(progress=True), "val")
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-eval-scale-") as tmp:
        if args.only in (None, "pass"):
            accuracy_pass(args, source, Path(tmp))
        if args.only in (None, "shape"):
            val2017_shape(args, source, Path(tmp))


if __name__ == "__main__":
    main()
