"""The calibration sampler: a deterministic, letterboxed sample of a source's images.

A source is anything with image_ids, image_path(id) and load_rgb(id): a CocoDataset split
(the calibration split) or an ImageFolder (`--calib DIR`). Calibration images must never
be evaluation images; check_disjoint checks that by path and by file content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import PIL

from bench.ahead import ordered_ahead
from bench.data.letterbox import PAD_VALUE, letterbox
from bench.errors import ConfigError, InputDataError


class ImageSource(Protocol):
    @property
    def image_ids(self) -> list[int]: ...

    def image_path(self, image_id: int) -> Path: ...

    def load_rgb(self, image_id: int) -> np.ndarray: ...


def _describe(source: ImageSource) -> str:
    return str(getattr(source, "annotation_path", None) or getattr(source, "root", source))


def calibration_ids(source: ImageSource, count: int, seed: int = 0) -> list[int]:
    """The ids of count images drawn without replacement (all if fewer), in sorted order."""
    if count < 1:
        raise ConfigError(f"calibration count must be at least 1, got {count}")
    ids = sorted(source.image_ids)
    if not ids:
        raise InputDataError(f"calibration set is empty: no images in {_describe(source)}")
    if count >= len(ids):
        return ids
    picked = np.random.default_rng(seed).choice(len(ids), size=count, replace=False)
    return [ids[i] for i in sorted(picked)]


def calibration_batches(
    source: ImageSource, count: int, imgsz: int, batch: int = 1, seed: int = 0
) -> Iterator[np.ndarray]:
    """Yield [b, 3, imgsz, imgsz] float32 letterboxed batches of the sample.

    The last batch may be short. Images are decoded and letterboxed a few ahead in a thread
    pool (bench.ahead), overlapping whatever the caller runs on each batch: 512 of the
    default's took 0.79-1.39 s so, against 1.47-2.56 s one by one (alternated).
    """
    if batch < 1:
        raise ConfigError(f"calibration batch must be at least 1, got {batch}")
    ids = calibration_ids(source, count, seed)
    images = ordered_ahead(lambda i: letterbox(source.load_rgb(i), imgsz)[0], ids)
    for start in range(0, len(ids), batch):
        yield np.stack([next(images) for _ in ids[start : start + batch]])


# Bump when what calibration_batches makes of the same files changes (letterbox geometry,
# resampling, scaling to [0, 1], RGB order, the sampler). The pad value and Pillow's
# version (its decoders and resize) are added to the fingerprint as they are.
PREPROCESS_VERSION = "letterbox-bilinear-rgb-unit-v1"


def calibration_fingerprint(
    source: ImageSource, count: int, imgsz: int, batch: int = 1, seed: int = 0
) -> str:
    """sha256 hex of the images calibration_batches(source, count, imgsz, batch, seed) uses.

    Hashes each image file's bytes (not decoded pixels) in the order used, with the number
    of images used, imgsz, batch, seed, PREPROCESS_VERSION, the pad value and Pillow's
    version: replacing, adding or reordering images changes it, moving the same files
    elsewhere does not, and a count above the source's size gives the key of all its
    images. InputDataError if an image is missing or unreadable.
    """
    if batch < 1:
        raise ConfigError(f"calibration batch must be at least 1, got {batch}")
    ids = calibration_ids(source, count, seed)
    digest = hashlib.sha256(
        f"{PREPROCESS_VERSION}|pad={PAD_VALUE}|pillow={PIL.__version__}|images={len(ids)}"
        f"|imgsz={imgsz}|batch={batch}|seed={seed}".encode()
    )
    for image_id in ids:
        digest.update(_file_digest(source.image_path(image_id)))
    return digest.hexdigest()


def _file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise InputDataError(f"calibration image missing: {path}") from None
    except OSError as exc:
        raise InputDataError(f"cannot read calibration image {path}: {exc}") from None
    return digest.digest()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_disjoint(
    calib: ImageSource, evaluation: ImageSource, calib_ids: Sequence[int] | None = None
) -> None:
    """Raise InputDataError if any calibration image is also an evaluation image.

    Same file (resolved path) or a copy of it (same size and SHA-256) both count.
    """
    ids = list(calib.image_ids if calib_ids is None else calib_ids)
    eval_paths = [evaluation.image_path(i) for i in evaluation.image_ids]
    resolved = {p.resolve() for p in eval_paths}
    by_size: dict[int, list[Path]] = {}
    for p in eval_paths:
        if p.is_file():
            by_size.setdefault(p.stat().st_size, []).append(p)
    clashes = [calib.image_path(i) for i in ids if _clashes(calib.image_path(i), resolved, by_size)]
    if clashes:
        raise InputDataError(
            f"{len(clashes)} calibration image(s) are also evaluation images"
            f" (first: {clashes[0]}); calibrate on another split or folder"
        )


def _clashes(path: Path, resolved: set[Path], by_size: dict[int, list[Path]]) -> bool:
    if path.resolve() in resolved:
        return True
    same_size = by_size.get(path.stat().st_size, []) if path.is_file() else []
    if not same_size:
        return False
    digest = _digest(path)
    return any(digest == _digest(q) for q in same_size)
