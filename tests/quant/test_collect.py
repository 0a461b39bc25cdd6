import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.errors import InputDataError, ModelError
from bench.quant.collect import collect_histograms
from bench.quant.histogram import AbsHistogram

RNG = np.random.default_rng(0)
WEIGHT = RNG.standard_normal((6, 4, 1, 1)).astype(np.float32)


def _model(path, *, size=8, with_sqrt=False, batch="n"):
    """x -> Mul(2) -> doubled -> Relu -> rectified -> Conv 1x1 -> mixed -> Sigmoid -> y."""
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["doubled"]),
        helper.make_node("Relu", ["doubled"], ["rectified"]),
        helper.make_node("Conv", ["rectified", "w"], ["mixed"]),
        helper.make_node("Sigmoid", ["mixed"], ["y"]),
        helper.make_node("Shape", ["mixed"], ["mixed_shape"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 6, size, size])]
    if with_sqrt:  # sqrt of a negative input is NaN
        nodes.append(helper.make_node("Sqrt", ["x"], ["root"]))
        outputs.append(helper.make_tensor_value_info("root", TensorProto.FLOAT, None))
    initializers = [
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(WEIGHT, "w"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4, size, size])
    graph = helper.make_graph(nodes, "calib", [x], outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _batches(count, batch=2, size=8, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, 4, size, size)).astype(np.float32) for _ in range(count)]


def _numpy_activations(x):
    doubled = x * 2.0
    rectified = np.maximum(doubled, 0.0)
    mixed = np.einsum("oc,nchw->nohw", WEIGHT[:, :, 0, 0], rectified)
    return {"x": x, "doubled": doubled, "rectified": rectified, "mixed": mixed}


def test_histograms_match_activations_computed_independently(tmp_path):
    path = _model(tmp_path / "m.onnx")
    batches = _batches(5)
    names = ["doubled", "rectified", "mixed", "x"]
    hists = collect_histograms(path, names, iter(batches), bins=256, progress=False)
    assert list(hists) == names
    for name in names:
        expected = AbsHistogram(bins=256)
        for batch in batches:
            expected.update(_numpy_activations(batch)[name])
        assert (
            hists[name].total
            == expected.total
            == 5 * batches[0].size // 4 * (6 if name == "mixed" else 4)
        )
        assert hists[name].amax_seen == pytest.approx(expected.amax_seen, rel=1e-5)
        np.testing.assert_allclose(hists[name].counts, expected.counts, atol=2.0)


@pytest.mark.parametrize("fixed", [1, 3])
def test_a_fixed_batch_model_gets_regrouped_batches_and_counts_each_image_once(tmp_path,
                                                                              fixed):
    path = _model(tmp_path / "m.onnx", batch=fixed)
    batches = [*_batches(2, batch=2), *_batches(1, batch=3, seed=4)]  # 7 images in all
    names = ["mixed", "x"]
    hists = collect_histograms(path, names, iter(batches), bins=256, progress=False)
    images = np.concatenate(batches)
    for name in names:
        expected = AbsHistogram(bins=256)  # fed as the model was: `fixed` images at a time
        for start in range(0, len(images), fixed):
            expected.update(_numpy_activations(images[start:start + fixed])[name])
        assert hists[name].total == expected.total == images.size // 4 * (
            6 if name == "mixed" else 4)
        np.testing.assert_allclose(hists[name].counts, expected.counts, atol=2.0)


def test_a_graph_output_can_be_collected_too(tmp_path):
    path = _model(tmp_path / "m.onnx")
    hists = collect_histograms(path, ["y", "y"], _batches(2), progress=False)
    assert list(hists) == ["y"]
    assert 0.5 < hists["y"].amax_seen < 1.0  # a sigmoid


def test_accepts_float64_batches_and_reports_progress_total(tmp_path):
    import io

    from bench import progress

    path = _model(tmp_path / "m.onnx")
    batches = [b.astype(np.float64) for b in _batches(3)]
    # bars draw only on a terminal: give them one (a surface writing to a buffer)
    stream = io.StringIO()
    with progress.surface_installed(progress.Surface(stream, lambda: 0, lambda: 80)):
        hists = collect_histograms(path, ["mixed"], batches, total=3, progress=True)
    assert hists["mixed"].total == 3 * 2 * 6 * 8 * 8
    assert "0/3 [" in stream.getvalue()  # the bar knows its total (cleared when done)


def test_memory_does_not_grow_with_the_number_of_batches(tmp_path):
    path = _model(tmp_path / "m.onnx", size=64)
    names = ["doubled", "rectified", "mixed"]

    def peak(count):
        def batches():  # generated one at a time, so that only the collector's memory counts
            rng = np.random.default_rng(count)
            for _ in range(count):
                yield rng.standard_normal((4, 4, 64, 64)).astype(np.float32)

        tracemalloc.start()
        collect_histograms(path, names, batches(), progress=False)
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak_bytes

    one_batch_activations = 4 * 4 * 64 * 64 * 4 * (1 + 1 + 1.5)
    assert peak(24) < 1.3 * peak(3)
    assert peak(24) < 6 * one_batch_activations


def test_unknown_tensor_is_a_model_error_naming_it(tmp_path):
    path = _model(tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="'conv99_out'"):
        collect_histograms(path, ["mixed", "conv99_out"], _batches(1), progress=False)


def test_a_weight_is_not_an_activation(tmp_path):
    path = _model(tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="'w'.*weight"):
        collect_histograms(path, ["w"], _batches(1), progress=False)


def test_a_non_float_tensor_is_a_model_error(tmp_path):
    path = _model(tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="'mixed_shape'.*INT64"):
        collect_histograms(path, ["mixed_shape"], _batches(1), progress=False)


def test_empty_calibration_set_is_an_input_data_error(tmp_path):
    path = _model(tmp_path / "m.onnx")
    with pytest.raises(InputDataError, match="empty calibration set"):
        collect_histograms(path, ["mixed"], iter([]), progress=False)


def test_nan_activation_is_a_model_error_naming_the_tensor(tmp_path):
    path = _model(tmp_path / "m.onnx", with_sqrt=True)
    with pytest.raises(ModelError, match="'root'.*NaN"):
        collect_histograms(path, ["mixed", "root"], _batches(2), progress=False)


def test_batch_of_the_wrong_shape_is_an_input_data_error(tmp_path):
    path = _model(tmp_path / "m.onnx")
    bad = [np.zeros((2, 3, 8, 8), np.float32)]
    with pytest.raises(InputDataError, match=r"'x'.*\[2, 3, 8, 8\].*\['\?', 4, 8, 8\]"):
        collect_histograms(path, ["mixed"], bad, progress=False)


def test_missing_or_corrupt_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        collect_histograms(tmp_path / "none.onnx", ["a"], _batches(1), progress=False)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00not an onnx file" * 10)
    with pytest.raises(ModelError, match="corrupt.onnx"):
        collect_histograms(corrupt, ["a"], _batches(1), progress=False)
