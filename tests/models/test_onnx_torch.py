"""OnnxModule as a whole: a YOLO-like torch export, gradients, taps, write-back and Q/DQ."""

import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from ort_compare import (
    FLOAT,
    assert_same,
    init,
    run_both,
    session,
    single_input_model,
)
from torch import nn

from bench.errors import ModelError
from bench.models.onnx_torch import OnnxModule, state_to_onnx

N = helper.make_node


# --- a YOLO-like detector exported by torch's legacy (TorchScript) exporter -------------

class ConvBlock(nn.Module):
    def __init__(self, c_in, c_out, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Detect(nn.Module):
    """Export-layout head: [B, anchors*cells, 5 + classes] with the grid decode inside."""

    def __init__(self, channels, strides, classes=2, inplace=False):
        super().__init__()
        self.na, self.no, self.strides, self.inplace = 3, 5 + classes, strides, inplace
        self.convs = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in channels)
        self.register_buffer("anchors", torch.rand(len(channels), 1, 3, 1, 1, 2) * 20 + 5)

    def _grid(self, nx, ny):
        ys, xs = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
        return torch.stack((xs, ys), 2).view(1, 1, ny, nx, 2).float()

    def _decode(self, y, i, grid):
        if self.inplace:  # exported as Slice + ScatterND
            y[..., 0:2] = (y[..., 0:2] * 2 - 0.5 + grid) * self.strides[i]
            y[..., 2:4] = (y[..., 2:4] * 2) ** 2 * self.anchors[i]
            return y
        xy, wh, rest = y.split((2, 2, self.no - 4), 4)
        return torch.cat(((xy * 2 - 0.5 + grid) * self.strides[i],
                          (wh * 2) ** 2 * self.anchors[i], rest), 4)

    def forward(self, features):
        out = []
        for i, x in enumerate(features):
            x = self.convs[i](x)
            bs, _, ny, nx = x.shape
            x = x.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            y = self._decode(x.sigmoid(), i, self._grid(nx, ny))
            out.append(y.view(bs, -1, self.no))
        return torch.cat(out, 1)


class TinyYolo(nn.Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.stem = nn.Sequential(ConvBlock(3, 8, 3, 2), ConvBlock(8, 16, 3, 2),
                                  ConvBlock(16, 16, 3, 2))
        self.res = ConvBlock(16, 16, 3)
        self.down = ConvBlock(16, 32, 3, 2)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.sppf = ConvBlock(32 * 3, 32)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.fuse = ConvBlock(32 + 16, 16)
        self.detect = Detect((16, 32), (8.0, 16.0), inplace=inplace)

    def forward(self, x):
        p3 = self.stem(x)
        p3 = p3 + self.res(p3)
        p4 = self.down(p3)
        a = self.pool(p4)
        b = self.pool(a)
        p4 = self.sppf(torch.cat((p4, a, b), 1))
        p3 = self.fuse(torch.cat((self.up(p4), p3), 1))
        return self.detect([p3, p4])


def export_tiny_yolo(opset: int, inplace: bool, seed: int = 0) -> onnx.ModelProto:
    torch.manual_seed(seed)
    net = TinyYolo(inplace).eval()
    for module in net.modules():  # non-trivial BN so that folding it matters
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 3, 64, 64), buffer, dynamo=False,
                          opset_version=opset, input_names=["images"], output_names=["output"],
                          dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}})
    return onnx.load_from_string(buffer.getvalue())


@pytest.fixture(scope="module")
def yolo_opset17():
    return export_tiny_yolo(opset=17, inplace=False)


def _images(batch, seed=0):
    return np.random.default_rng(seed).random((batch, 3, 64, 64), dtype=np.float32)


def _op_types(model):
    return {n.op_type for n in model.graph.node}


@pytest.mark.parametrize("opset, inplace", [(11, True), (17, False)])
def test_yolo_like_export_matches_onnxruntime_at_batch_1_and_3(opset, inplace):
    model = export_tiny_yolo(opset, inplace)
    # The legacy exporter's dynamic-batch head: shape arithmetic feeding Reshape.
    assert {"Shape", "Gather", "Concat", "Reshape", "Resize", "MaxPool"} <= _op_types(model)
    if inplace:
        assert "ScatterND" in _op_types(model)
    module = OnnxModule(model)
    for batch in (1, 3):
        expected, got = run_both(model, _images(batch, seed=batch), module)
        assert got[0].shape == (batch, 3 * (8 * 8 + 4 * 4), 7)
        assert_same(expected, got, atol=1e-4)  # boxes reach ~60 px: 1e-5 relative


