"""The accuracy pass: letterbox -> infer -> decode + NMS -> COCO results -> COCOeval.

Loading and letterboxing run in a thread pool, a few batches ahead of the engine. The
engine is fed by one thread per stream. With one stream (a GPU engine, say) decoding
runs in the pool behind it; an engine that can run several inferences at once (ONNX
Runtime on the CPU, see Engine.infer_streams) gets several streams, each decoding its
own outputs while the others keep the cores on the network. Results come back in image
order whatever the streams.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from bench.ahead import default_workers
from bench.data.coco import CocoDataset
from bench.data.letterbox import Letterbox, letterbox_rgb, to_chw_float
from bench.errors import ConfigError, InputDataError
from bench.eval.coco_eval import (
    DEFAULT_EVALUATOR,
    METRIC_KEYS,
    check_evaluator,
    evaluate_detailed,
    evaluate_parts,
    to_coco_array,
    write_results,
)
from bench.eval.decode import (
    DEFAULT_CONF,
    DEFAULT_MAX_DET,
    Layout,
    decode_outputs,
    detect_layout,
)
from bench.eval.nms import DEFAULT_IOU

Infer = Callable[[np.ndarray], dict[str, np.ndarray]]
_AHEAD = 2  # batches prepared ahead of the one the engine runs
_POST_AHEAD = 4  # batches of outputs waiting for decoding, at most
_PART_IMAGES = 512  # images the numpy evaluator matches together while the pass runs


@dataclass(frozen=True)
class AccuracyResult:
    """Metrics and timing of one accuracy pass.

    metrics: the twelve COCO figures (METRIC_KEYS), read-only. seconds covers the whole
    pass, COCOeval included; images_per_s is n_images over the streaming part only
    (load, infer, decode + NMS), eval_seconds the rest (COCOeval and writing the
    results); infer_seconds is the time spent inside infer(), summed over the streams;
    decode_seconds the time spent decoding outputs (decode + NMS + results array), summed
    over the threads that decode (with one stream it overlaps inference); input_wait_seconds
    the time the streams sat idle waiting for a prepared batch (near 0 when prefetching
    keeps up); match_seconds the time the numpy evaluator spent matching parts of the
    images while the pass ran (summed over the pool's threads, overlapping inference; the
    rest of its evaluation is in eval_seconds). evaluator: which evaluator scored it
    (bench.eval.coco_eval.EVALUATORS);
    n_detections: the detections it scored; write_seconds: the part of eval_seconds
    spent writing the results JSON (0 without results_path). matches (keep_matches) and
    results (keep_results: the [n, 7] results array scored, RESULT_COLUMNS) are held for
    the session, which keeps the array only until the run folder is written.
    """

    metrics: Mapping[str, float]
    n_images: int
    seconds: float
    images_per_s: float
    infer_seconds: float
    eval_seconds: float = 0.0
    input_wait_seconds: float = 0.0
    results_path: Path | None = None
    streams: int = 1
    decode_seconds: float = 0.0
    match_seconds: float = 0.0
    evaluator: str = DEFAULT_EVALUATOR
    n_detections: int = 0
    write_seconds: float = 0.0
    # per-image matches for the paired bootstrap of ΔmAP (keep_matches=True); not compared
    matches: object | None = field(default=None, compare=False, repr=False)
    # the results array scored (keep_results=True), for the run folder's detections.npz
    results: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if set(self.metrics) != set(METRIC_KEYS):
            raise ValueError(f"metrics keys {sorted(self.metrics)} differ from {list(METRIC_KEYS)}")
        timings = (self.seconds, self.images_per_s, self.infer_seconds, self.decode_seconds)
        if self.n_images < 1 or min(timings) < 0:
            raise ValueError(
                f"implausible accuracy timing: {self.n_images} images, {self.seconds} s"
            )
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    @property
    def phase_seconds(self) -> Mapping[str, float]:
        """Where the pass's time went: inference, decode and evaluation (COCOeval) seconds
        (the first two summed over threads, so they may overlap each other), the numpy
        evaluator's matching while the pass ran (summed over threads), writing the results
        JSON, and the wall time."""
        return MappingProxyType({
            "inference": self.infer_seconds,
            "decode": self.decode_seconds,
            "evaluation": self.eval_seconds - self.write_seconds,
            "matching": self.match_seconds,
            "write": self.write_seconds,
            "input_wait": self.input_wait_seconds,
            "total": self.seconds,
        })


@dataclass(frozen=True)
class _Settings:
    imgsz: int
    conf: float
    iou: float
    max_det: int
    num_classes: int
    class_to_category: tuple[int, ...]


def select_ids(dataset: CocoDataset, eval_count: int | None) -> list[int]:
    """The first eval_count image ids in sorted order (all when None)."""
    ids = sorted(dataset.image_ids)
    if not ids:
        raise InputDataError(f"evaluation set is empty: no images in {dataset.annotation_path}")
    if eval_count is None:
        return ids
    if eval_count < 1:
        raise ConfigError(f"eval_count must be at least 1, got {eval_count}")
    return ids[:eval_count]


class LetterboxCache:
    """Letterboxed uint8 images kept across accuracy passes (one per variant), up to max_bytes.

    Decoding and resizing then happen once per session instead of once per variant;
    images past the budget are simply prepared again each time.
    """

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = max_bytes
        self.used = 0
        self._items: dict[tuple[int, int], tuple[np.ndarray, Letterbox]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> tuple[np.ndarray, Letterbox] | None:
        return self._items.get(key)

    def put(self, key: tuple[int, int], canvas: np.ndarray, box: Letterbox) -> None:
        with self._lock:
            if key not in self._items and self.used + canvas.nbytes <= self.max_bytes:
                self._items[key] = (canvas, box)
                self.used += canvas.nbytes

    def items(self, ids: Sequence[int], imgsz: int) -> list[tuple[np.ndarray, Letterbox]] | None:
        """Every id's canvas and placement at imgsz, in order; None unless all are held."""
        found = [self._items.get((i, imgsz)) for i in ids]
        return None if any(f is None for f in found) else found  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._items)


