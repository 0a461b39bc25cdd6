import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.data import synthetic
from bench.data.coco import CocoDataset
from bench.errors import InputDataError

# COCO 2017's 80 category ids out of 1..90.
COCO80 = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


@pytest.fixture(scope="module")
def ds_root(tmp_path_factory) -> Path:
    return synthetic.generate(
        tmp_path_factory.mktemp("coco") / "ds", n_train=3, n_eval=4, progress=False
    )


@pytest.fixture
def copy_root(ds_root, tmp_path) -> Path:
    return Path(shutil.copytree(ds_root, tmp_path / "copy"))


def test_open_folder_by_split(ds_root, capsys):
    ds = CocoDataset.open(ds_root, "val")
    assert ds.split == "val" and ds.images_dir == ds_root / "val"
    assert ds.image_ids == sorted(ds.image_ids) and len(ds.image_ids) == 4
    assert ds.category_ids == [c for c, _ in synthetic.CATEGORIES]
    assert ds.num_classes == 8 and ds.names[0] == "circle"
    assert ds.class_to_category == ds.category_ids
    assert capsys.readouterr().out == ""  # pycocotools' prints are silenced


def test_load_rgb_matches_the_annotated_size(ds_root):
    ds = CocoDataset.open(ds_root, "train")
    for i in ds.image_ids:
        rgb = ds.load_rgb(i)
        info = ds.image_info(i)
        assert rgb.dtype == np.uint8 and rgb.shape == (info["height"], info["width"], 3)
        assert ds.image_path(i).parent == ds_root / "train"


def test_single_instances_file_is_picked(copy_root):
    (copy_root / "annotations" / "instances_train.json").unlink()
    assert CocoDataset.open(copy_root).split == "val"


def test_several_instances_files_need_a_split(ds_root):
    with pytest.raises(InputDataError, match="instances_train.json, instances_val.json"):
        CocoDataset.open(ds_root)


def test_direct_json_path_and_explicit_images_dir(ds_root, tmp_path):
    ann = ds_root / "annotations" / "instances_val.json"
    assert len(CocoDataset.open(ann)) == 4
    moved = Path(shutil.copytree(ds_root / "val", tmp_path / "elsewhere"))
    ds = CocoDataset.open(ann, images_dir=moved)
    assert ds.load_rgb(ds.image_ids[0]).ndim == 3


def test_explicit_class_maps(ds_root):
    ds = CocoDataset.open(ds_root, "val", class_map=[90, 2])
    assert ds.num_classes == 2 and ds.names == ["hexagon", "circle"]
    ds = CocoDataset.open(ds_root, "val", class_map={1: 5, 0: 11})
    assert ds.class_to_category == [11, 5]
    with pytest.raises(InputDataError, match=r"\[7\]"):
        CocoDataset.open(ds_root, "val", class_map=[2, 7])


def test_coco80_ids_map_to_the_usual_order(copy_root):
    path = copy_root / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    data["categories"] = [
        {"id": i, "name": f"c{i}", "supercategory": "x"} for i in reversed(COCO80)
    ]
    data["annotations"] = []
    path.write_text(json.dumps(data))
    ds = CocoDataset.open(copy_root, "val")
    assert ds.num_classes == 80
    assert ds.class_to_category[0] == 1 and ds.class_to_category[11] == 13  # stop sign
    assert ds.class_to_category[79] == 90


def test_missing_folder(tmp_path):
    with pytest.raises(InputDataError, match="COCO folder not found"):
        CocoDataset.open(tmp_path / "nope", "val")


def test_missing_split(ds_root):
    with pytest.raises(InputDataError, match="instances_val2017.json"):
        CocoDataset.open(ds_root, "val2017")


def test_missing_images_folder(copy_root):
    shutil.rmtree(copy_root / "val")
    with pytest.raises(InputDataError, match="image folder not found"):
        CocoDataset.open(copy_root, "val")


@pytest.mark.parametrize(
    "section, key",
    [
        ("categories", None),
        ("annotations", "bbox"),
        ("images", "file_name"),
        ("categories", "name"),
    ],
)
def test_json_missing_keys_are_named(copy_root, section, key):
    path = copy_root / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    if key is None:
        del data[section]
    else:
        del data[section][0][key]
    path.write_text(json.dumps(data))
    with pytest.raises(InputDataError) as err:
        CocoDataset.open(copy_root, "val")
    msg = str(err.value)
    assert repr(key or section) in msg and "instances_val.json" in msg and "\n" not in msg


def test_corrupt_json(copy_root):
    (copy_root / "annotations" / "instances_val.json").write_text("{not json")
    with pytest.raises(InputDataError, match="cannot read annotations .*instances_val.json"):
        CocoDataset.open(copy_root, "val")


def test_corrupt_and_missing_images_are_named(copy_root):
    ds = CocoDataset.open(copy_root, "val")
    first, second = ds.image_ids[:2]
    ds.image_path(first).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds.image_path(second).unlink()
    with pytest.raises(InputDataError, match=f"corrupt image .*{ds.image_path(first).name}"):
        ds.load_rgb(first)
    with pytest.raises(InputDataError, match=f"image file missing: .*{ds.image_path(second).name}"):
        ds.load_rgb(second)


def test_image_of_wrong_size_is_reported(copy_root):
    ds = CocoDataset.open(copy_root, "val")
    i = ds.image_ids[0]
    from PIL import Image

    Image.new("RGB", (10, 20)).save(ds.image_path(i))
    with pytest.raises(InputDataError, match="is 10x20, but instances_val.json says"):
        ds.load_rgb(i)


def test_constructor_takes_a_folder_and_split(ds_root):
    ds = CocoDataset(ds_root, split="train")
    assert ds.split == "train" and len(ds) == 3
    assert CocoDataset(ds_root / "annotations" / "instances_val.json").split == "val"
