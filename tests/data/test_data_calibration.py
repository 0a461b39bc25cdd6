import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import synthetic
from bench.data.calibration import calibration_batches, calibration_ids, check_disjoint
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