def test_yolo_like_parameters_are_the_float_weights(yolo_opset17):
    module = OnnxModule(yolo_opset17)
    floats = {i.name for i in yolo_opset17.graph.initializer
              if i.data_type == TensorProto.FLOAT and len(i.dims) >= 1}
    conv_weights = {n.input[1] for n in yolo_opset17.graph.node if n.op_type == "Conv"}
    assert conv_weights <= set(module.param_names)
    assert set(module.param_names) == floats
    for init_name, attr in module.param_names.items():
        assert isinstance(getattr(module, attr), nn.Parameter), init_name
    assert module.input_name == "images" and module.output_names == ("output",)


def test_gradients_reach_every_conv_weight(yolo_opset17):
    module = OnnxModule(yolo_opset17)
    (out,) = module(torch.from_numpy(_images(2)))
    out[..., 4:].sum().backward()  # objectness and class scores depend on every layer
    for node in yolo_opset17.graph.node:
        if node.op_type == "Conv":
            grad = getattr(module, module.param_names[node.input[1]]).grad
            assert grad is not None and grad.abs().sum() > 0, node.name


def test_state_to_onnx_round_trips_modified_weights(yolo_opset17):
    module = OnnxModule(yolo_opset17)
    with torch.no_grad():
        for param in module.parameters():
            param.mul_(1.1).add_(0.01)
    written = state_to_onnx(module, yolo_opset17)
    assert [i.name for i in written.graph.initializer] == \
        [i.name for i in yolo_opset17.graph.initializer]
    for old, new in zip(yolo_opset17.graph.initializer, written.graph.initializer):
        assert (old.data_type, list(old.dims)) == (new.data_type, list(new.dims))
    x = _images(3)
    expected = session(written).run(None, {"images": x})
    with torch.no_grad():
        got = [t.numpy() for t in module(torch.from_numpy(x))]
    assert_same(expected, got, atol=1e-4)
    before = session(yolo_opset17).run(None, {"images": x})[0]
    assert np.abs(before - expected[0]).max() > 1e-2  # the write-back changed the model


def test_forward_collect_returns_intermediates_equal_to_onnxruntime(yolo_opset17):
    module = OnnxModule(yolo_opset17)
    convs = [n.output[0] for n in yolo_opset17.graph.node if n.op_type == "Conv"][:3]
    probe = onnx.ModelProto()
    probe.CopyFrom(yolo_opset17)
    probe.graph.output.extend(helper.make_tensor_value_info(c, FLOAT, None) for c in convs)
    x = _images(2)
    expected = session(probe).run(None, {"images": x})
    with torch.no_grad():
        outputs, got = module.forward_collect(torch.from_numpy(x), convs)
    assert set(got) == set(convs)
    assert_same(expected, [outputs[0].numpy()] + [got[c].numpy() for c in convs], atol=1e-4)


def test_trunk_keeps_only_what_the_named_tensors_need(yolo_opset17):
    from bench.models.onnx_torch import trunk

    convs = [n.output[0] for n in yolo_opset17.graph.node if n.op_type == "Conv"]
    last = convs[-1]
    body = trunk(yolo_opset17, [convs[2], last])
    assert [o.name for o in body.graph.output] == [convs[2], last]
    kept = {id(n) for n in body.graph.node}
    assert len(kept) < len(yolo_opset17.graph.node)  # the decode after the last conv is gone
    used = {i for n in body.graph.node for i in n.input}
    assert all(i.name in used for i in body.graph.initializer)
    x = torch.from_numpy(_images(2))
    with torch.no_grad():
        _, whole = OnnxModule(yolo_opset17).forward_collect(x, [convs[2], last])
        outputs, part = OnnxModule(body).forward_collect(x, [convs[2], last])
    assert torch.equal(whole[last], part[last]) and torch.equal(outputs[1], whole[last])
    with pytest.raises(ModelError, match="'nope' is not in the ONNX graph"):
        trunk(yolo_opset17, ["nope"])
    # initializers also listed as graph inputs (keep_initializers_as_inputs): the dropped
    # ones leave the inputs too, so the image stays the one runtime input
    listed = onnx.ModelProto()
    listed.CopyFrom(yolo_opset17)
    listed.graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
                              for i in listed.graph.initializer)
    early = trunk(listed, [convs[2]])
    assert len(early.graph.initializer) < len(listed.graph.initializer)
    with torch.no_grad():
        _, got = OnnxModule(early).forward_collect(x, [convs[2]])
    assert torch.equal(got[convs[2]], whole[convs[2]])


