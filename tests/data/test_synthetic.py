import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from bench.atomic import TMP_PREFIX
from bench.data import synthetic


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return synthetic.generate(
        tmp_path_factory.mktemp("syn") / "ds", n_train=6, n_eval=6, progress=False
    )


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def test_layout_is_coco(tiny):
    assert sorted(p.name for p in (tiny / "annotations").iterdir()) == [
        "instances_train.json",
        "instances_val.json",
    ]
    for split in ("train", "val"):
        data = _load(tiny, split)
        assert {"info", "images", "annotations", "categories"} <= data.keys()
        assert len(data["images"]) == 6
        for im in data["images"]:
            assert (tiny / split / im["file_name"]).is_file()


def test_same_seed_gives_identical_bytes(tiny, tmp_path):
    again = synthetic.generate(tmp_path / "again", n_train=6, n_eval=6, progress=False)
    assert _tree(again) == _tree(tiny)


def test_the_files_do_not_depend_on_the_rendering_threads(tiny, tmp_path):
    one = synthetic.generate(tmp_path / "one", n_train=6, n_eval=6, progress=False, workers=1)
    three = synthetic.generate(tmp_path / "three", n_train=6, n_eval=6, progress=False,
                               workers=3)
    assert _tree(one) == _tree(three) == _tree(tiny)


def test_other_seed_differs(tiny, tmp_path):
    other = synthetic.generate(tmp_path / "other", seed=1, n_train=2, n_eval=0, progress=False)
    a = (tiny / "train" / "000000000001.png").read_bytes()
    assert (other / "train" / "000000000001.png").read_bytes() != a


def test_splits_share_no_image(tiny):
    train, val = _load(tiny, "train"), _load(tiny, "val")
    assert not {i["id"] for i in train["images"]} & {i["id"] for i in val["images"]}
    digest = lambda split, d: {  # noqa: E731
        hashlib.sha256((tiny / split / i["file_name"]).read_bytes()).hexdigest()
        for i in d["images"]
    }
    assert not digest("train", train) & digest("val", val)


def test_categories_are_non_contiguous_and_named(tiny):
    cats = _load(tiny, "val")["categories"]
    ids = [c["id"] for c in cats]
    assert ids == sorted(ids) and len(ids) >= 6
    assert ids != list(range(1, len(ids) + 1))
    assert all(c["name"] and c["supercategory"] for c in cats)


def test_images_vary_in_size_and_match_json(tiny):
    data = _load(tiny, "train")
    sizes = set()
    for im in data["images"]:
        with Image.open(tiny / "train" / im["file_name"]) as img:
            assert img.mode == "RGB" and img.size == (im["width"], im["height"])
        assert 192 <= im["width"] <= 320 and 192 <= im["height"] <= 320
        sizes.add((im["width"], im["height"]))
    assert len(sizes) > 1 and any(w != h for w, h in sizes)


def test_boxes_are_inside_their_image_and_cover_the_area(tiny):
    for split in ("train", "val"):
        data = _load(tiny, split)
        dims = {i["id"]: (i["width"], i["height"]) for i in data["images"]}
        for a in data["annotations"]:
            x, y, w, h = a["bbox"]
            W, H = dims[a["image_id"]]
            assert x >= 0 and y >= 0 and x + w <= W and y + h <= H
            assert 0 < a["area"] <= w * h and a["iscrowd"] == 0


def test_has_small_objects_and_several_classes(tiny):
    anns = _load(tiny, "train")["annotations"] + _load(tiny, "val")["annotations"]
    assert any(a["area"] < 32**2 for a in anns)
    assert any(a["area"] >= 32**2 for a in anns)
    assert len({a["category_id"] for a in anns}) >= 4
    assert len({a["id"] for a in anns}) == len(anns)


def test_pycocotools_reads_it(tiny):
    coco = COCO(str(tiny / "annotations" / "instances_val.json"))
    assert len(coco.getImgIds()) == 6 and len(coco.getCatIds()) == len(synthetic.CATEGORIES)


def test_png_writer_round_trips_exactly():
    pixels, _ = synthetic._render_image(0, "train", 3)
    path_bytes = synthetic._png_bytes(pixels)
    import io

    decoded = np.asarray(Image.open(io.BytesIO(path_bytes)))
    np.testing.assert_array_equal(decoded, pixels)


def test_occluded_objects_are_annotated_by_their_visible_pixels():
    occluded = 0
    for index in range(8):
        _, placed = synthetic._render_image(0, "train", index)
        for i, p in enumerate(placed):
            ann = synthetic._annotation(i, placed, image_id=1)
            assert ann is not None and ann["area"] >= 0.5 * p.area  # never more than half hidden
            ys, xs = np.nonzero(p.footprint)
            full = [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            x, y, w, h = ann["bbox"]
            assert x >= full[0] and y >= full[1] and w <= full[2] and h <= full[3]
            occluded += ann["area"] < p.area
    assert occluded > 0


def test_ensure_default_generates_once_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    root = synthetic.ensure_default(n_train=2, n_eval=2, progress=False)
    assert root.parent == tmp_path / "cache" / "datasets"  # $BENCH_CACHE_DIR/datasets
    assert synthetic.GENERATOR_VERSION in root.name
    stamp = (root / "annotations" / "instances_val.json").stat().st_mtime_ns
    assert synthetic.ensure_default(n_train=2, n_eval=2, progress=False) == root
    assert (root / "annotations" / "instances_val.json").stat().st_mtime_ns == stamp
    left = sorted(p.name for p in root.parent.iterdir())
    assert left == [root.name, f"{root.name}.lock"]  # no temp dir left, the lock stays


def test_a_killed_generation_is_swept_and_the_dataset_honours_the_umask(tmp_path):
    key = synthetic.dataset_key(synthetic.DEFAULT_SEED, 1, 1)
    dead = tmp_path / f"{TMP_PREFIX}{key}.4242.abcd1234"  # what SIGKILL mid-generation leaves
    (dead / "train").mkdir(parents=True)
    (dead / "train" / "000001.png").write_bytes(b"half an image")
    legacy = tmp_path / f".{key}.x1y2z3"  # earlier versions' tempfile.mkdtemp folder
    legacy.mkdir()
    past = time.time() - 7200
    os.utime(legacy, (past, past))
    other = tmp_path / f"{TMP_PREFIX}someone-else.1.ab"  # no lock held, another key: dead too
    other.mkdir()
    old = os.umask(0o022)
    try:
        root = synthetic.ensure_default(tmp_path, n_train=1, n_eval=1, progress=False)
    finally:
        os.umask(old)
    assert not dead.exists() and not legacy.exists() and not other.exists()
    if os.name == "posix":
        assert stat.S_IMODE(root.stat().st_mode) == 0o755


_GENERATE = (
    "import sys\n"
    "from bench.data import synthetic\n"
    "print(synthetic.ensure_default(sys.argv[1], n_train=3, n_eval=2, progress=False))\n"
)


def test_concurrent_runs_generate_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [subprocess.Popen([sys.executable, "-c", _GENERATE, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = {p.communicate(timeout=300)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs) and len(outs) == 1
    root = Path(outs.pop())
    assert sorted(p.name for p in tmp_path.iterdir()) == [root.name, f"{root.name}.lock"]
    assert len(list((root / "train").iterdir())) == 3


def test_ensure_default_explicit_cache_dir(tmp_path):
    root = synthetic.ensure_default(tmp_path, seed=3, n_train=1, n_eval=1, progress=False)
    assert root.parent == tmp_path and "seed3" in root.name
    assert (root / "val").is_dir()
