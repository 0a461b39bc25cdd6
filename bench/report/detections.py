"""The detections a run scored, kept beside its report, and what the baseline's are for.

A run folder holds detections.npz: one [n, 7] float64 results array per variant (columns
bench.eval.coco_eval.RESULT_COLUMNS, each an .npy member named after the variant), the
arrays the accuracy pass scored. report.json lists it in "files" and records its sha256
under "detections". `bench baseline promote` copies it beside the baseline as a sidecar
(baseline.detections.<sha256[:12]>.npz: a new name per content, so that the old baseline
and its sidecar stay whole until the new baseline.json has replaced the old one).

With both, ΔmAP against the baseline gets a paired bootstrap CI over images: the baseline's
detections of the variant are scored again on this run's evaluation (the same images and
annotations: the judge asks only when the evaluation fingerprints match) into a
MatchTable, and bench.eval.bootstrap.delta_map_ci pairs it with this run's own.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.atomic import atomic_write
from bench.errors import BenchError, InputDataError, one_line

if TYPE_CHECKING:
    from bench.eval.bootstrap import MatchTable
    from bench.measure.stats import Interval
    from bench.report.rows import ResultRow
    from bench.report.runs import Run

DETECTIONS_NAME = "detections.npz"
SIDECAR_SUFFIX = ".detections"
# ΔmAP's CI is only of the detections the baseline's mAP came from: re-scored, they must
# give its mAP again (the two evaluators agree to ~1e-15)
REPRODUCE_TOLERANCE = 1e-6
_CHUNK = 1 << 20


def _columns() -> list[str]:
    from bench.eval.coco_eval import RESULT_COLUMNS

    return list(RESULT_COLUMNS)


def write_detections(path: Path, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Write arrays (variant -> [n, 7] results array) as one compressed .npz, atomically;
    returns the record report.json keeps: file, sha256, columns, detections per variant."""
    path = Path(path)
    width = len(_columns())
    checked = {}
    for name, array in arrays.items():
        a = np.asarray(array, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != width:
            raise InputDataError(f"{name}: detections of shape {a.shape}, expected [n, {width}]")
        checked[name] = a

    def dump(handle) -> None:
        # np.savez_compressed's own format, written member by member (a variant name can
        # be anything, including one of savez's keywords); deflate level 1: measured on
        # the default's 322k detections, 0.16 s and 5.9 MB against level 6's 0.54 s, 5.3 MB
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED,
                             compresslevel=1) as archive:
            for name, a in checked.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(a),
                                              allow_pickle=False)

    atomic_write(path, dump)
    return {"file": path.name, "sha256": _sha256(path), "columns": _columns(),
            "variants": {name: int(len(a)) for name, a in checked.items()}}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def detections_file(run: Run) -> Path | None:
    """Where run's detections file lies (beside its report), or None when it records none."""
    if run.detections is None or run.path is None:
        return None
    return run.path.parent / run.detections["file"]


def sidecar_name(baseline_path: Path, sha256: str) -> str:
    """The sidecar's name beside baseline_path: <stem>.detections.<sha256[:12]>.npz."""
    return f"{Path(baseline_path).stem}{SIDECAR_SUFFIX}.{sha256[:12]}.npz"


def is_sidecar_name(baseline_path: Path, name: str) -> bool:
    """Whether name is one sidecar_name gives beside baseline_path."""
    prefix = f"{Path(baseline_path).stem}{SIDECAR_SUFFIX}."
    digest = name[len(prefix):-len(".npz")] if name.endswith(".npz") else ""
    return name.startswith(prefix) and len(digest) == 12 and all(
        c in "0123456789abcdef" for c in digest)


class _Mismatch(Exception):
    pass


@dataclass(frozen=True)
class Sidecar:
    """The outcome of copying a run's detections beside a baseline: the record the
    baseline keeps (None: no detections), the file written, and what to tell the user."""

    record: dict[str, Any] | None
    path: Path | None
    note: str


