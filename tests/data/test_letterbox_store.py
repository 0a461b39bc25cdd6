"""Letterboxed evaluation images kept between runs: what is stored is what a run would
compute, and a changed image or a damaged store file is never read."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from bench.cache import ArtifactCache
from bench.config import load_config
from bench.data import letterbox_store
from bench.data.letterbox import letterbox_rgb
from bench.run import RunContext


def _config(tmp_path, model, coco):
    return load_config({"model": str(model), "coco": str(coco), "progress": False,
                        "cache_dir": str(tmp_path / "cache"),
                        "results_dir": str(tmp_path / "results"),
                        "baseline": str(tmp_path / "baseline.json")}, env={}, pyproject=None)


def test_store_round_trip_is_exact_and_keyed_by_the_image_bytes(tmp_path):
    paths = []
    for k, shape in enumerate([(30, 50), (64, 20), (41, 41)]):
        paths.append(tmp_path / f"{k}.png")
        pixels = np.random.default_rng(k).integers(0, 255, (*shape, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(paths[-1])
    items = [letterbox_rgb(np.asarray(Image.open(p).convert("RGB")), 32) for p in paths]
    cache, ids = ArtifactCache(tmp_path / "artifacts"), [7, 3, 9]
    parts = letterbox_store.store_parts(paths, 32)
    assert letterbox_store.load(cache, parts, ids) is None  # nothing stored yet
    letterbox_store.save(cache, parts, ids, items)
    loaded = letterbox_store.load(cache, parts, ids)
    assert [box for _, box in loaded] == [box for _, box in items]
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(loaded, items, strict=True))
    assert letterbox_store.load(cache, parts, [7, 3, 8]) is None  # other ids: not these
    assert letterbox_store.store_parts(paths, 64) != parts  # another size, another key
    assert letterbox_store.store_parts(paths[::-1], 32) != parts  # another order
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(paths[0])  # same shape, new pixels
    assert letterbox_store.store_parts(paths, 32) != parts


def test_a_second_run_reads_the_store_and_scores_the_same(tmp_path, tiny_detector, tiny_coco):
    from bench.measure.references import References

    def accuracy_of(run):
        path = run.build_context().model_path
        engine = References(run).open("fp32", path)
        try:
            return run.accuracy(engine, "fp32 accuracy")
        finally:
            engine.deactivate()

    coco = shutil.copytree(tiny_coco, tmp_path / "coco")  # an image is replaced below
    cfg = _config(tmp_path, tiny_detector, coco)
    first = RunContext(cfg)
    assert len(first.letterboxed()) == 0  # a first run prepares every image from its file
    scored = accuracy_of(first)
    stored = sorted((tmp_path / "cache" / "artifacts" / "letterbox").glob("*.npz"))
    assert len(stored) == 1

    second = RunContext(cfg)
    assert len(second.letterboxed()) == scored.n_images == 6  # all read from the store
    again = accuracy_of(second)
    assert dict(again.metrics) == dict(scored.metrics) and again.n_detections == scored.n_detections

    # a damaged store file fails the cache's sha256 check: prepared from the files again
    data = bytearray(stored[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored[0].write_bytes(bytes(data))
    assert len(RunContext(cfg).letterboxed()) == 0

    # a store for the current images again, then one image replaced by other pixels: the
    # key changes, and the stored canvases are not read
    accuracy_of(RunContext(cfg))
    assert len(RunContext(cfg).letterboxed()) == 6
    dataset = second.inputs().dataset
    image = dataset.image_path(dataset.image_ids[0])
    with Image.open(image) as original:
        rotated = original.convert("RGB").rotate(180)
    rotated.save(image, format=original.format)
    assert len(RunContext(cfg).letterboxed()) == 0


def test_a_set_past_the_memory_budget_is_not_stored(tmp_path, tiny_detector, tiny_coco):
    from bench.measure.references import References

    run = RunContext(_config(tmp_path, tiny_detector, tiny_coco))
    run.letterboxed().max_bytes = 1  # no image fits: every pass prepares them from files
    engine = References(run).open("fp32", run.build_context().model_path)
    try:
        scored = run.accuracy(engine, "fp32 accuracy")
    finally:
        engine.deactivate()
    assert scored.n_images == 6 and len(run.letterboxed()) == 0
    assert not list((tmp_path / "cache" / "artifacts").glob("letterbox/*.npz"))
