"""Every variant, QAT included, on a fixed-batch-1 export of the embedded default (the
official YOLOv7 exporter's default batch), through the session as a user runs it."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bench.config import load_config
from bench.session import BenchSession
from bench.variants import all_variants

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def default_b1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.models.default import default_model_path, load_manifest
    from bench.models.export import export_onnx, fused_from_onnx

    meta = load_manifest()["model"]
    fused = fused_from_onnx(onnx.load(str(default_model_path())), meta["arch"],
                            meta["num_classes"], meta["width"])
    return export_onnx(fused, tmp_path_factory.mktemp("b1") / "default_b1.onnx",
                       int(meta["imgsz"]), batch=1)


def test_the_batch_1_export_is_the_default_with_a_fixed_batch(default_b1):
    from bench.models.default import default_model_path

    model = onnx.load(str(default_b1))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == \
        [1, 3, 256, 256]
    image = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    runs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(
        None, {"images": image})[0] for p in (default_b1, default_model_path())]
    assert np.abs(runs[0] - runs[1]).max() < 1e-3
    with pytest.raises(Exception, match="images"):  # a batch of 2 is refused by the runtime
        ort.InferenceSession(str(default_b1), providers=["CPUExecutionProvider"]).run(
            None, {"images": np.repeat(image, 2, axis=0)})


def test_every_variant_runs_on_a_fixed_batch_1_export(tmp_path, default_b1, tiny_coco):
    cfg = load_config({"model": str(default_b1), "coco": str(tiny_coco), "eval_count": 3,
                       "calib_count": 3, "qat_iters": 2, "qat_images": 4, "bench_rounds": 3,
                       "bench_warmup": 1, "eval_batch": 2, "progress": False, "power": "none",
                       "variants": ",".join(all_variants()),
                       "cache_dir": str(tmp_path / "cache"),
                       "results_dir": str(tmp_path / "results"),
                       "baseline": str(tmp_path / "baseline.json")}, env={}, pyproject=None)
    session = BenchSession(cfg)
    assert session.run.inputs().fixed_batch == 1
    rows = {}
    for variant in all_variants():
        prepared = session.prepare(variant)
        rows[variant] = session.measure(prepared) if prepared.status == "ok" \
            else session.rows[variant]
    failed = {v: r.reason for v, r in rows.items() if r.status == "failed"}
    assert not failed
    cpu = [v for v in all_variants() if not v.startswith("trt-")]
    assert all(rows[v].status == "ok" for v in cpu), {v: rows[v].status for v in cpu}
    meta = rows["int8-qat"].extra["artifact_meta"]
    assert (meta["batch"], meta["accumulate"], meta["steps"]) == (1, 8, 2)
    assert meta["kept"] in ("trained", "initial") and meta["images"] == 4
    assert meta["images_train"] + meta["images_holdout"] == 4
