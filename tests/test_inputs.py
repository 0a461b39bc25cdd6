"""resolve_inputs refuses, once and with the fix, every model it cannot measure honestly.

The models are small graphs built with onnx.helper in the layouts real exporters write
(YOLOv7 --end2end with and without --max-wh, a dynamic H/W export with its grid baked),
and the project's own exporter; the dataset is the project's generator (8 classes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.config import BenchConfig
from bench.errors import ConfigError, InputDataError, ModelError
from bench.inputs import load_class_map, resolve_inputs

SIZE = 64  # input side of the small graphs; a stride-8 conv makes an 8x8 grid (64 boxes)


def _cfg(model: Path, coco: Path, **extra) -> BenchConfig:
    return BenchConfig(model=model, coco=coco, **extra)


def _init(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _dense(classes: int, batch="batch") -> tuple[list, list, list]:
    """images [batch, 3, 64, 64] -> pred [batch, 64, 5+classes] (a stride-8 conv)."""
    rng = np.random.default_rng(0)
    inits = [_init("w", rng.normal(0, 0.1, (5 + classes, 3, 8, 8)).astype(np.float32)),
             _init("flat", np.array([0, 5 + classes, -1], np.int64))]
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["conv"], strides=[8, 8], name="conv"),
        helper.make_node("Reshape", ["conv", "flat"], ["conv_flat"]),
        helper.make_node("Transpose", ["conv_flat"], ["conv_t"], perm=[0, 2, 1]),
        helper.make_node("Sigmoid", ["conv_t"], ["pred"]),
    ]
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                            [batch, 3, SIZE, SIZE])]
    return inits, nodes, inputs


def _save(path: Path, nodes, inputs, outputs, inits, opset=12, metadata=None) -> Path:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def _slices(classes: int) -> tuple[list, list]:
    """pred -> boxes [B, 64, 4] (x 64 px) and scores = class x objectness [B, 64, C]."""
    inits = [_init(n, np.array([v], np.int64)) for n, v in
             (("s0", 0), ("s4", 4), ("s5", 5), ("s_end", 5 + classes), ("ax2", 2))]
    inits.append(_init("px", np.array(SIZE, np.float32)))
    nodes = [
        helper.make_node("Slice", ["pred", "s0", "s4", "ax2"], ["unit_boxes"]),
        helper.make_node("Mul", ["unit_boxes", "px"], ["boxes"]),
        helper.make_node("Slice", ["pred", "s4", "s5", "ax2"], ["obj"]),
        helper.make_node("Slice", ["pred", "s5", "s_end", "ax2"], ["cls"]),
        helper.make_node("Mul", ["cls", "obj"], ["scores"]),
    ]
    return inits, nodes


def ort_nms_model(path: Path, classes: int, batch="batch") -> Path:
    """YOLOv7 --end2end --max-wh style: best class per box, one NonMaxSuppression over
    boxes offset by class, then [N, 7] rows (batch, x0, y0, x1, y1, class, score)."""
    inits, nodes, inputs = _dense(classes, batch)
    more_inits, more_nodes = _slices(classes)
    inits += more_inits + [
        _init("max_out", np.array([100], np.int64)), _init("iou", np.array([0.45], np.float32)),
        _init("thr", np.array([0.25], np.float32)), _init("max_wh", np.array(640, np.float32)),
        _init("col0", np.array([0], np.int64)), _init("col2", np.array([2], np.int64)),
    ]
    node = helper.make_node
    nodes += more_nodes + [
        node("ReduceMax", ["scores"], ["best"], axes=[2], keepdims=1),
        node("ArgMax", ["scores"], ["label"], axis=2, keepdims=1),
        node("Cast", ["label"], ["label_f"], to=TensorProto.FLOAT),
        node("Mul", ["label_f", "max_wh"], ["offset"]),
        node("Add", ["boxes", "offset"], ["nms_boxes"]),
        node("Transpose", ["best"], ["best_t"], perm=[0, 2, 1]),
        node("NonMaxSuppression", ["nms_boxes", "best_t", "max_out", "iou", "thr"], ["sel"]),
        node("Gather", ["sel", "col0"], ["x"], axis=1),
        node("Gather", ["sel", "col2"], ["y"], axis=1),
        node("Concat", ["x", "y"], ["xy"], axis=1),
        node("GatherND", ["boxes", "xy"], ["sel_boxes"]),
        node("GatherND", ["label_f", "xy"], ["sel_label"]),
        node("GatherND", ["best", "xy"], ["sel_score"]),
        node("Cast", ["x"], ["x_f"], to=TensorProto.FLOAT),
        node("Concat", ["x_f", "sel_boxes", "sel_label", "sel_score"], ["output"], axis=1),
    ]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 7])]
    return _save(path, nodes, inputs, outputs, inits)


def trt_nms_model(path: Path, classes: int) -> Path:
    """YOLOv7 --end2end (TensorRT): the EfficientNMS_TRT plugin on boxes and scores."""
    inits, nodes, inputs = _dense(classes, 1)
    more_inits, more_nodes = _slices(classes)
    nodes += more_nodes + [helper.make_node(
        "EfficientNMS_TRT", ["boxes", "scores"],
        ["num_dets", "det_boxes", "det_scores", "det_classes"], name="batched_nms",
        background_class=-1, max_output_boxes=100, score_threshold=0.25, iou_threshold=0.45,
        plugin_version="1", score_activation=0, box_coding=0)]
    outputs = [helper.make_tensor_value_info("num_dets", TensorProto.INT32, [1, 1]),
               helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [1, 100, 4]),
               helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [1, 100]),
               helper.make_tensor_value_info("det_classes", TensorProto.INT32, [1, 100])]
    return _save(path, nodes, inputs, outputs, inits + more_inits)


def dynamic_hw_model(path: Path, classes: int, baked: bool) -> Path:
    """H and W dynamic, output [B, N, 5+classes]; with baked=True the decode adds a grid
    constant [1, 1, 8, 8, 2] to the box centres, fixed at export (YOLOv7 --grid --dynamic),
    so the model only runs at 64."""
    rng = np.random.default_rng(1)
    inits = [_init("w", rng.normal(0, 0.1, (5 + classes, 3, 8, 8)).astype(np.float32)),
             _init("unsq", np.array([1], np.int64)), _init("c0", np.array([0], np.int64)),
             _init("c2", np.array([2], np.int64)), _init("cend", np.array([99], np.int64)),
             _init("ax4", np.array([4], np.int64)),
             _init("flat", np.array([0, -1, 5 + classes], np.int64))]
    node = helper.make_node
    nodes = [node("Conv", ["images", "w"], ["conv"], strides=[8, 8]),
             node("Transpose", ["conv"], ["cells_t"], perm=[0, 2, 3, 1]),
             node("Unsqueeze", ["cells_t", "unsq"], ["cells5"]),
             node("Slice", ["cells5", "c0", "c2", "ax4"], ["xy"]),
             node("Slice", ["cells5", "c2", "cend", "ax4"], ["rest"])]
    if baked:
        inits.append(_init("grid", np.zeros((1, 1, 8, 8, 2), np.float32)))
        nodes.append(node("Add", ["xy", "grid"], ["centres"]))
    else:
        nodes.append(node("Identity", ["xy"], ["centres"]))
    nodes += [node("Concat", ["centres", "rest"], ["cells"], axis=4),
              node("Reshape", ["cells", "flat"], ["output"])]
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["b", 3, "h", "w"])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT,
                                             ["b", "n", 5 + classes])]
    return _save(path, nodes, inputs, outputs, inits, opset=13)


# --- the model file -------------------------------------------------------------------------


def test_zero_byte_model_is_an_empty_file(tmp_path, tiny_coco):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match=r"empty.onnx: empty file \(0 bytes\)"):
        resolve_inputs(_cfg(empty, tiny_coco))


def test_model_pointing_at_a_folder_is_a_directory(tmp_path, tiny_coco):
    with pytest.raises(ModelError, match="option model .*: is a directory; expected an ONNX"):
        resolve_inputs(_cfg(tmp_path, tiny_coco))


def test_missing_and_corrupt_model_files(tmp_path, tiny_coco):
    with pytest.raises(ModelError, match="nope.onnx: file not found"):
        resolve_inputs(_cfg(tmp_path / "nope.onnx", tiny_coco))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\xff\xff not a protobuf")
    with pytest.raises(ModelError, match="junk.onnx: not a readable ONNX file"):
        resolve_inputs(_cfg(junk, tiny_coco))


def test_wrong_input_dtype_names_input_and_dtypes(tmp_path, tiny_coco):
    inputs = [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, 3, 64, 64])]
    outputs = [helper.make_tensor_value_info("out", TensorProto.UINT8, [1, 3, 64, 64])]
    path = _save(tmp_path / "u8.onnx", [helper.make_node("Identity", ["images"], ["out"])],
                 inputs, outputs, [])
    with pytest.raises(ModelError, match="input 'images' has dtype uint8; expected float32"):
        resolve_inputs(_cfg(path, tiny_coco))


# --- ops the backend cannot load -----------------------------------------------------------


def test_efficientnms_trt_is_refused_once_on_onnxruntime_with_the_fix(tmp_path, tiny_coco):
    path = trt_nms_model(tmp_path / "e2e.onnx", 8)
    with pytest.raises(ModelError) as info:
        resolve_inputs(_cfg(path, tiny_coco))
    message = str(info.value)
    assert "EfficientNMS_TRT is a TensorRT plugin: run with --backend tensorrt, or export " \
           "with --max-wh for ONNX Runtime's NMS" in message
    assert "'batched_nms'" in message and "backend onnxruntime" in message
    with pytest.raises(ModelError, match="EfficientNMS_TRT is a TensorRT plugin"):
        resolve_inputs(_cfg(path, tiny_coco, backend="torch"))


def test_efficientnms_trt_passes_on_tensorrt_with_its_class_count(tmp_path, tiny_coco):
    inputs = resolve_inputs(_cfg(trt_nms_model(tmp_path / "e2e.onnx", 8), tiny_coco,
                                 backend="tensorrt"))
    assert inputs.layout == "end2end" and inputs.num_classes == 8
    assert "EfficientNMS_TRT" in inputs.classes_from
    with pytest.raises(InputDataError, match="predicts 80 classes .* has 8 categories"):
        resolve_inputs(_cfg(trt_nms_model(tmp_path / "e80.onnx", 80), tiny_coco,
                            backend="tensorrt"))


def test_unknown_custom_op_is_refused_on_onnxruntime(tmp_path, tiny_coco):
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 64, 13])]
    path = _save(tmp_path / "custom.onnx",
                 [helper.make_node("Decode", ["images"], ["out"], domain="my.ops")],
                 inputs, outputs, [])
    with pytest.raises(ModelError, match=r"my.ops::Decode is a custom op \(domain 'my.ops'\)"):
        resolve_inputs(_cfg(path, tiny_coco))


# --- class counts -------------------------------------------------------------------------


def test_ort_nms_class_count_read_from_the_graph(tmp_path, tiny_coco):
    path = ort_nms_model(tmp_path / "nms.onnx", 8)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows = session.run(None, {"images": np.random.default_rng(0).random(
        (2, 3, SIZE, SIZE), np.float32)})[0]
    assert rows.ndim == 2 and rows.shape[1] == 7  # the graph is a real [N,7] NMS export
    inputs = resolve_inputs(_cfg(path, tiny_coco))
    assert (inputs.layout, inputs.num_classes) == ("ort_nms", 8)
    assert inputs.fixed_batch is None


def test_ort_nms_with_the_wrong_class_count_is_stopped(tmp_path, tiny_coco):
    path = ort_nms_model(tmp_path / "nms80.onnx", 80, batch=1)
    with pytest.raises(InputDataError) as info:
        resolve_inputs(_cfg(path, tiny_coco))
    assert "predicts 80 classes (from the class max before NonMaxSuppression" in str(info.value)
    assert "has 8 categories; give --class-map FILE" in str(info.value)


def test_class_map_makes_a_subset_model_measurable(tmp_path, tiny_coco):
    """A 3-class model (trained on three of the dataset's categories) with a class map."""
    path = ort_nms_model(tmp_path / "nms3.onnx", 3, batch=1)
    with pytest.raises(InputDataError, match="predicts 3 classes"):
        resolve_inputs(_cfg(path, tiny_coco))
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"0": 5, "1": 17, "2": 90}))
    inputs = resolve_inputs(_cfg(path, tiny_coco, class_map=mapping))
    assert inputs.dataset.num_classes == 3
    assert list(inputs.dataset.class_to_category) == [5, 17, 90]
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([1, 2]))
    with pytest.raises(InputDataError, match="wrong.json: maps 2 classes, but model .* "
                                             "predicts 3"):
        resolve_inputs(_cfg(path, tiny_coco, class_map=wrong))
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([2, 5, 999]))
    with pytest.raises(InputDataError, match=r"unknown.json: names category ids "
                                             r"\[999\]"):
        resolve_inputs(_cfg(path, tiny_coco, class_map=unknown))


