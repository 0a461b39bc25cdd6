import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import synthetic
from bench.data.calibration import (
    calibration_batches,
    calibration_fingerprint,
    calibration_ids,
    check_disjoint,
)
from bench.data.coco import CocoDataset
from bench.data.images import ImageFolder
from bench.errors import ConfigError, InputDataError


@pytest.fixture(scope="module")
def ds_root(tmp_path_factory) -> Path:
    return synthetic.generate(
        tmp_path_factory.mktemp("cal") / "ds", n_train=6, n_eval=3, progress=False
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> ImageFolder:
    root = tmp_path_factory.mktemp("imgs")
    for i in range(12):
        Image.new("RGB", (20 + i, 16), (i * 20, 0, 0)).save(root / f"{i:02d}.png")
    return ImageFolder(root)


def test_sample_is_deterministic_sorted_and_seeded(folder):
    a = calibration_ids(folder, 5, seed=0)
    assert a == calibration_ids(folder, 5, seed=0) and a == sorted(a) and len(set(a)) == 5
    assert any(calibration_ids(folder, 5, seed=s) != a for s in (1, 2, 3))
    assert calibration_ids(folder, 50) == folder.image_ids


def test_batches_are_letterboxed_and_the_last_is_short(folder):
    batches = list(calibration_batches(folder, 5, imgsz=32, batch=2, seed=0))
    assert [b.shape for b in batches] == [(2, 3, 32, 32)] * 2 + [(1, 3, 32, 32)]
    assert all(b.dtype == np.float32 and 0 <= b.min() and b.max() <= 1 for b in batches)
    first = calibration_ids(folder, 5, seed=0)[0]
    expect_red = first * 20 / 255
    assert batches[0][0, 0, 16, 16] == pytest.approx(expect_red)


def test_batches_come_in_sample_order_and_a_missing_image_is_named(folder, tmp_path):
    from bench.data.letterbox import letterbox

    ids = calibration_ids(folder, 12)
    batches = list(calibration_batches(folder, 12, imgsz=32, batch=5))  # prepared ahead
    one_by_one = [letterbox(folder.load_rgb(i), 32)[0] for i in ids]
    assert np.array_equal(np.concatenate(batches), np.stack(one_by_one))
    first = next(calibration_batches(folder, 12, imgsz=32, batch=1))  # closed early: no hang
    assert np.array_equal(first[0], one_by_one[0])

    root = tmp_path / "gone"
    shutil.copytree(folder.root, root)
    copy = ImageFolder(root)
    (root / "07.png").unlink()
    with pytest.raises(InputDataError, match=r"image file missing: .*07\.png"):
        list(calibration_batches(copy, 12, imgsz=32, batch=4))


def test_coco_split_as_source(ds_root):
    train = CocoDataset.open(ds_root, "train")
    (batch,) = calibration_batches(train, 3, imgsz=64, batch=4)
    assert batch.shape == (3, 3, 64, 64)


def test_bad_count_and_empty_set(ds_root, tmp_path, folder):
    with pytest.raises(ConfigError, match="got 0"):
        calibration_ids(folder, 0)
    root = Path(shutil.copytree(ds_root, tmp_path / "empty"))
    path = root / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    data["images"], data["annotations"] = [], []
    path.write_text(json.dumps(data))
    with pytest.raises(InputDataError, match="calibration set is empty"):
        next(calibration_batches(CocoDataset.open(root, "train"), 4, imgsz=32))


def test_disjoint_splits_pass_and_overlaps_raise(ds_root, tmp_path):
    train, val = CocoDataset.open(ds_root, "train"), CocoDataset.open(ds_root, "val")
    check_disjoint(train, val)
    check_disjoint(ImageFolder(ds_root / "train"), val)
    with pytest.raises(InputDataError, match="3 calibration image"):
        check_disjoint(val, val)
    copied = Path(shutil.copytree(ds_root / "val", tmp_path / "calib"))  # copies, new paths
    with pytest.raises(InputDataError, match="also evaluation images"):
        check_disjoint(ImageFolder(copied), val)
    check_disjoint(val, val, calib_ids=[])  # an explicit, empty sample never clashes


def _images(root: Path, shade: int, n: int = 6) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (24, 16 + i), (shade, i * 30, 0)).save(root / f"{i:02d}.png")
    return root


def test_fingerprint_follows_the_image_bytes(tmp_path):
    bright = _images(tmp_path / "bright", 200)
    dark = _images(tmp_path / "dark", 3)  # same names and sizes, other pixels
    key = calibration_fingerprint(ImageFolder(bright), 4, 64)
    assert calibration_fingerprint(ImageFolder(dark), 4, 64) != key
    copy = Path(shutil.copytree(bright, tmp_path / "elsewhere" / "copy"))
    assert calibration_fingerprint(ImageFolder(copy), 4, 64) == key
    assert calibration_fingerprint(ImageFolder(bright), 4, 64) == key  # deterministic


def test_replacing_one_used_file_changes_the_fingerprint(tmp_path):
    root = _images(tmp_path / "calib", 200)
    folder = ImageFolder(root)
    key = calibration_fingerprint(folder, 3, 64)
    victim = folder.image_path(calibration_ids(folder, 3)[1])
    before = victim.stat()
    Image.new("RGB", Image.open(victim).size, (201, 0, 0)).save(victim)
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))  # even with the old mtime
    assert calibration_fingerprint(ImageFolder(root), 3, 64) != key
    unused = next(i for i in folder.image_ids if i not in calibration_ids(folder, 3))
    key = calibration_fingerprint(ImageFolder(root), 3, 64)
    Image.new("RGB", (24, 16), (9, 9, 9)).save(folder.image_path(unused))
    assert calibration_fingerprint(ImageFolder(root), 3, 64) == key  # not an image used


def test_fingerprint_settings_and_sources(ds_root, folder, tmp_path):
    train = CocoDataset.open(ds_root, "train")
    key = calibration_fingerprint(train, 4, 64)
    others = {calibration_fingerprint(train, 3, 64), calibration_fingerprint(train, 4, 32),
              calibration_fingerprint(train, 4, 64, batch=8),
              calibration_fingerprint(train, 4, 64, seed=1),
              calibration_fingerprint(CocoDataset.open(ds_root, "val"), 4, 64),
              calibration_fingerprint(folder, 4, 64)}
    assert key not in others and len(others) == 6
    # every image used either way: the same images, the same key
    assert calibration_fingerprint(train, 6, 64) == calibration_fingerprint(train, 500, 64)
    missing = train.image_path(calibration_ids(train, 4)[0])
    missing.rename(tmp_path / "moved.png")
    try:
        with pytest.raises(InputDataError, match=f"calibration image missing: {missing}"):
            calibration_fingerprint(train, 4, 64)
    finally:
        (tmp_path / "moved.png").rename(missing)
    with pytest.raises(ConfigError, match="batch must be at least 1"):
        calibration_fingerprint(train, 4, 64, batch=0)
