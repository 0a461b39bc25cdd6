"""Checks of a COCO instances file before any work, so that bad annotations never turn
into a silently different mAP.

Structural faults (a missing section, an image or category entry without its keys, a
duplicate image or category id, an image size that is not a positive integer) always
stop the load. Faulty annotations (see PROBLEMS) stop it too, naming the first one and
how many more there are; in lenient mode they are dropped instead and counted by problem.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import InputDataError

REQUIRED = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}
# The problems an annotation can have: the keys of CocoDataset.dropped.
PROBLEMS = ("missing key", "bad id", "duplicate annotation id", "unknown image",
            "unknown category", "bad bbox", "non-positive box size", "bad iscrowd", "bad area")
LENIENT_HINT = "set coco_lenient = true to drop such annotations and count them"


@dataclass(frozen=True)
class Problem:
    index: int  # position in the annotations list
    ann_id: Any  # the annotation's id, or None without one
    kind: str  # one of PROBLEMS
    detail: str

    def where(self) -> str:
        if self.ann_id is None:
            return f"annotations[{self.index}] (no id)"
        return f"annotation id {self.ann_id!r} (annotations[{self.index}])"


def check_instances(data: dict, path: Path, lenient: bool = False) -> dict[str, int]:
    """Validate data (a parsed instances JSON) in place; return what was dropped by problem.

    Raises InputDataError naming path and the first fault, unless lenient, in which case
    faulty annotations are removed from data["annotations"] and counted.
    """
    _check_sections(data, path)
    image_ids = _unique_ids(data["images"], "images", "image", path)
    _check_images(data["images"], path)
    category_ids = _unique_ids(data["categories"], "categories", "category", path)
    for index, cat in enumerate(data["categories"]):
        if not isinstance(cat["name"], str):
            raise InputDataError(f"annotations {path}: categories[{index}] (id {cat['id']}):"
                                 f" name {cat['name']!r} is not a string")
    problems = annotation_problems(data["annotations"], image_ids, category_ids)
    if not problems:
        return {}
    if not lenient:
        first = problems[0]
        more = len(problems) - 1
        tail = f" (and {more} more bad annotation{'s' * (more != 1)})" if more else ""
        raise InputDataError(
            f"annotations {path}: {first.where()}: {first.detail}{tail}; {LENIENT_HINT}")
    bad = {p.index for p in problems}
    data["annotations"] = [a for i, a in enumerate(data["annotations"]) if i not in bad]
    return dict(Counter(p.kind for p in problems))


def _check_sections(data: dict, path: Path) -> None:
    for section, keys in REQUIRED.items():
        if section not in data:
            raise InputDataError(f"annotations {path} lack the key {section!r}")
        if not isinstance(data[section], list):
            raise InputDataError(f"annotations {path}: {section!r} is not a list")
        for index, entry in enumerate(data[section]):
            if not isinstance(entry, dict):
                raise InputDataError(f"annotations {path}: {section}[{index}] is a"
                                     f" {type(entry).__name__}, expected an object")
            if section == "annotations":
                continue  # an annotation's faults are counted, not fatal, when lenient
            missing = [k for k in keys if k not in entry]
            if missing:
                raise InputDataError(
                    f"annotations {path}: {section}[{index}] lacks the key {missing[0]!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _unique_ids(entries: list[dict], section: str, noun: str, path: Path) -> set[int]:
    seen: dict[int, int] = {}
    for index, entry in enumerate(entries):
        value = entry["id"]
        if not _is_int(value):
            raise InputDataError(f"annotations {path}: {section}[{index}]: {noun} id"
                                 f" {value!r} is not an integer")
        if value in seen:
            raise InputDataError(f"annotations {path}: {section}[{index}]: duplicate {noun} id"
                                 f" {value} (also {section}[{seen[value]}])")
        seen[value] = index
    return set(seen)


def _check_images(images: list[dict], path: Path) -> None:
    for index, image in enumerate(images):
        where = f"annotations {path}: images[{index}] (id {image['id']})"
        for key in ("width", "height"):
            if not _is_int(image[key]) or image[key] <= 0:
                raise InputDataError(f"{where}: {key} {image[key]!r} is not a positive integer")
        if not isinstance(image["file_name"], str) or not image["file_name"]:
            raise InputDataError(f"{where}: file_name {image['file_name']!r} is not a file name")


def annotation_problems(anns: list[dict], image_ids: set[int],
                        category_ids: set[int]) -> list[Problem]:
    """Every faulty annotation, in file order, with its first fault."""
    problems: list[Problem] = []
    seen: dict[Any, int] = {}
    for index, ann in enumerate(anns):
        if not _plainly_fine(ann, seen, image_ids, category_ids):
            found = _first_fault(ann, index, seen, image_ids, category_ids)
            if found is not None:
                problems.append(Problem(index, ann.get("id"), *found))
        if _is_int(ann.get("id")):
            seen.setdefault(ann["id"], index)
    return problems


_NUMBER_TYPES = (int, float)


def _plainly_fine(ann: dict, seen: dict[Any, int], image_ids: set[int],
                  category_ids: set[int]) -> bool:
    """The fast path (a few microseconds an annotation): True only when nothing is wrong."""
    try:
        ann_id, image_id, category_id, bbox = (
            ann["id"], ann["image_id"], ann["category_id"], ann["bbox"])
        x, y, w, h = bbox
    except (KeyError, TypeError, ValueError):
        return False
    return (type(ann_id) is int and ann_id not in seen and type(image_id) is int
            and image_id in image_ids and type(category_id) is int
            and category_id in category_ids and type(bbox) is list
            and type(x) in _NUMBER_TYPES and type(y) in _NUMBER_TYPES
            and type(w) in _NUMBER_TYPES and type(h) in _NUMBER_TYPES
            and 0 < w < math.inf and 0 < h < math.inf and math.isfinite(x + y)
            and ann.get("iscrowd", 0) in (0, 1)
            and (type(area := ann.get("area", 0.0)) in _NUMBER_TYPES and 0 <= area < math.inf))


def _first_fault(ann: dict, index: int, seen: dict[Any, int], image_ids: set[int],
                 category_ids: set[int]) -> tuple[str, str] | None:
    missing = [k for k in REQUIRED["annotations"] if k not in ann]
    if missing:
        return "missing key", f"lacks the key {missing[0]!r}"
    if not _is_int(ann["id"]):
        return "bad id", f"id {ann['id']!r} is not an integer"
    if ann["id"] in seen:
        return "duplicate annotation id", (
            f"duplicate annotation id {ann['id']} (also annotations[{seen[ann['id']]}])")
    if not _is_int(ann["image_id"]) or ann["image_id"] not in image_ids:
        return "unknown image", f"image_id {ann['image_id']!r} is not in 'images'"
    if not _is_int(ann["category_id"]) or ann["category_id"] not in category_ids:
        return "unknown category", f"category_id {ann['category_id']!r} is not in 'categories'"
    return _box_fault(ann)


def _four_numbers(bbox: Any) -> bool:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return False
    if all(type(v) is float or type(v) is int for v in bbox):  # the common case, fast
        return all(map(math.isfinite, bbox))
    return all(map(_is_number, bbox))


def _box_fault(ann: dict) -> tuple[str, str] | None:
    bbox = ann["bbox"]
    if not _four_numbers(bbox):
        return "bad bbox", f"bbox {_short(bbox)} is not four finite numbers [x, y, w, h]"
    if bbox[2] <= 0 or bbox[3] <= 0:
        return "non-positive box size", (
            f"bbox {_short(bbox)} has width {bbox[2]} and height {bbox[3]}; both must be > 0")
    if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):
        return "bad iscrowd", f"iscrowd {_short(ann['iscrowd'])} is not 0 or 1"
    if "area" in ann and (not _is_number(ann["area"]) or ann["area"] < 0):
        return "bad area", f"area {_short(ann['area'])} is not a finite number >= 0"
    return None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
