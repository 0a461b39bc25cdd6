"""Annotation checks at load time, on small hand-written instances files."""

import copy
import json
import math
from pathlib import Path

import pytest

from bench.data.coco import CocoDataset
from bench.errors import InputDataError

VALID = {
    "images": [
        {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48},
    ],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 12], "area": 120.0,
         "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 5, "bbox": [20.5, 4.0, 8.0, 6.5]},
        {"id": 12, "image_id": 2, "category_id": 3, "bbox": [0, 0, 64, 48], "iscrowd": 1},
    ],
    "categories": [{"id": 3, "name": "circle"}, {"id": 5, "name": "square"}],
}


def _write(root: Path, data: dict) -> Path:
    (root / "val").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    path = root / "annotations" / "instances_val.json"
    path.write_text(json.dumps(data))
    return root


def _with(change) -> dict:
    data = copy.deepcopy(VALID)
    change(data)
    return data


def _ann(data: dict, index: int = 1) -> dict:
    return data["annotations"][index]


def test_a_valid_file_loads_with_nothing_dropped(tmp_path):
    ds = CocoDataset(_write(tmp_path, VALID), "val")
    assert ds.dropped == {} and len(ds.coco.anns) == 3 and ds.image_ids == [1, 2]
    assert ds.coco.anns[11]["area"] == pytest.approx(52.0)  # filled from the box


def _set(key, value):
    return lambda d: _ann(d).__setitem__(key, value)


def _set_box(i, value):
    return lambda d: _ann(d)["bbox"].__setitem__(i, value)


BAD = [
    ("zero width", _set_box(2, 0), "non-positive box size", "has width 0 and height 6.5"),
    ("negative height", _set_box(3, -4.0), "non-positive box size", "height -4.0"),
    ("unknown category", _set("category_id", 99), "unknown category",
     "category_id 99 is not in 'categories'"),
    ("unknown image", _set("image_id", 77), "unknown image", "image_id 77 is not in 'images'"),
    ("duplicate id", _set("id", 10), "duplicate annotation id",
     "duplicate annotation id 10 (also annotations[0])"),
    ("bbox a string", _set("bbox", "20,4,8,6"), "bad bbox",
     "bbox '20,4,8,6' is not four finite numbers"),
    ("bbox of three", _set("bbox", [1, 2, 3]), "bad bbox", "is not four finite numbers"),
    ("bbox with a string", _set_box(0, "x"), "bad bbox", "is not four finite numbers"),
    ("bbox with NaN", _set_box(1, math.nan), "bad bbox", "is not four finite numbers"),
    ("bbox with a bool", _set_box(2, True), "bad bbox", "is not four finite numbers"),
    ("missing bbox", lambda d: _ann(d).pop("bbox"), "missing key", "lacks the key 'bbox'"),
    ("missing category", lambda d: _ann(d).pop("category_id"), "missing key",
     "lacks the key 'category_id'"),
    ("string id", _set("id", "11"), "bad id", "id '11' is not an integer"),
    ("iscrowd 2", _set("iscrowd", 2), "bad iscrowd", "iscrowd 2 is not 0 or 1"),
    ("negative area", _set("area", -1.0), "bad area", "area -1.0 is not a finite number"),
]


@pytest.mark.parametrize("change, kind, detail", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_annotation_stops_the_load_naming_file_id_and_problem(tmp_path, change, kind,
                                                                     detail):
    root = _write(tmp_path, _with(change))
    with pytest.raises(InputDataError) as err:
        CocoDataset(root, "val")
    msg = str(err.value)
    assert "\n" not in msg and "instances_val.json" in msg and detail in msg
    assert "annotations[1]" in msg and "coco_lenient" in msg
    ann_id = _with(change)["annotations"][1].get("id")
    assert f"annotation id {ann_id!r}" in msg


@pytest.mark.parametrize("change, kind", [b[1:3] for b in BAD], ids=[b[0] for b in BAD])
def test_lenient_mode_drops_and_counts_it(tmp_path, change, kind):
    ds = CocoDataset(_write(tmp_path, _with(change)), "val", lenient=True)
    assert ds.dropped == {kind: 1}
    assert sorted(a["id"] for a in ds.coco.anns.values()) == [10, 12]
    assert "1 annotations dropped" in repr(ds)


def test_the_count_of_further_bad_annotations_is_given(tmp_path):
    def two_bad(data):
        data["annotations"][0]["bbox"][2] = 0
        data["annotations"][2]["category_id"] = 7

    with pytest.raises(InputDataError, match=r"annotation id 10 .*\(and 1 more bad annotation\)"):
        CocoDataset(_write(tmp_path, _with(two_bad)), "val")
    ds = CocoDataset.open(_write(tmp_path, _with(two_bad)), "val", lenient=True)
    assert ds.dropped == {"non-positive box size": 1, "unknown category": 1}
    assert list(ds.coco.anns) == [11]


STRUCTURAL = [
    ("duplicate image id", lambda d: d["images"][1].__setitem__("id", 1),
     "images[1]: duplicate image id 1 (also images[0])"),
    ("duplicate category id", lambda d: d["categories"][1].__setitem__("id", 3),
     "categories[1]: duplicate category id 3"),
    ("string image id", lambda d: d["images"][0].__setitem__("id", "1"),
     "images[0]: image id '1' is not an integer"),
    ("zero image width", lambda d: d["images"][0].__setitem__("width", 0),
     "images[0] (id 1): width 0 is not a positive integer"),
    ("image without a file name", lambda d: d["images"][1].pop("file_name"),
     "images[1] lacks the key 'file_name'"),
    ("annotation not an object", lambda d: d["annotations"].append([1, 2]),
     "annotations[3] is a list, expected an object"),
    ("no categories section", lambda d: d.pop("categories"), "lack the key 'categories'"),
]


@pytest.mark.parametrize("change, detail", [s[1:] for s in STRUCTURAL],
                         ids=[s[0] for s in STRUCTURAL])
@pytest.mark.parametrize("lenient", [False, True])
def test_structural_faults_stop_the_load_even_when_lenient(tmp_path, change, detail, lenient):
    with pytest.raises(InputDataError) as err:
        CocoDataset(_write(tmp_path, _with(change)), "val", lenient=lenient)
    assert detail in str(err.value) and "instances_val.json" in str(err.value)
