"""Per-tensor SQNR/cosine between the mini YOLO-like graph and its Q/DQ files (real ORT)."""

from __future__ import annotations

import csv
import math

import numpy as np
import onnx
import pytest
from diag_helpers import true_amax

from bench.diagnose.layers import LayerError, layer_errors, plot_layers, worst, write_layers_csv
from bench.errors import InputDataError, ModelError
from bench.quant.placement import KeepFloat, plan_quantization
from bench.quant.qdq import write_qdq


def _save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture(scope="module")
def amax(model, plan, images):
    return true_amax(model, plan.activation_tensors, images)


@pytest.fixture(scope="module")
def qdq_path(model, plan, amax, tmp_path_factory):
    return _save(write_qdq(model, plan, amax), tmp_path_factory.mktemp("q") / "trt.onnx")


def test_every_quantized_tensor_in_graph_order_with_sane_figures(fp32_path, qdq_path, plan,
                                                                 images):
    rows = layer_errors(fp32_path, qdq_path, None, [images])
    assert [r.tensor for r in rows] == list(plan.tensors_for("tensorrt"))  # graph order
    assert [r.order for r in rows] == sorted(r.order for r in rows)
    for r in rows:
        assert 15 < r.sqnr_db < 80, r  # 8-bit rounding of a calibrated tensor: ~25-45 dB
        assert 0.98 < r.cosine <= 1.0 + 1e-12, r
    by_tensor = {r.tensor: r for r in rows}
    assert by_tensor["/model.5/Concat_output_0"].op == "Concat"
    assert by_tensor["/model.5/Concat_output_0"].node == "/model.5/Concat"


def test_a_model_against_itself_has_no_error(fp32_path, images):
    rows = layer_errors(fp32_path, fp32_path, ["/model.1/act/Mul_output_0"], [images])
    assert rows[0].sqnr_db == math.inf and rows[0].cosine == pytest.approx(1.0)


def test_input_sqnr_is_the_fake_quant_sqnr_computed_by_hand(model, images, tmp_path):
    plan = plan_quantization(model, keep_float=KeepFloat(first_conv=False))
    amax = true_amax(model, plan.activation_tensors, images)
    amax["images"] = 0.5  # clip half of the [0, 1) pixels
    path = _save(write_qdq(model, plan, amax), tmp_path / "q.onnx")
    (row,) = layer_errors(str(tmp_path / "q.onnx"), path, ["images"], [images[:2], images[2:]])
    scale = np.float32(0.5 / 127)
    fake = np.clip(np.rint(images / scale), -128, 127) * scale
    x = images.astype(np.float64)
    expected = 10 * math.log10((x ** 2).sum() / ((x - fake) ** 2).sum())
    assert row.op == "input" and row.sqnr_db == pytest.approx(expected, abs=1e-3)


def test_a_clipped_tensor_is_where_the_error_starts_and_streaming_keeps_the_sums(
        fp32_path, qdq_path, model, plan, amax, images, tmp_path):
    bad = "/model.9/act/Mul_output_0"
    clipped = _save(write_qdq(model, plan, amax | {bad: amax[bad] / 8}), tmp_path / "bad.onnx")
    good = layer_errors(fp32_path, qdq_path, None, [images])
    whole = layer_errors(fp32_path, clipped, None, [images])
    first = next(r for r in whole if r.sqnr_db < 10)  # the error starts at the clipped tensor
    assert first.tensor == bad and first.cosine < 0.9
    for before, after in zip(good, whole):  # upstream of it nothing changes
        if before.order >= first.order:
            break
        assert after.sqnr_db == pytest.approx(before.sqnr_db)
    assert worst(whole, 1)[0].sqnr_db < 5 < worst(good, 1)[0].sqnr_db - 15
    split = layer_errors(fp32_path, clipped, None, [images[:1], images[1:]])
    for a, b in zip(whole, split):
        assert a.tensor == b.tensor and a.sqnr_db == pytest.approx(b.sqnr_db, rel=1e-9)


def test_uint8_pixels_are_scaled_like_float_images(fp32_path, qdq_path, images):
    pixels = np.rint(images * 255).astype(np.uint8)
    a = layer_errors(fp32_path, qdq_path, None, [pixels])
    b = layer_errors(fp32_path, qdq_path, None, [pixels.astype(np.float32) / 255])
    assert [r.sqnr_db for r in a] == pytest.approx([r.sqnr_db for r in b])


def test_errors_name_the_tensor_or_the_empty_input(fp32_path, qdq_path, images):
    with pytest.raises(ModelError, match="'nope'"):
        layer_errors(fp32_path, qdq_path, ["nope"], [images])
    with pytest.raises(InputDataError, match="no image"):
        layer_errors(fp32_path, qdq_path, None, [])


def test_csv_and_plot(fp32_path, qdq_path, model, plan, amax, images, tmp_path):
    rows = layer_errors(fp32_path, qdq_path, None, [images])
    cpu = _save(write_qdq(model, plan, amax, profile="cpu"), tmp_path / "cpu.onnx")
    other = layer_errors(fp32_path, cpu, None, [images])
    csv_path = write_layers_csv(rows, tmp_path / "layers.csv")
    with csv_path.open() as fh:
        read = list(csv.DictReader(fh))
    assert list(read[0]) == ["order", "tensor", "node", "op", "sqnr_db", "cosine"]
    assert [r["tensor"] for r in read] == [r.tensor for r in rows]
    assert float(read[0]["sqnr_db"]) == pytest.approx(rows[0].sqnr_db, abs=1e-3)
    png = plot_layers({"tensorrt": rows, "cpu": other}, tmp_path / "layers.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_an_exactly_quantized_tensor_gives_a_summary_a_row_can_carry():
    # SQNR is infinite where quantization was exact; JSON has no inf, and a row's extra
    # must be JSON (bench.report.rows refuses NaN and inf), so the summary says null.
    from bench.diagnose.session import layers_summary
    from bench.report.rows import ResultRow

    rows = [LayerError(0, "a", "conv_a", "Conv", math.inf, 1.0),
            LayerError(1, "b", "conv_b", "Conv", 31.5, 0.9991)]
    summary = layers_summary(rows)
    assert summary["median_sqnr_db"] == 31.5
    assert [t["sqnr_db"] for t in summary["worst_tensors"]] == [31.5, None]
    ResultRow(variant="int8-max", status="ok", extra={"layers": summary})