def test_nms_output_that_does_not_tell_its_classes_needs_num_classes(tmp_path, tiny_coco):
    """An [N,7] graph whose class count no shape, op or metadata gives."""
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])]
    outputs = [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["n", 7])]
    inits = [_init("shape", np.array([-1, 7], np.int64))]
    path = _save(tmp_path / "opaque.onnx",
                 [helper.make_node("Reshape", ["images", "shape"], ["rows"])],
                 inputs, outputs, inits)
    with pytest.raises(ModelError, match=r"come after NMS \(ort_nms\) .* give --num-classes N"):
        resolve_inputs(_cfg(path, tiny_coco))
    assert resolve_inputs(_cfg(path, tiny_coco, num_classes=8)).num_classes == 8
    with pytest.raises(InputDataError, match="predicts 80 classes \\(from --num-classes\\)"):
        resolve_inputs(_cfg(path, tiny_coco, num_classes=80))


def test_num_classes_that_contradicts_the_model_is_refused(tmp_path, tiny_coco):
    path = ort_nms_model(tmp_path / "nms.onnx", 8)
    with pytest.raises(ConfigError, match="option num_classes: got 5, but model .* predicts 8"):
        resolve_inputs(_cfg(path, tiny_coco, num_classes=5))


def test_metadata_names_give_the_class_count(tmp_path, tiny_coco):
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])]
    outputs = [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["n", 7])]
    names = "{" + ", ".join(f"{i}: 'c{i}'" for i in range(80)) + "}"  # as Ultralytics writes
    path = _save(tmp_path / "meta.onnx",
                 [helper.make_node("Reshape", ["images", "shape"], ["rows"])], inputs, outputs,
                 [_init("shape", np.array([-1, 7], np.int64))], metadata={"names": names})
    with pytest.raises(InputDataError, match=r"predicts 80 classes \(from metadata names"):
        resolve_inputs(_cfg(path, tiny_coco))


