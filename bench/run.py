"""The run context: what one run measures and builds with, resolved once from the config.

Inputs (model, evaluation and calibration sets), the build context of the variant
builders, the staged latency batch, the evaluation's fingerprint, and every check that can
be made before the first variant is built. The CLI and the scripts use it directly.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.cache import ArtifactCache, file_sha256
from bench.config import BenchConfig
from bench.errors import BenchError, ConfigError
from bench.variants import spec_of

if TYPE_CHECKING:
    from bench.build import BuildContext
    from bench.engines.base import Engine
    from bench.eval.accuracy import AccuracyResult, LetterboxCache
    from bench.inputs import RunInputs

QAT_BATCH = 8


@dataclass(frozen=True)
class Fingerprint:
    """What makes two evaluations (or two calibrations) the same: a digest and a summary."""

    digest: str
    summary: str


class RunContext:
    """Inputs resolved once; a bad model or dataset fails every variant with one reason."""

    def __init__(self, cfg: BenchConfig):
        self.cfg = cfg
        self._inputs: RunInputs | None = None
        self._error: BenchError | None = None
        self._build: BuildContext | None = None
        self._letterboxed: LetterboxCache | None = None
        self._letterbox_stored = False  # the letterboxed images are in the artifact cache
        self._staged: np.ndarray | None = None
        self._fingerprints: dict[str, Fingerprint] = {}  # computed once: they hash files

    def inputs(self) -> RunInputs:
        from bench.inputs import resolve_inputs

        if self._error is not None:
            raise self._error
        if self._inputs is None:
            try:
                self._inputs = resolve_inputs(self.cfg)
            except BenchError as exc:
                self._error = exc
                raise
        return self._inputs

    @property
    def inputs_error(self) -> BenchError | None:
        """Why the inputs could not be resolved (every variant would fail the same way)."""
        return self._error

    @property
    def resolved(self) -> RunInputs | None:
        """The inputs if they were resolved already, without resolving them."""
        return self._inputs

    def build_context(self) -> BuildContext:
        from bench.build import BuildContext

        if self._build is None:
            inputs, cfg = self.inputs(), self.cfg
            qat_batch = inputs.fixed_batch or QAT_BATCH
            self._build = BuildContext(
                cfg=cfg, model_path=inputs.model_path,
                calib_batches=lambda: inputs.calib_batches(cfg.calib_count,
                                                           batch=inputs.fixed_batch or 1),
                qat_batches=lambda: inputs.calib_batches(cfg.qat_images, batch=qat_batch),
                calib_id=self.calibration_fingerprint().digest, fixed_batch=inputs.fixed_batch,
                qat_calib_id=self._qat_fingerprint(qat_batch)
                if any(spec_of(v).builder == "qat" for v in cfg.variants) else "",
                cache=ArtifactCache(Path(cfg.cache_dir) / "artifacts"))
        return self._build

    def letterboxed(self) -> LetterboxCache:
        """Images decoded and resized once per run, shared by every accuracy pass."""
        from bench.eval.accuracy import LetterboxCache

        if self._letterboxed is None:
            self._letterboxed = LetterboxCache()
            self._letterbox_stored = self._load_letterboxed(self._letterboxed)
        return self._letterboxed

    def _letterbox_store(self) -> tuple[ArtifactCache, dict, list[int]] | None:
        """(cache, key parts, ids) of the run's stored letterboxed images; None when they
        would not fit the in-memory cache (not stored, so their files are not hashed) or
        cannot all be read (the pass then says which one)."""
        from bench.data.letterbox_store import store_parts
        from bench.eval.accuracy import select_ids

        inputs = self.inputs()
        ids = select_ids(inputs.dataset, self.cfg.eval_count)
        if len(ids) * 3 * inputs.imgsz ** 2 > self.letterboxed().max_bytes:
            return None
        try:
            parts = store_parts([inputs.dataset.image_path(i) for i in ids], inputs.imgsz)
        except OSError:
            return None
        return ArtifactCache(Path(self.cfg.cache_dir) / "artifacts", sweep=False), parts, ids

    def _load_letterboxed(self, memory: LetterboxCache) -> bool:
        """Fill `memory` from the stored letterboxed images (bench.data.letterbox_store);
        whether it was."""
        from bench.data.letterbox_store import load

        store = self._letterbox_store()
        items = load(*store) if store is not None else None
        if items is None:
            return False
        for image_id, (canvas, box) in zip(store[2], items, strict=True):
            memory.put((image_id, self.inputs().imgsz), canvas, box)
        return len(memory) == len(items)

    def _store_letterboxed(self) -> None:
        """After a pass prepared every image: keep them for the next run (a cache; a
        failure to write it costs the next run time, nothing else)."""
        from bench.data.letterbox_store import save

        if self._letterbox_stored or self._letterboxed is None:
            return
        store = self._letterbox_store()
        if store is None:
            return
        cache, parts, ids = store
        items = self._letterboxed.items(ids, self.inputs().imgsz)
        if items is None:  # past the in-memory budget: not stored
            return
        try:
            save(cache, parts, ids, items)
        except (OSError, BenchError):
            return
        self._letterbox_stored = True

    def staged_batch(self) -> np.ndarray:
        """The first evaluation image, letterboxed, repeated to the latency batch size."""
        from bench.data.letterbox import letterbox

        if self._staged is None:
            inputs = self.inputs()
            image = inputs.dataset.load_rgb(inputs.dataset.image_ids[0])
            chw = letterbox(image, inputs.imgsz)[0]
            size = inputs.fixed_batch or self.cfg.batch
            self._staged = np.ascontiguousarray(np.repeat(chw[None], size, axis=0))
        return self._staged

    def accuracy(self, engine: Engine, label: str) -> AccuracyResult:
        """The COCO accuracy pass of one engine on the run's evaluation images."""
        from bench.eval.accuracy import run_accuracy

        inputs, cfg = self.inputs(), self.cfg
        result = run_accuracy(
            engine.infer_streams(cfg.eval_streams), inputs.dataset, imgsz=inputs.imgsz,
            batch=cfg.eval_batch, conf=cfg.conf, iou=cfg.iou, max_det=cfg.max_det,
            eval_count=cfg.eval_count, progress=cfg.progress, fixed_batch=inputs.fixed_batch,
            cache=self.letterboxed(), label=label, evaluator=cfg.evaluator, keep_matches=True,
            keep_results=True)
        self._store_letterboxed()
        return result

    def score(self, results: np.ndarray):
        """A results array scored as the accuracy pass scores its own (the run's images,
        annotations and evaluator): the MatchTable of the paired bootstrap
        (bench.eval.bootstrap), e.g. for a baseline's stored detections."""
        from bench.eval.accuracy import select_ids
        from bench.eval.bootstrap import evaluate_for_bootstrap

        inputs, cfg = self.inputs(), self.cfg
        return evaluate_for_bootstrap(inputs.dataset.coco, results,
                                      select_ids(inputs.dataset, cfg.eval_count),
                                      evaluator=cfg.evaluator)

    def end_to_end(self, engine: Engine) -> Callable[[], object]:
        """One image through pre-processing (letterbox of the decoded image), infer, and
        decode + NMS: the call the end-to-end latency times."""
        from bench.data.letterbox import letterbox
        from bench.eval.decode import decode_outputs

        inputs, cfg = self.inputs(), self.cfg
        image = inputs.dataset.load_rgb(inputs.dataset.image_ids[0])

        def once() -> object:
            chw = letterbox(image, inputs.imgsz)[0][None]
            return decode_outputs(engine.infer(chw), conf=cfg.conf, iou=cfg.iou,
                                  max_det=cfg.max_det)

        return once

    # -- fingerprints ---------------------------------------------------------------------
    def evaluation_fingerprint(self) -> Fingerprint:
        """Images, annotations, input size, letterbox and thresholds of the accuracy pass:
        two mAPs are compared only when these are equal."""
        if "evaluation" not in self._fingerprints:
            self._fingerprints["evaluation"] = self._evaluation_fingerprint()
        return self._fingerprints["evaluation"]

    def _evaluation_fingerprint(self) -> Fingerprint:
        from bench.data.letterbox import PAD_VALUE
        from bench.eval.accuracy import select_ids

        inputs, cfg = self.inputs(), self.cfg
        ids = select_ids(inputs.dataset, cfg.eval_count)
        parts = {"images": ids, "annotations": file_sha256(Path(inputs.dataset.annotation_path)),
                 "imgsz": inputs.imgsz, "letterbox": {"pad": PAD_VALUE, "square": True},
                 "conf": cfg.conf, "iou": cfg.iou, "max_det": cfg.max_det}
        summary = (f"{len(ids)} images of {Path(inputs.dataset.annotation_path).name} at "
                   f"{inputs.imgsz} px, conf {cfg.conf:g}, IoU {cfg.iou:g}, "
                   f"max_det {cfg.max_det}")
        return Fingerprint(_digest(parts), summary)

    def calibration_fingerprint(self) -> Fingerprint:
        """The calibration images' contents in the order used, with count and size."""
        if "calibration" not in self._fingerprints:
            self._fingerprints["calibration"] = self._calibration_fingerprint()
        return self._fingerprints["calibration"]

    def _calibration_fingerprint(self) -> Fingerprint:
        from bench.data.calibration import calibration_fingerprint

        inputs, cfg = self.inputs(), self.cfg
        digest = calibration_fingerprint(inputs.calib_source, cfg.calib_count, inputs.imgsz,
                                         batch=inputs.fixed_batch or 1)
        return Fingerprint(digest, f"{cfg.calib_count} images of {inputs.calib_label} "
                                   f"at {inputs.imgsz} px")

    def _qat_fingerprint(self, batch: int) -> str:
        from bench.data.calibration import calibration_fingerprint

        inputs = self.inputs()
        return calibration_fingerprint(inputs.calib_source, self.cfg.qat_images, inputs.imgsz,
                                       batch=batch)

    # -- checks before any work -----------------------------------------------------------
    def check_before_work(self) -> None:
        """Every check that needs no model built: bad options, an unreadable baseline, an
        unwritable results or cache folder stop the run here, with one line each."""
        cfg = self.cfg
        _check_writable(Path(cfg.results_dir), "results_dir")
        _check_writable(Path(cfg.cache_dir), "cache_dir")
        if Path(cfg.results_dir).is_dir():
            sweep_results(Path(cfg.results_dir))
        from bench.report.baseline import load_baseline

        load_baseline(Path(cfg.baseline))  # a corrupt or other-schema file raises here


def sweep_results(results: Path) -> list[Path]:
    """Remove temporaries of runs killed while writing, in results/ (the `latest` link)
    and in each runs/<id>/ (its files): those older than an hour, and those whose writer
    process no longer runs on this machine. Returns what was removed."""
    from bench.atomic import sweep_stale, writer_alive

    runs = results / "runs"
    folders = [results, *(sorted(p for p in runs.iterdir() if p.is_dir())
                          if runs.is_dir() else ())]
    removed: list[Path] = []
    for folder in folders:
        removed += sweep_stale(folder)
        removed += sweep_stale(folder, 0.0, keep=writer_alive)
    return removed


def _digest(parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_writable(folder: Path, option: str) -> None:
    """Write (and remove) a probe file in the folder, or in its nearest existing parent
    when it does not exist yet, so that a run never finds out at its end that it cannot
    write its results. Nothing is created or left behind."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a folder")
        probe = existing / f".bench-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"option {option}: {folder} is not writable "
                          f"({exc.strerror or exc}); expected a folder this user can write") \
            from None