# --- taps ---------------------------------------------------------------------------------

def _relu_residual():
    nodes = [N("Relu", ["x"], ["y"]), N("Conv", ["y", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             N("Add", ["c", "x"], ["out"])]
    inits = [init("W", np.random.default_rng(0).standard_normal((2, 2, 3, 3))
                  .astype(np.float32)), init("B", np.array([0.5, -0.25], np.float32))]
    return single_input_model(nodes, [2, 5, 5], {"out": FLOAT}, inits)


def test_tap_zeroing_an_activation_removes_its_branch():
    module = OnnxModule(_relu_residual())
    module.set_taps(["y"])
    x = torch.randn(3, 2, 5, 5)
    seen = []
    (out,) = module(x, tap=lambda name, t: seen.append(name) or t * 0)
    assert seen == ["y"]
    bias = torch.tensor([0.5, -0.25]).reshape(1, 2, 1, 1)
    torch.testing.assert_close(out, x + bias)  # conv of zeros leaves only its bias
    (untapped,) = module(x)
    assert not torch.allclose(untapped, out)


def test_tap_on_an_initializer_replaces_the_weight_for_its_consumer():
    module = OnnxModule(_relu_residual())
    module.set_taps(["W", "B"])
    x = torch.randn(1, 2, 5, 5)
    (out,) = module(x, tap=lambda name, t: t * 0)
    torch.testing.assert_close(out, x)
    assert module.W.abs().sum() > 0  # the parameter itself is untouched


def test_tap_on_unknown_tensor_is_refused():
    module = OnnxModule(_relu_residual())
    with pytest.raises(ModelError, match="no_such_tensor"):
        module.set_taps(["no_such_tensor"])


# --- parameters versus buffers, and errors at run time --------------------------------------

def test_configuring_tensors_stay_buffers():
    nodes = [N("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"]),
             N("Resize", ["bn", "", "scales"], ["up"], mode="nearest"),
             N("Reshape", ["up", "shape"], ["out"])]
    ones = np.ones(2, np.float32)
    inits = [init("s", ones), init("b", ones * 0), init("m", ones * 0), init("v", ones),
             init("scales", np.array([1, 1, 2, 2], np.float32)),
             init("shape", np.array([0, -1], np.int64))]
    module = OnnxModule(single_input_model(nodes, [2, 3, 3], {"out": FLOAT}, inits))
    assert set(module.param_names) == {"s", "b"}
    assert set(module.buffer_names) == {"m", "v", "scales", "shape"}
    assert module(torch.ones(3, 2, 3, 3))[0].shape == (3, 72)


def test_input_follows_the_weights_dtype_after_a_module_cast():
    model = _relu_residual()
    x = np.random.default_rng(5).standard_normal((2, 2, 5, 5)).astype(np.float32)
    expected = session(model).run(None, {"x": x})[0]
    module = OnnxModule(model).double()  # as .half() would on a GPU
    (out,) = module(torch.from_numpy(x))
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_run_time_failure_names_the_node():
    nodes = [N("Reshape", ["x", "shape"], ["out"], name="head/reshape")]
    model = single_input_model(nodes, [5], {"out": FLOAT},
                               [init("shape", np.array([-1, 4], np.int64))])
    with pytest.raises(ModelError, match="head/reshape"):
        OnnxModule(model)(torch.zeros(3, 5))


def test_initializers_listed_as_graph_inputs_are_not_runtime_inputs():
    nodes = [N("Mul", ["x", "W"], ["out"])]
    model = single_input_model(nodes, [3], {"out": FLOAT}, [init("W", np.full(3, 2, np.float32))])
    model.graph.input.append(helper.make_tensor_value_info("W", FLOAT, [3]))  # IR < 4 style
    module = OnnxModule(model)
    assert module.input_name == "x" and set(module.param_names) == {"W"}
    model.graph.input.append(helper.make_tensor_value_info("y", FLOAT, [3]))
    with pytest.raises(ModelError, match="exactly one"):
        OnnxModule(model)


def test_missing_input_is_refused_at_construction():
    nodes = [N("Add", ["x", "ghost"], ["out"], name="adder")]
    with pytest.raises(ModelError, match="ghost"):
        OnnxModule(single_input_model(nodes, [5], {"out": FLOAT}))


def test_model_local_functions_are_inlined():
    body = [N("Sigmoid", ["t"], ["s"]), N("Mul", ["t", "s"], ["out"])]
    silu = helper.make_function("local", "SiLU", ["t"], ["out"], body,
                                [helper.make_opsetid("", 17)])
    nodes = [N("SiLU", ["x"], ["y"], domain="local")]
    model = single_input_model(nodes, [3, 4], {"y": FLOAT})
    model.opset_import.append(helper.make_opsetid("local", 1))
    model.functions.append(silu)
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    assert_same(*run_both(model, x))


# --- Q/DQ graphs ------------------------------------------------------------------------------

def _qdq_conv_model():
    """uint8 activations with a zero point, int8 per-channel weights, int32 bias, int8 output."""
    rng = np.random.default_rng(3)
    weights = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w_scale = (np.abs(weights).reshape(4, -1).max(1) / 127).astype(np.float32)
    w_q = np.clip(np.round(weights / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
    x_scale, y_scale = np.float32(4.0 / 255), np.float32(0.05)
    bias_q = rng.integers(-200, 200, 4).astype(np.int32)
    nodes = [
        N("QuantizeLinear", ["x", "x_s", "x_zp"], ["xq"]),
        N("DequantizeLinear", ["xq", "x_s", "x_zp"], ["xd"]),
        N("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["wd"], axis=0),
        N("DequantizeLinear", ["b_q", "b_s"], ["bd"], axis=0),
        N("Conv", ["xd", "wd", "bd"], ["conv"], pads=[1, 1, 1, 1]),
        N("Relu", ["conv"], ["relu"]),
        N("QuantizeLinear", ["relu", "y_s", "y_zp"], ["yq"]),
        N("DequantizeLinear", ["yq", "y_s", "y_zp"], ["y"]),
        N("QuantizeLinear", ["conv", "y_s", "y_zp"], ["codes"]),
    ]
    inits = [init("x_s", x_scale), init("x_zp", np.uint8(128)), init("w_q", w_q),
             init("w_s", w_scale), init("w_zp", np.zeros(4, np.int8)), init("b_q", bias_q),
             init("b_s", (x_scale * w_scale).astype(np.float32)), init("y_s", y_scale),
             init("y_zp", np.int8(0))]
    model = single_input_model(nodes, [3, 8, 8], {"y": FLOAT, "codes": TensorProto.INT8},
                               inits, opset=13)
    return model, float(y_scale)


def test_qdq_model_matches_onnxruntime_within_one_step():
    model, step = _qdq_conv_model()
    module = OnnxModule(model)
    assert module.param_names == {}  # Q/DQ scales are configuration, weights are int8
    for batch in (1, 3):
        x = np.random.default_rng(batch).uniform(-2, 2, (batch, 3, 8, 8)).astype(np.float32)
        (y_ort, codes_ort), (y, codes) = run_both(model, x, module)
        assert codes.dtype == np.int8 and y.dtype == np.float32
        assert np.abs(y - y_ort).max() <= step * 1.001
        assert np.abs(codes.astype(int) - codes_ort.astype(int)).max() <= 1
        assert np.mean(y == y_ort) > 0.95  # off-by-one only at rounding ties


def test_quantize_dequantize_passes_gradients_straight_through():
    rng = np.random.default_rng(4)
    nodes = [N("Conv", ["x", "W1"], ["c1"], pads=[1, 1, 1, 1]),
             N("QuantizeLinear", ["c1", "s", "zp"], ["q"]),
             N("DequantizeLinear", ["q", "s", "zp"], ["d"]),
             N("Conv", ["d", "W2"], ["out"])]
    inits = [init("W1", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
             init("W2", rng.standard_normal((2, 4, 1, 1)).astype(np.float32)),
             init("s", np.float32(0.02)), init("zp", np.int8(0))]
    model = single_input_model(nodes, [3, 6, 6], {"out": FLOAT}, inits, opset=13)
    module = OnnxModule(model)
    x = torch.from_numpy(rng.uniform(-0.3, 0.3, (2, 3, 6, 6)).astype(np.float32))
    module(x)[0].sum().backward()
    assert module.W1.grad is not None and module.W1.grad.abs().sum() > 0
    # Forward stays quantized: the dequantized values sit on the 0.02 grid.
    _, got = module.forward_collect(x, ["d"])
    codes = got["d"].detach() / 0.02
    torch.testing.assert_close(codes, codes.round(), atol=1e-4, rtol=0)


# --- shape-only values computed once per input shape ---------------------------------------

def test_legacy_export_shape_chain_is_cached_and_stays_right_across_batches():
    model = export_tiny_yolo(opset=12, inplace=True)
    module = OnnxModule(model)
    assert sum(module._work.static) > len(module._plan) / 2  # the exporter's shape arithmetic
    for batch in (1, 3, 1, 3):  # second pass of each shape runs from the cache
        expected, got = run_both(model, _images(batch, seed=batch), module)
        assert_same(expected, got, atol=1e-4)


def test_data_dependent_shapes_are_never_cached():
    nodes = [N("Greater", ["x", "zero"], ["positive"]), N("NonZero", ["positive"], ["where"]),
             N("Shape", ["where"], ["shape"]), N("Gather", ["shape", "one"], ["count"], axis=0),
             N("Shape", ["x"], ["x_shape"]), N("Reshape", ["x", "x_shape"], ["same"])]
    inits = [init("zero", np.float32(0)), init("one", np.int64(1))]
    model = single_input_model(nodes, [5], {"count": TensorProto.INT64, "same": FLOAT}, inits)
    module = OnnxModule(model)
    for x in ([[1, -1, 2, -2, 3]], [[-1, -1, -1, -1, 4]], [[1, 1, 1, 1, 1]]):
        x = np.asarray(x, np.float32)
        expected, got = run_both(model, x, module)
        assert_same(expected, got)
        assert got[0] == (x > 0).sum()


def test_tap_on_a_cached_shape_tensor_is_called_on_every_run():
    nodes = [N("Shape", ["x"], ["shape"]), N("Reshape", ["x", "shape"], ["y"])]
    module = OnnxModule(single_input_model(nodes, [4], {"y": FLOAT}))
    module.set_taps(["shape"])
    calls = []
    for _ in range(3):
        module(torch.ones(2, 4), tap=lambda name, t: calls.append(name) or t)
    assert calls == ["shape"] * 3


def test_values_cached_under_inference_mode_do_not_leak_into_training():
    nodes = [N("Shape", ["x"], ["s"]), N("Gather", ["s", "one"], ["n"]),
             N("Cast", ["n"], ["n_float"], to=FLOAT), N("Mul", ["x", "W"], ["xw"]),
             N("Mul", ["xw", "n_float"], ["y"])]
    inits = [init("one", np.int64(1)), init("W", np.ones(3, np.float32))]
    module = OnnxModule(single_input_model(nodes, [3], {"y": FLOAT}, inits))
    with torch.inference_mode():  # as the PyTorch engine runs it
        module(torch.ones(2, 3))
    module(torch.ones(2, 3))[0].sum().backward()  # as QAT then trains it
    torch.testing.assert_close(module.W.grad, torch.full((3,), 6.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_module_on_cuda_matches_onnxruntime_cpu():
    model = export_tiny_yolo(opset=12, inplace=True)
    module = OnnxModule(model).to("cuda")
    for batch in (1, 3, 3):
        x = _images(batch, seed=batch)
        expected = session(model).run(None, {"images": x})
        with torch.no_grad():
            got = [t.cpu().numpy() for t in module(torch.from_numpy(x).cuda())]
        assert_same(expected, got, atol=1e-3)  # TF32/cuDNN convolutions
    assert all(v.device.type == "cpu" for name, v in next(iter(
        module._shape_cache.values())).items() if name in module._work.host_frontier)