def test_dense_model_of_the_project_exporter_passes(tiny_detector, tiny_coco):
    inputs = resolve_inputs(_cfg(tiny_detector, tiny_coco))
    assert (inputs.layout, inputs.num_classes, inputs.imgsz) == ("raw", 8, 64)


def test_user_model_runs_on_the_embedded_dataset_when_classes_agree(tiny_detector, tmp_path):
    """No --coco: the generated default dataset (8 categories) is the evaluation set."""
    pytest.importorskip("PIL")
    from bench.data import synthetic

    root = synthetic.generate(tmp_path / "default", n_train=4, n_eval=3, progress=False)
    assert resolve_inputs(_cfg(tiny_detector, root)).dataset.num_classes == 8


# --- dynamic H/W --------------------------------------------------------------------------


def test_dynamic_hw_size_read_from_the_baked_grid(tmp_path, tiny_coco):
    path = dynamic_hw_model(tmp_path / "dyn.onnx", 8, baked=True)
    inputs = resolve_inputs(_cfg(path, tiny_coco))
    assert (inputs.imgsz, inputs.layout, inputs.num_classes) == (64, "raw", 8)
    with pytest.raises(ConfigError, match="grids baked for 64x64 .* expected 64 or no --imgsz"):
        resolve_inputs(_cfg(path, tiny_coco, imgsz=320))