def copy_sidecar(run: Run, baseline_path: Path) -> Sidecar:
    """Copy run's detections beside baseline_path under a name of their own, checking the
    bytes copied against the sha256 the run recorded. A run without them (written before
    runs kept them), or whose file does not match, gives no sidecar and says so: the
    baseline is promoted all the same, without a ΔmAP CI against it."""
    source = detections_file(run)
    if source is None:
        return Sidecar(None, None, f"no detections: {run.name} has no {DETECTIONS_NAME} (a run "
                                   "written before runs kept them): ΔmAP against this baseline "
                                   "will have no CI")
    record = dict(run.detections or {})
    target = Path(baseline_path).parent / sidecar_name(baseline_path, record["sha256"])

    try:
        src = source.open("rb")
    except OSError as exc:
        return Sidecar(None, None, f"no detections: {source} cannot be read "
                                   f"({exc.strerror or exc}): ΔmAP against this baseline "
                                   "will have no CI")

    def copy(handle) -> None:
        digest = hashlib.sha256()
        while block := src.read(_CHUNK):
            digest.update(block)
            handle.write(block)
        if digest.hexdigest() != record["sha256"]:
            raise _Mismatch(digest.hexdigest())

    try:
        with src:
            atomic_write(target, copy)
    except _Mismatch as exc:
        return Sidecar(None, None, f"no detections: {source} has sha256 {exc.args[0][:12]}…, "
                                   f"its report says {record['sha256'][:12]}… (changed since "
                                   "the run): ΔmAP against this baseline will have no CI")
    record["file"] = target.name
    counts = record.get("variants") or {}
    return Sidecar(record, target, f"detections: {target.name} ({len(counts)} variants): ΔmAP "
                                   "against this baseline gets a paired bootstrap CI")


# Why a row has no CI against the baseline, in the gate's note.
NO_DETECTIONS = "baseline has no stored detections"


class BaselineDetections:
    """The judge's source of ΔmAP CIs against the baseline (bench.report.judge.BaselineCI).

    rescore(results array) -> MatchTable scores the baseline's detections of a variant on
    this run's evaluation (the run's images, annotations and evaluator). The sidecar's
    sha256 is checked once; each variant's array is read when its row is judged and
    dropped after."""

    def __init__(self, baseline: Run, rescore: Callable[[np.ndarray], MatchTable]):
        self.baseline, self.rescore = baseline, rescore
        self._problem: str | None = None
        self._checked = False

    def __call__(self, row: ResultRow, base: ResultRow, matches: object | None,
                 results: np.ndarray | None = None) -> Interval | str:
        """The CI of row.map − base.map, or why there is none. matches: the row's
        MatchTable; results: the array it was scored from (when the baseline's equals it,
        as for an unchanged model, its evaluation is the row's own: not run again)."""
        from bench.eval.bootstrap import MatchTable, delta_map_ci

        if not isinstance(matches, MatchTable):
            return "this row kept no per-image matches"
        problem = self._file_problem()
        if problem:
            return problem
        try:
            stored = self._read(base.variant)
            if stored is None:
                return f"{NO_DETECTIONS} for {base.variant}"
            same = results is not None and np.array_equal(stored, results)
            table = matches if same else self.rescore(stored)
            del stored
            again = float(table.ap()[0])
            if base.map is not None and abs(again - base.map) > REPRODUCE_TOLERANCE:
                return (f"the baseline's detections of {base.variant} score mAP {again:.4f} "
                        f"here, its row says {base.map:.4f}: not the detections it was "
                        "scored from")
            return delta_map_ci(matches, table)
        except BenchError as exc:  # different images or categories, no detections
            return one_line(exc)

    def _file_problem(self) -> str | None:
        if not self._checked:
            self._problem, self._checked = self._check_file(), True
        return self._problem

    def _check_file(self) -> str | None:
        path = detections_file(self.baseline)
        if path is None:
            return f"{NO_DETECTIONS} (promoted from a run without {DETECTIONS_NAME})"
        try:
            sha = _sha256(path)
        except OSError as exc:
            return f"baseline detections {path.name} unreadable ({exc.strerror or exc})"
        if sha != self.baseline.detections["sha256"]:
            return (f"baseline detections {path.name} do not match the sha256 the baseline "
                    "records")
        return None

    def _read(self, variant: str) -> np.ndarray | None:
        path = detections_file(self.baseline)
        try:
            with np.load(path, allow_pickle=False) as archive:
                return archive[variant] if variant in archive.files else None
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise InputDataError(f"baseline detections {path.name} unreadable: {exc}") from None