def _prepare_one(
    dataset: CocoDataset, image_id: int, imgsz: int, out: np.ndarray, cache: LetterboxCache | None
) -> Letterbox:
    hit = cache.get((image_id, imgsz)) if cache is not None else None
    if hit is None:
        hit = letterbox_rgb(dataset.load_rgb(image_id), imgsz)
        if cache is not None:
            cache.put((image_id, imgsz), *hit)
    to_chw_float(hit[0], out)
    return hit[1]


class _Buffers:
    """Batch input arrays handed back after their infer call and reused: a fresh 0.8 MB
    array an image is zero-filled by the allocator and faulted in page by page, which
    costs about as much as filling it. Padding slots of a short (fixed-batch) batch are
    zeroed on reuse."""

    def __init__(self) -> None:
        self._free: dict[tuple[int, ...], list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], used: int) -> np.ndarray:
        with self._lock:
            free = self._free.get(shape)
            arr = free.pop() if free else None
        if arr is None:
            return np.zeros(shape, dtype=np.float32)
        arr[used:] = 0  # the padding stays zero
        return arr

    def give(self, arr: np.ndarray) -> None:
        with self._lock:
            self._free.setdefault(arr.shape, []).append(arr)


def _submit_batch(pool, dataset, chunk: Sequence[int], size: int, imgsz: int, cache,
                  buffers: _Buffers):
    # The batch array is allocated at its full (possibly fixed) size; padding stays zero.
    arr = buffers.take((size, 3, imgsz, imgsz), len(chunk))
    boxes = [
        pool.submit(_prepare_one, dataset, i, imgsz, arr[k], cache) for k, i in enumerate(chunk)
    ]
    return arr, boxes