def test_dynamic_hw_without_a_size_in_the_model_asks_for_imgsz(tmp_path, tiny_coco):
    path = dynamic_hw_model(tmp_path / "dyn.onnx", 8, baked=False)
    with pytest.raises(ConfigError) as info:
        resolve_inputs(_cfg(path, tiny_coco))
    assert "dynamic height and width (h x w)".replace(" x ", "x") in str(info.value)
    assert "give --imgsz N" in str(info.value) and len(str(info.value).splitlines()) == 1
    assert resolve_inputs(_cfg(path, tiny_coco, imgsz=96)).imgsz == 96
    with pytest.raises(InputDataError, match="three.json: maps 3 classes, but model .* predicts 8"):
        mapping = tmp_path / "three.json"
        mapping.write_text("[2, 5, 11]")  # the probe ran: 8 classes, not the map's 3
        resolve_inputs(_cfg(path, tiny_coco, imgsz=96, class_map=mapping))


# --- class map files ------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"0": 1, "2": 3}', "keys must be 0..1"),
    ('{"a": 1}', "keys must be model class indices"),
    ("[]", "expected a non-empty JSON list"),
    ('["1"]', "expected a non-empty JSON list"),
])
def test_bad_class_map_files_name_the_file(tmp_path, text, message):
    path = tmp_path / "map.json"
    path.write_text(text)
    with pytest.raises(InputDataError, match=f"class map .*map.json: {message}"):
        load_class_map(path)


def test_class_map_list_and_object_mean_the_same(tmp_path):
    (tmp_path / "a.json").write_text("[3, 1, 2]")
    (tmp_path / "b.json").write_text('{"1": 1, "0": 3, "2": 2}')
    assert load_class_map(tmp_path / "a.json") == load_class_map(tmp_path / "b.json") == [3, 1, 2]
    with pytest.raises(ConfigError, match="option class_map: .*missing.json not found"):
        load_class_map(tmp_path / "missing.json")


def test_torch_backend_refuses_an_op_its_interpreter_lacks(tmp_path, tiny_coco, tiny_detector):
    path = ort_nms_model(tmp_path / "nms.onnx", 8)
    with pytest.raises(ModelError, match="NonMaxSuppression is not supported by the torch "
                                         "backend's ONNX interpreter: run with --backend "
                                         "onnxruntime"):
        resolve_inputs(_cfg(path, tiny_coco, backend="torch"))
    assert resolve_inputs(_cfg(tiny_detector, tiny_coco, backend="torch")).layout == "raw"
