from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper, shape_inference

from bench.errors import ModelError
from bench.model_hash import model_fingerprint

DEFAULT = Path(__file__).resolve().parents[1] / "bench" / "models" / "default" / (
    "yolov7_default.onnx")


def _model(weight_scale: float = 1.0, alpha: float = 0.1, size: int = 16) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * weight_scale)
                                .astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["images", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("LeakyRelu", ["c"], ["r"], name="act", alpha=alpha),
        helper.make_node("MaxPool", ["r"], ["output"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                   ["batch", 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="test", producer_version="1")
    helper.set_model_props(model, {"layout": "yolov7-grid", "exported_by": "me"})
    return model


def _save(model: onnx.ModelProto, path: Path, **kwargs) -> Path:
    onnx.save(model, str(path), **kwargs)
    return path


def test_shape_inference_and_annotations_keep_the_fingerprint(tmp_path):
    plain = _save(_model(), tmp_path / "plain.onnx")
    inferred = shape_inference.infer_shapes(onnx.load(str(plain)))
    assert len(inferred.graph.value_info) == 2 and inferred.graph.output[0].type.tensor_type.shape
    inferred.producer_name, inferred.producer_version = "modelopt", "0.99"
    inferred.doc_string = "re-saved"
    inferred.graph.node[0].doc_string = "a conv"
    helper.set_model_props(inferred, {"layout": "yolov7-grid", "exported_by": "someone else"})
    resaved = _save(inferred, tmp_path / "resaved.onnx")
    assert plain.read_bytes() != resaved.read_bytes()
    assert model_fingerprint(plain) == model_fingerprint(resaved)


def test_external_weights_give_the_same_fingerprint(tmp_path):
    inline = _save(_model(), tmp_path / "inline.onnx")
    external = _save(_model(), tmp_path / "ext.onnx", save_as_external_data=True,
                     all_tensors_to_one_file=True, location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").is_file()
    assert model_fingerprint(inline) == model_fingerprint(external)


@pytest.mark.parametrize("change", [
    lambda: _model(weight_scale=1.001),  # a changed weight
    lambda: _model(alpha=0.2),  # a changed attribute
    lambda: _model(size=32),  # another input shape
])
def test_computation_changes_change_the_fingerprint(tmp_path, change):
    base = model_fingerprint(_save(_model(), tmp_path / "a.onnx"))
    assert model_fingerprint(_save(change(), tmp_path / "b.onnx")) != base


def test_one_weight_element_and_harness_metadata_count(tmp_path):
    base = model_fingerprint(_save(_model(), tmp_path / "a.onnx"))
    model = _model()
    arr = numpy_helper.to_array(model.graph.initializer[0]).copy()
    arr.flat[7] = np.nextafter(arr.flat[7], np.float32(np.inf))
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(arr, "w"))
    assert model_fingerprint(_save(model, tmp_path / "b.onnx")) != base
    relaid = _model()
    helper.set_model_props(relaid, {"layout": "yolov5", "exported_by": "me"})
    assert model_fingerprint(_save(relaid, tmp_path / "c.onnx")) != base


def test_rewriting_a_file_in_place_is_seen(tmp_path):
    path = _save(_model(), tmp_path / "m.onnx")
    first = model_fingerprint(path)
    _save(_model(alpha=0.3), path)
    assert model_fingerprint(path) != first


def test_the_default_model_resaved_with_shapes_keeps_its_fingerprint(tmp_path):
    inferred = shape_inference.infer_shapes(onnx.load(str(DEFAULT)))
    assert len(inferred.graph.value_info) > 100
    resaved = _save(inferred, tmp_path / "default_inferred.onnx")
    assert model_fingerprint(resaved) == model_fingerprint(DEFAULT)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b"\x08\xff\xff\xff\xff\xff not onnx"), "not a readable ONNX"),
    (lambda p: None, "cannot read it"),
])
def test_unusable_files_are_named(tmp_path, make, message):
    path = tmp_path / "bad.onnx"
    make(path)
    with pytest.raises(ModelError, match=message) as err:
        model_fingerprint(path)
    assert str(path) in str(err.value)


def test_typed_and_raw_weight_storage_give_the_same_fingerprint(tmp_path):
    raw = _save(_model(), tmp_path / "raw.onnx")
    typed = _model()
    tensor = typed.graph.initializer[0]
    values = numpy_helper.to_array(tensor).ravel().tolist()
    tensor.ClearField("raw_data")
    tensor.float_data.extend(values)
    assert model_fingerprint(_save(typed, tmp_path / "typed.onnx")) == model_fingerprint(raw)