def _prefetched(
    pool, dataset, chunks, sizes, imgsz, cache, buffers: _Buffers
) -> Iterator[tuple[np.ndarray, list[Letterbox]]]:
    pending: deque = deque()
    upcoming = iter(zip(chunks, sizes, strict=True))
    for chunk, size in upcoming:
        pending.append(_submit_batch(pool, dataset, chunk, size, imgsz, cache, buffers))
        if len(pending) > _AHEAD:
            break
    while pending:
        arr, futures = pending.popleft()
        boxes = [f.result() for f in futures]
        nxt = next(upcoming, None)
        if nxt is not None:
            pending.append(_submit_batch(pool, dataset, nxt[0], nxt[1], imgsz, cache, buffers))
        yield arr, boxes


def _postprocess(
    outputs, layout: Layout, n_batch: int, chunk, boxes, s: _Settings
) -> list[np.ndarray]:
    dets = decode_outputs(
        outputs,
        batch_size=n_batch,
        num_classes=s.num_classes,
        conf=s.conf,
        iou=s.iou,
        max_det=s.max_det,
        layout=layout,
    )
    # zip stops at the real images: the padding's detections fall off here.
    return [
        to_coco_array(image_id, det, box, s.class_to_category)
        for image_id, det, box in zip(chunk, dets, boxes, strict=False)
    ]


