"""A whole run as stored in report.json, and finding and reading one.

report.json = {schema_version, run_id, environment, complete, created, rows: [...],
files, baseline, detections}. results/baseline.json is a promoted run's report.json (plus
promoted_from; its detections name the sidecar beside it). A committed baseline must
survive a schema change, so every older version is migrated when read (MIGRATIONS), never
refused.

Format history:
- 1: the first format.
- 2: rows gain the twelve COCO figures, CIs (latency median, speedup, ΔmAP), the probe
  median, baseline verdicts and evaluation/calibration fingerprints (all optional, so
  a version-1 row reads as is); the gate gains warnings; the run records the files it
  wrote (report.json is written last, so a run with it is complete on disk) and the
  baseline it was judged against.
- 3: the run records the detections it scored (detections: the file, its sha256, the
  columns and the detections per variant; bench.report.detections), and rows gain the
  paired bootstrap CI of the change against the baseline (baseline_map_low/high). All
  optional: a version-2 report reads as is, and version-2 code refuses a version-3 file
  by its version instead of by an unknown key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import InputDataError
from bench.report.rows import ResultRow

SCHEMA_VERSION = 3
REPORT_NAME = "report.json"
REQUIRED_KEYS = ("schema_version", "environment", "complete", "created", "rows")
OPTIONAL_KEYS = ("run_id", "promoted_from", "files", "baseline", "detections")


def _from_v1(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "schema_version": 2}  # every field added in 2 is optional


def _from_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "schema_version": 3}  # every field added in 3 is optional


# version -> function turning that version's report into the next version's
MIGRATIONS = {1: _from_v1, 2: _from_v2}


@dataclass(frozen=True)
class Run:
    """One run: its environment, whether every planned variant ran, and its rows."""

    environment: Mapping[str, Any]
    rows: tuple[ResultRow, ...]
    complete: bool
    created: str
    run_id: str | None = None
    promoted_from: str | None = None
    files: tuple[str, ...] | None = None  # what the run wrote beside report.json
    baseline: Mapping[str, Any] | None = None  # the baseline it was judged against
    # the detections it scored: {file, sha256, columns, variants: {name: count}}, the file
    # beside report.json (a baseline's: its sidecar beside baseline.json)
    detections: Mapping[str, Any] | None = None
    path: Path | None = field(default=None, compare=False)  # the report.json it came from

    @property
    def name(self) -> str:
        return self.run_id or (str(self.path) if self.path else "<run>")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        if self.run_id is not None:
            out["run_id"] = self.run_id
        out.update(environment=dict(self.environment), complete=self.complete,
                   created=self.created, rows=[r.to_dict() for r in self.rows])
        if self.promoted_from is not None:
            out["promoted_from"] = self.promoted_from
        if self.files is not None:
            out["files"] = list(self.files)
        if self.baseline is not None:
            out["baseline"] = dict(self.baseline)
        if self.detections is not None:
            out["detections"] = dict(self.detections)
        return out

    def missing_files(self) -> list[str]:
        """Files the run says it wrote that are not beside its report.json."""
        if self.path is None or self.files is None:
            return []
        return [name for name in self.files if not (self.path.parent / name).is_file()]


def _check_top(data: object, source: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InputDataError(f"{source}: expected a JSON object, got {type(data).__name__}")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise InputDataError(f"{source}: missing key {key!r}")
    unknown = sorted(set(data) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise InputDataError(f"{source}: unknown key(s) {unknown}")
    version = data["schema_version"]
    while version in MIGRATIONS:
        data = MIGRATIONS[version](dict(data))
        version = data["schema_version"]
    if version != SCHEMA_VERSION:
        raise InputDataError(f"{source}: schema_version {data['schema_version']!r} "
                             f"not supported, expected {SCHEMA_VERSION} or older")
    return data


def _check_types(data: Mapping[str, Any], source: str) -> None:
    expected = {"environment": Mapping, "complete": bool, "created": str, "rows": list}
    for key, kind in expected.items():
        if not isinstance(data[key], kind):
            raise InputDataError(f"{source}: {key!r} is {type(data[key]).__name__}, "
                                 f"expected {kind.__name__}")


def _parse_rows(rows: list, source: str) -> tuple[ResultRow, ...]:
    parsed = []
    for index, row in enumerate(rows):
        try:
            parsed.append(ResultRow.from_dict(row))
        except InputDataError as exc:
            raise InputDataError(f"{source}: rows[{index}]: {exc}") from None
    return tuple(parsed)


def _detections(top: Mapping[str, Any], source: str) -> Mapping[str, Any] | None:
    found = top.get("detections")
    if found is None:
        return None
    name = found.get("file") if isinstance(found, Mapping) else None
    # a plain name: the file lies beside the report, never elsewhere
    plain = (isinstance(name, str) and name not in ("", ".", "..")
             and Path(name).name == name and "\\" not in name)
    if not plain or not isinstance(found.get("sha256"), str):
        raise InputDataError(f"{source}: 'detections' is {found!r}, expected an object with "
                             "'file' (a name beside the report) and 'sha256'")
    return dict(found)


def parse_report(data: object, source: str, path: Path | None = None) -> Run:
    """Validate a decoded report.json; errors name `source` and what is wrong."""
    top = _check_top(data, source)
    _check_types(top, source)
    return Run(environment=dict(top["environment"]), rows=_parse_rows(top["rows"], source),
               complete=top["complete"], created=top["created"], run_id=top.get("run_id"),
               promoted_from=top.get("promoted_from"),
               files=tuple(top["files"]) if top.get("files") is not None else None,
               baseline=top.get("baseline"), detections=_detections(top, source), path=path)


def read_report(path: Path) -> Run:
    """Read and validate one report.json (or baseline.json) file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputDataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputDataError(f"{path}: not valid JSON ({exc})") from None
    return parse_report(data, str(path), path=Path(path))


def _latest_dir(results_dir: Path) -> Path:
    latest = results_dir / "latest"
    if latest.is_dir():
        return latest
    if latest.is_file():  # the fallback where symlinks are not allowed: a file holding the path
        target = Path(latest.read_text(encoding="utf-8").strip())
        return target if target.is_absolute() else results_dir / target
    raise InputDataError(f"{latest}: no latest run (run the suite first, or name a run)")


def resolve_report(path_or_id: str | Path, results_dir: Path) -> Path:
    """The report.json meant by a run dir, a report.json path, 'latest' or a run id."""
    results_dir = Path(results_dir)
    if str(path_or_id) == "latest":
        return _latest_dir(results_dir) / REPORT_NAME
    given = Path(path_or_id)
    if given.is_dir():
        return given / REPORT_NAME
    if given.is_file():
        return given
    by_id = results_dir / "runs" / str(path_or_id)
    if by_id.is_dir():
        return by_id / REPORT_NAME
    raise InputDataError(f"run {str(path_or_id)!r}: no such file or directory, "
                         f"and no run with that id under {results_dir / 'runs'}")


def load_run(path_or_id: str | Path, results_dir: Path = Path("results")) -> Run:
    """Load a run from a run dir, a report.json path, 'latest' or a run id."""
    report = resolve_report(path_or_id, results_dir)
    if not report.is_file():
        raise InputDataError(f"{report}: missing (the run has no {REPORT_NAME})")
    return read_report(report)
