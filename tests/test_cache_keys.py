"""The cache poisoning sequence of issue 11: a --calib run must never leave its INT8
artifacts where a plain run finds them, and replaced calibration images are rebuilt."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from bench.build import build_variant
from bench.config import load_config
from bench.run import RunContext


def _context(tmp_path: Path, model: Path, coco: Path, cache: str, **options):
    cfg = load_config({"model": str(model), "coco": str(coco), "calib_count": 4,
                       "progress": False, "cache_dir": str(tmp_path / cache),
                       "results_dir": str(tmp_path / "results"),
                       "baseline": str(tmp_path / "baseline.json"), **options},
                      env={}, pyproject=None)
    return RunContext(cfg).build_context()


def _dark_folder(folder: Path, n: int = 4, value: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.fromarray(np.full((48, 64, 3), value + k, np.uint8)).save(folder / f"{k}.png")
    return folder


def test_a_calib_run_does_not_poison_the_default_key(tmp_path, tiny_detector, tiny_coco):
    dark = _dark_folder(tmp_path / "dark")
    shared = "cache"
    poisoned = build_variant("int8-max",
                             _context(tmp_path, tiny_detector, tiny_coco, shared, calib=str(dark)))
    after = build_variant("int8-max", _context(tmp_path, tiny_detector, tiny_coco, shared))
    clean = build_variant("int8-max", _context(tmp_path, tiny_detector, tiny_coco, "clean"))
    assert after.path != poisoned.path and not after.cached  # built for the default images
    assert after.path.read_bytes() == clean.path.read_bytes()  # what a clean cache builds


def test_replacing_calibration_images_rebuilds(tmp_path, tiny_detector, tiny_coco):
    folder = _dark_folder(tmp_path / "calib", value=40)
    first = build_variant("int8-max", _context(tmp_path, tiny_detector, tiny_coco, "c",
                                               calib=str(folder)))
    shutil.rmtree(folder)
    _dark_folder(folder, value=200)  # same names, other pixels
    second = build_variant("int8-max", _context(tmp_path, tiny_detector, tiny_coco, "c",
                                                calib=str(folder)))
    assert second.path != first.path and not second.cached