def _chunks(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _check_batching(batch: int, fixed_batch: int | None) -> int:
    size = fixed_batch if fixed_batch is not None else batch
    if size < 1:
        name = "fixed_batch" if fixed_batch is not None else "batch"
        raise ConfigError(f"{name} must be at least 1, got {size}")
    return size


def run_accuracy(
    infer: Infer | Sequence[Infer],
    dataset: CocoDataset,
    *,
    imgsz: int,
    batch: int = 1,
    conf: float = DEFAULT_CONF,
    iou: float = DEFAULT_IOU,
    max_det: int = DEFAULT_MAX_DET,
    eval_count: int | None = None,
    progress: bool = True,
    fixed_batch: int | None = None,
    workers: int | None = None,
    results_path: Path | None = None,
    cache: LetterboxCache | None = None,
    label: str = "accuracy",
    evaluator: str = DEFAULT_EVALUATOR,
    keep_matches: bool = False,
    keep_results: bool = False,
) -> AccuracyResult:
    """Run the model over the evaluation images and score it with COCOeval.

    infer: the engine's infer, or a sequence of them that may run at the same time (one
    thread feeds each). fixed_batch: the model's batch size when it cannot vary; the last
    batch is padded to it and the padding's outputs dropped. results_path: also write the
    COCO results JSON. cache: share one LetterboxCache between the passes of a session
    (same dataset). evaluator: "numpy" (the default), "faster" (faster-coco-eval) or
    "pycocotools" (the reference), checked before any inference runs. progress: a bar with images/s
    and the time left. keep_matches: the per-image matches for the paired bootstrap;
    keep_results: the results array itself (~56 bytes a detection), both on the result.
    """
    from bench.progress import bar as progress_bar

    check_evaluator(evaluator)
    size = _check_batching(batch, fixed_batch)
    ids = select_ids(dataset, eval_count)
    chunks = _chunks(ids, size)
    sizes = [size if fixed_batch is not None else len(c) for c in chunks]
    s = _Settings(imgsz, conf, iou, max_det, dataset.num_classes, tuple(dataset.class_to_category))
    infers = [infer] if callable(infer) else list(infer)
    if not infers:
        raise ConfigError("run_accuracy needs at least one infer callable, got none")
    workers = workers or default_workers()
    start = time.perf_counter()
    bar = progress_bar(total=len(ids), desc=label, unit="img", enabled=progress)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench-acc")
    scorer = None
    if evaluator == "numpy":
        scorer = _PartScorer(dataset.coco, ids, chunks, pool)
    try:
        feed = _Feed(pool, dataset, chunks, sizes, s, bar, cache, scorer)
        clock = feed.run(infers)
        streamed = time.perf_counter() - start
        parts = scorer.parts() if scorer is not None else None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    results = np.concatenate([np.zeros((0, 7)), *feed.results])
    feed.per_chunk.clear()  # the per-image arrays are copied into results: let them go
    metrics, matches, path, write_s = _score(dataset, results, ids, evaluator, results_path,
                                             keep_matches, scorer, parts)
    total = time.perf_counter() - start
    return AccuracyResult(
        metrics=metrics,
        n_images=len(ids),
        seconds=total,
        images_per_s=len(ids) / streamed,
        infer_seconds=clock.infer,
        eval_seconds=total - streamed,
        input_wait_seconds=clock.wait,
        results_path=path,
        streams=len(infers),
        decode_seconds=clock.decode,
        match_seconds=scorer.seconds if scorer is not None else 0.0,
        evaluator=evaluator,
        n_detections=len(results),
        write_seconds=write_s,
        matches=matches,
        results=results if keep_results else None,
    )


def _score(dataset: CocoDataset, results: np.ndarray, ids: list[int], evaluator: str,
           results_path: Path | None, keep_matches: bool, scorer: _PartScorer | None = None,
           parts: list | None = None,
           ) -> tuple[dict[str, float], object | None, Path | None, float]:
    """COCOeval's metrics (from the scorer's parts when the pass matched them as it ran);
    the per-image matches a paired bootstrap of ΔmAP resamples (bench.eval.bootstrap.
    MatchTable, read from the same evaluation; None when not asked for or nothing was
    detected); the results JSON written (or None) and the seconds writing took."""
    if scorer is not None and parts is not None:
        metrics, evaluated = evaluate_parts(scorer.context, parts, len(results))
    else:
        metrics, evaluated = evaluate_detailed(dataset.coco, results, ids,
                                               evaluator=evaluator, per_image=keep_matches)
    matches = None
    if keep_matches and evaluated is not None:
        from bench.eval.bootstrap import match_table

        matches = match_table(evaluated)
    if results_path is None:
        return metrics, matches, None, 0.0
    t0 = time.perf_counter()
    path = write_results(results_path, results)
    return metrics, matches, path, time.perf_counter() - t0


class _PartScorer:
    """Matches the pass's detections part by part while the engine still runs (the numpy
    evaluator): once every chunk of a part (about _PART_IMAGES images, in image order) is
    decoded, the pool ranks and matches its detections (bench.eval.coco_numpy's
    EvalContext.match), so that after the last inference only combining the parts,
    accumulate and the bootstrap's table are left. The same floats as one evaluation of
    the whole array (tests/eval/test_coco_numpy.py)."""

    def __init__(self, coco, ids: list[int], chunks: list[list[int]], pool) -> None:
        from bench.eval.coco_numpy import EvalContext

        self.context = EvalContext(coco, ids)
        self.pool, self.lock = pool, threading.Lock()
        self.members: list[list[int]] = []  # part -> its chunk indices
        self.part_of: list[int] = []  # chunk index -> part
        held = _PART_IMAGES
        for index, chunk in enumerate(chunks):
            if held >= _PART_IMAGES:
                self.members.append([])
                held = 0
            self.members[-1].append(index)
            self.part_of.append(len(self.members) - 1)
            held += len(chunk)
        self.left = [len(m) for m in self.members]
        self.futures: list = [None] * len(self.members)
        self.seconds = 0.0  # summed over the threads that matched

    def stored(self, index: int, per_chunk: list[list[np.ndarray]]) -> None:
        part = self.part_of[index]
        with self.lock:
            self.left[part] -= 1
            if self.left[part]:
                return
        self.futures[part] = self.pool.submit(self._match, part, per_chunk)

    def _match(self, part: int, per_chunk: list[list[np.ndarray]]):
        t0 = time.perf_counter()
        arrays = [r for k in self.members[part] for r in per_chunk[k]]
        matched = self.context.match(np.concatenate([np.zeros((0, 7)), *arrays]))
        with self.lock:
            self.seconds += time.perf_counter() - t0
        return matched

    def parts(self) -> list:
        """Every part's matches (waits for those still running)."""
        if any(f is None for f in self.futures):
            raise RuntimeError("the accuracy pass ended before every chunk was decoded")
        return [f.result() for f in self.futures]


@dataclass
class _Clock:
    infer: float = 0.0
    wait: float = 0.0
    decode: float = 0.0


class _Feed:
    """Feeds prepared batches to the engine's streams and collects the decoded results.

    Each stream's thread takes the next prepared batch, runs its infer, and decodes the
    outputs (several streams) or hands them to the pool (one stream); results land by
    chunk index, so in image order.
    """

    def __init__(self, pool, dataset, chunks, sizes, s: _Settings, bar, cache,
                 scorer: _PartScorer | None = None):
        self.pool, self.chunks, self.s, self.bar = pool, chunks, s, bar
        self.scorer = scorer
        self.buffers = _Buffers()
        self.batches = enumerate(
            _prefetched(pool, dataset, chunks, sizes, s.imgsz, cache, self.buffers))
        self.lock = threading.Lock()
        self.clock = _Clock()
        self.layout: Layout | None = None
        self.per_chunk: list[list[np.ndarray]] = [[] for _ in chunks]
        self.failed: BaseException | None = None
        self.inline = False  # decode in the stream's own thread (set by run)

    @property
    def results(self) -> list[np.ndarray]:
        return [r for chunk in self.per_chunk for r in chunk]

    def run(self, infers: Sequence[Infer]) -> _Clock:
        # One stream hands decoding to the pool, so the engine (often a GPU) never waits
        # on it; several streams decode in their own threads, the other streams' engine
        # calls filling the cores meanwhile (measured faster than handing off, on 2 cores).
        self.inline = len(infers) > 1
        if len(infers) == 1:
            self._serve(infers[0])
        else:
            threads = [
                threading.Thread(target=self._guarded, args=(f,), name=f"bench-stream-{k}")
                for k, f in enumerate(infers)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if self.failed is not None:
                raise self.failed
        return self.clock

    def _guarded(self, infer: Infer) -> None:
        try:
            self._serve(infer)
        except BaseException as exc:  # re-raised by run(), in the calling thread
            with self.lock:
                self.failed = self.failed or exc

    def _next(self):
        with self.lock:
            if self.failed is not None:
                return None
            return next(self.batches, None)

    def _serve(self, infer: Infer) -> None:
        post: deque = deque()
        try:
            while True:
                t0 = time.perf_counter()
                item = self._next()
                if item is None:
                    break
                index, (arr, boxes) = item
                t1 = time.perf_counter()
                outputs = infer(arr)
                t2 = time.perf_counter()
                self.buffers.give(arr)  # the engine is done with its input
                # Copies, because an engine may reuse its output buffers on the next call,
                # unless its infer says each call returns arrays of its own.
                if not getattr(infer, "fresh_outputs", False):
                    outputs = {name: np.array(a, copy=True) for name, a in outputs.items()}
                with self.lock:
                    self.clock.wait += t1 - t0
                    self.clock.infer += t2 - t1
                    self.layout = self.layout or detect_layout(outputs, self.s.num_classes)
                chunk = self.chunks[index]
                args = (outputs, self.layout, arr.shape[0], chunk, boxes, self.s)
                if self.inline:
                    self._store(index, self._decode(*args))
                    continue
                post.append((index, self.pool.submit(self._decode, *args)))
                while len(post) > _POST_AHEAD:  # bounds the outputs held in memory
                    self._collect(*post.popleft())
            while post:
                self._collect(*post.popleft())
        finally:
            for _, future in post:
                future.cancel()

    def _decode(self, *args) -> list[np.ndarray]:
        t0 = time.perf_counter()
        results = _postprocess(*args)
        spent = time.perf_counter() - t0
        with self.lock:
            self.clock.decode += spent
        return results

    def _collect(self, index: int, future) -> None:
        self._store(index, future.result())

    def _store(self, index: int, results: list[np.ndarray]) -> None:
        self.per_chunk[index] = results
        if self.scorer is not None:
            self.scorer.stored(index, self.per_chunk)
        self.bar.update(len(self.chunks[index]))
