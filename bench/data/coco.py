"""A COCO-format detection dataset on disk, read with pycocotools.

Layout (COCO's own): DIR/annotations/instances_<split>.json and the images in DIR/<split>/,
e.g. /data/coco/annotations/instances_val2017.json + /data/coco/val2017/. A direct path to
an instances JSON also works; its images are then looked for in <json>/../../<split>/
unless images_dir is given.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from bench.data.coco_checks import check_instances
from bench.data.images import read_rgb
from bench.errors import InputDataError

_PREFIX = "instances_"


def find_annotations(root: Path, split: str | None) -> Path:
    """DIR/annotations/instances_<split>.json; without a split, the only instances_*.json."""
    if not root.is_dir():
        raise InputDataError(f"COCO folder not found: {root}")
    ann_dir = root / "annotations"
    if split is not None:
        path = ann_dir / f"{_PREFIX}{split}.json"
        if not path.is_file():
            raise InputDataError(f"no annotations for split {split!r}: {path} does not exist")
        return path
    found = sorted(ann_dir.glob(f"{_PREFIX}*.json"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise InputDataError(
            f"cannot choose a split in {ann_dir}: expected exactly one instances_*.json,"
            f" found {names}"
        )
    return found[0]


def _split_of(ann_path: Path) -> str:
    stem = ann_path.stem
    return stem[len(_PREFIX) :] if stem.startswith(_PREFIX) else stem


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputDataError(f"cannot read annotations {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InputDataError(f"annotations {path} hold a {type(data).__name__}, expected an object")
    return data


def _fill_defaults(data: dict) -> None:
    # COCOeval reads area (size ranges) and iscrowd; some exported subsets omit them.
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])


def coco_from_dict(data: dict) -> COCO:
    """A pycocotools COCO of an instances dict held in memory, without its index chatter."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class CocoDataset:
    """One split of a COCO-format dataset: image ids, image files and the class mapping.

    path is a COCO folder (the split chosen by name, or the only instances_*.json there)
    or an instances JSON file. class_map maps the model's class index to a category id:
    a sequence (index i -> class_map[i]) or a mapping; by default index i is the i-th
    category id in sorted order, exactly the usual 80-class order for COCO's 80-of-91 ids.
    """

    def __init__(
        self,
        path: str | Path,
        split: str | None = None,
        *,
        images_dir: str | Path | None = None,
        class_map: Sequence[int] | Mapping[int, int] | None = None,
        lenient: bool = False,
    ):
        path = Path(path)
        is_json = path.suffix.lower() == ".json"
        self.annotation_path = path if is_json else find_annotations(path, split)
        if not self.annotation_path.is_file():
            raise InputDataError(f"annotations file not found: {self.annotation_path}")
        self.split = _split_of(self.annotation_path)
        default_dir = self.annotation_path.parent.parent / self.split
        self.images_dir = Path(images_dir) if images_dir is not None else default_dir
        if not self.images_dir.is_dir():
            raise InputDataError(
                f"image folder not found: {self.images_dir} (for {self.annotation_path})"
            )
        data = _read_json(self.annotation_path)
        self.lenient = lenient
        self.dropped: Mapping[str, int] = check_instances(data, self.annotation_path, lenient)
        _fill_defaults(data)
        self.coco = coco_from_dict(data)
        self.category_ids: list[int] = sorted(self.coco.cats)
        self.class_to_category: list[int] = self._class_mapping(class_map)

    @classmethod
    def open(
        cls,
        path: str | Path,
        split: str | None = None,
        *,
        images_dir: str | Path | None = None,
        class_map: Sequence[int] | Mapping[int, int] | None = None,
        lenient: bool = False,
    ) -> CocoDataset:
        """Same as the constructor."""
        return cls(path, split, images_dir=images_dir, class_map=class_map, lenient=lenient)

    def _class_mapping(self, class_map: Sequence[int] | Mapping[int, int] | None) -> list[int]:
        if class_map is None:
            return list(self.category_ids)
        if isinstance(class_map, Mapping):
            if sorted(class_map) != list(range(len(class_map))):
                raise InputDataError(
                    f"class map keys must be 0..{len(class_map) - 1}, got {sorted(class_map)}"
                )
            class_map = [class_map[i] for i in range(len(class_map))]
        unknown = [c for c in class_map if c not in self.coco.cats]
        if unknown:
            raise InputDataError(
                f"class map names category ids {unknown} absent from {self.annotation_path}"
                f" (ids there: {self.category_ids})"
            )
        return [int(c) for c in class_map]

    @property
    def image_ids(self) -> list[int]:
        return sorted(self.coco.imgs)

    @property
    def num_classes(self) -> int:
        return len(self.class_to_category)

    @property
    def names(self) -> list[str]:
        """Category names in model class-index order."""
        return [self.coco.cats[c]["name"] for c in self.class_to_category]

    def image_info(self, image_id: int) -> dict:
        return self.coco.imgs[image_id]

    def image_path(self, image_id: int) -> Path:
        return self.images_dir / self.coco.imgs[image_id]["file_name"]

    def load_rgb(self, image_id: int) -> np.ndarray:
        """HxWx3 uint8 RGB; InputDataError if missing, corrupt, or not the size annotated."""
        path = self.image_path(image_id)
        rgb = read_rgb(path)
        info = self.coco.imgs[image_id]
        if rgb.shape[:2] != (info["height"], info["width"]):
            raise InputDataError(
                f"image {path} is {rgb.shape[1]}x{rgb.shape[0]}, but {self.annotation_path.name}"
                f" says {info['width']}x{info['height']}"
            )
        return rgb

    def __len__(self) -> int:
        return len(self.coco.imgs)

    def __repr__(self) -> str:
        path = str(self.annotation_path)
        dropped = f", {sum(self.dropped.values())} annotations dropped" if self.dropped else ""
        return f"CocoDataset({path!r}, {len(self)} images, {self.num_classes} classes{dropped})"
