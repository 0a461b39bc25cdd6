"""A tiny YOLO-like ONNX graph, built with onnx.helper, for the Q/DQ placement tests.

Input ``images`` [batch, 3, 32, 32] (batch dynamic), output ``output`` [batch, 640, 8]
(2 anchors x (16x16 + 8x8) cells, 5 + 3 classes). Blocks, in YOLOv7's order:

  stem      c0 3->8 k3 SiLU (the first conv: its input is the image), c1 8->16 k3 s2 SiLU
  ELAN      c2, c3 1x1 LeakyRelu on c1 (one tensor, two consumers); c4 k3 on c3;
            Concat[c2, c3, c4] -> c5 1x1 SiLU
  residual  c6 k3 SiLU on c5; Add(c5, c6) -> c7 1x1 SiLU = p3 (16x16)
  MP        MaxPool(p3) -> c8; c9 on p3 -> c10 k3 s2; Concat[c8, c10] -> c11 = p4 (8x8)
  SPP       MaxPool k5 s1 on p4; Concat[p4, pool] -> c12 = p4b
  FPN       c13 on p4b -> Resize x2 (nearest); c14 on p3; Concat[up, c14] -> c15 = n3
  head      r3 k3 on n3, r4 k3 on p4b (RepConv stand-ins); detect convs d3, d4 (1x1) with
            an ImplicitA-style Add before d4 and an ImplicitM-style Mul after it
  decode    Reshape -> Transpose -> Sigmoid -> xy = (s*2 - 0.5 + grid) * stride,
            wh = (s*2)^2 * anchor_grid (Pow) -> Concat -> Reshape -> Concat of levels.
            Level 4 reshapes with a Shape-built target, as torch exports ``view(B, -1, no)``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NA, NC, SIZE = 2, 3, 32
NO = 5 + NC

FIRST_CONV = "/model.0/conv/Conv"
HEAD_CONVS = ("/model.105/m.0/Conv", "/model.105/m.1/Conv")
# Every other conv: what the default placement quantizes.
BODY_CONVS = tuple(f"/model.{i}/conv/Conv" for i in range(1, 16)) + (
    "/model.102/rbr/Conv",
    "/model.103/rbr/Conv",
)


class _Builder:
    def __init__(self, seed: int, opset: int):
        self.rng = np.random.default_rng(seed)
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int,
        idx: int | str,
        s: int = 1,
        out: str | None = None,
        gain: float = 2.0,
    ) -> str:
        prefix = f"/model.{idx}/conv" if isinstance(idx, int) else f"/model.{idx}"
        w = self.rng.normal(0, np.sqrt(gain / (cin * k * k)), (cout, cin, k, k))
        b = self.rng.normal(0, 0.1, cout)
        wn = self.const(f"model.{idx}.weight", w.astype(np.float32))
        bn = self.const(f"model.{idx}.bias", b.astype(np.float32))
        return self.node(
            "Conv",
            [x, wn, bn],
            out or f"{prefix}/Conv_output_0",
            f"{prefix}/Conv",
            kernel_shape=[k, k],
            strides=[s, s],
            pads=[k // 2] * 4,
        )

    def silu(self, x: str, idx: int | str) -> str:
        p = f"/model.{idx}/act"
        sig = self.node("Sigmoid", [x], f"{p}/Sigmoid_output_0", f"{p}/Sigmoid")
        return self.node("Mul", [x, sig], f"{p}/Mul_output_0", f"{p}/Mul")

    def cbs(self, x: str, cin: int, cout: int, k: int, idx: int, s: int = 1) -> str:
        return self.silu(self.conv(x, cin, cout, k, idx, s), idx)

    def cbl(self, x: str, cin: int, cout: int, idx: int) -> str:
        y = self.conv(x, cin, cout, 1, idx)
        return self.node(
            "LeakyRelu",
            [y],
            f"/model.{idx}/act/LeakyRelu_output_0",
            f"/model.{idx}/act/LeakyRelu",
            alpha=0.1,
        )


def _backbone(b: _Builder) -> tuple[str, str, str]:
    x = b.cbs("images", 3, 8, 3, 0)
    x = b.cbs(x, 8, 16, 3, 1, s=2)
    c2, c3 = b.cbl(x, 16, 8, 2), b.cbl(x, 16, 8, 3)
    c4 = b.cbs(c3, 8, 8, 3, 4)
    cat = b.node("Concat", [c2, c3, c4], "/model.5/Concat_output_0", "/model.5/Concat", axis=1)
    c5 = b.cbs(cat, 24, 16, 1, 5)
    c6 = b.cbs(c5, 16, 16, 3, 6)
    add = b.node("Add", [c5, c6], "/model.7/Add_output_0", "/model.7/Add")
    p3 = b.cbs(add, 16, 16, 1, 7)
    pool = b.node(
        "MaxPool",
        [p3],
        "/model.8/m/MaxPool_output_0",
        "/model.8/m/MaxPool",
        kernel_shape=[2, 2],
        strides=[2, 2],
    )
    c8 = b.cbs(pool, 16, 8, 1, 8)
    c10 = b.cbs(b.cbs(p3, 16, 8, 1, 9), 8, 8, 3, 10, s=2)
    cat = b.node("Concat", [c8, c10], "onnx::Conv_123", "Concat_42", axis=1)
    p4 = b.cbs(cat, 16, 16, 1, 11)
    spp = b.node(
        "MaxPool",
        [p4],
        "/model.12/m/MaxPool_output_0",
        "/model.12/m/MaxPool",
        kernel_shape=[5, 5],
        strides=[1, 1],
        pads=[2, 2, 2, 2],
    )
    cat = b.node("Concat", [p4, spp], "/model.12/Concat_output_0", "/model.12/Concat", axis=1)
    return p3, p4, b.cbs(cat, 32, 16, 1, 12)


def _neck(b: _Builder, p3: str, p4b: str) -> str:
    c13 = b.cbs(p4b, 16, 8, 1, 13)
    scales = b.const("up_scales", np.array([1, 1, 2, 2], np.float32))
    roi = "" if b.opset >= 13 else b.const("up_roi", np.zeros(0, np.float32))  # optional in 13
    up = b.node(
        "Resize",
        [c13, roi, scales],
        "/model.13/up/Resize_output_0",
        "/model.13/up/Resize",
        mode="nearest",
    )
    cat = b.node(
        "Concat",
        [up, b.cbs(p3, 16, 8, 1, 14)],
        "/model.15/Concat_output_0",
        "/model.15/Concat",
        axis=1,
    )
    return b.cbs(cat, 16, 16, 3, 15)


def _head_conv(b: _Builder, x: str, level: int, implicit: bool) -> str:
    idx = f"105/m.{level}"
    if implicit:
        ia = b.const(
            "model.105.ia.1.implicit", b.rng.normal(0, 0.02, (1, 16, 1, 1)).astype(np.float32)
        )
        x = b.node("Add", [x, ia], "/model.105/ia.1/Add_output_0", "/model.105/ia.1/Add")
    y = b.conv(x, 16, NA * NO, 1, idx, gain=1.0)
    if implicit:
        im = b.const("model.105.im.1.implicit", np.ones((1, NA * NO, 1, 1), np.float32))
        y = b.node("Mul", [y, im], "/model.105/im.1/Mul_output_0", "/model.105/im.1/Mul")
    return y


def _grid(h: int, w: int) -> np.ndarray:
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack((xs, ys), -1).reshape(1, 1, h, w, 2).astype(np.float32)


def _slice(b: _Builder, x: str, start: int, end: int, name: str) -> str:
    args = [
        b.const(f"{name}_{v}", np.array([n], np.int64))
        for v, n in (("starts", start), ("ends", end), ("axes", 4))
    ]
    return b.node("Slice", [x] + args, f"{name}_output_0", name)


def _flatten_shape(b: _Builder, raw: str, p: str) -> str:
    """view(B, -1, no) as torch exports it: Shape -> Gather -> Unsqueeze -> Concat."""
    shape = b.node("Shape", [raw], f"{p}/Shape_output_0", f"{p}/Shape")
    zero = b.const(f"{p}/zero", np.array(0, np.int64))
    bsz = b.node("Gather", [shape, zero], f"{p}/Gather_output_0", f"{p}/Gather", axis=0)
    if b.opset < 13:  # axes became an input in opset 13
        bsz = b.node("Unsqueeze", [bsz], f"{p}/Unsqueeze_output_0", f"{p}/Unsqueeze", axes=[0])
    else:
        axes = b.const(f"{p}/axes", np.array([0], np.int64))
        bsz = b.node("Unsqueeze", [bsz, axes], f"{p}/Unsqueeze_output_0", f"{p}/Unsqueeze")
    rest = b.const(f"{p}/rest", np.array([-1, NO], np.int64))
    return b.node("Concat", [bsz, rest], f"{p}/Concat_1_output_0", f"{p}/Concat_1", axis=0)


def _decode(b: _Builder, y: str, level: int, h: int, stride: float, dynamic: bool) -> str:
    p = f"/model.105/d{level}"
    shape = b.const(f"{p}/shape5", np.array([-1, NA, NO, h, h], np.int64))
    raw = b.node("Reshape", [y, shape], f"{p}/Reshape_output_0", f"{p}/Reshape")
    raw = b.node(
        "Transpose", [raw], f"{p}/Transpose_output_0", f"{p}/Transpose", perm=[0, 1, 3, 4, 2]
    )
    s = b.node("Sigmoid", [raw], f"{p}/Sigmoid_output_0", f"{p}/Sigmoid")
    two = b.const(f"{p}/two", np.array(2.0, np.float32))
    xy = b.node("Mul", [_slice(b, s, 0, 2, f"{p}/Slice"), two], f"{p}/Mul_output_0", f"{p}/Mul")
    xy = b.node(
        "Sub",
        [xy, b.const(f"{p}/half", np.array(0.5, np.float32))],
        f"{p}/Sub_output_0",
        f"{p}/Sub",
    )
    xy = b.node("Add", [xy, b.const(f"{p}/grid", _grid(h, h))], f"{p}/Add_output_0", f"{p}/Add")
    xy = b.node(
        "Mul",
        [xy, b.const(f"{p}/stride", np.array(stride, np.float32))],
        f"{p}/Mul_1_output_0",
        f"{p}/Mul_1",
    )
    wh = b.node(
        "Mul", [_slice(b, s, 2, 4, f"{p}/Slice_1"), two], f"{p}/Mul_2_output_0", f"{p}/Mul_2"
    )
    wh = b.node("Pow", [wh, two], f"{p}/Pow_output_0", f"{p}/Pow")
    anchors = (np.array([[10, 13], [16, 30]], np.float32) * stride / 8).reshape(1, NA, 1, 1, 2)
    wh = b.node(
        "Mul", [wh, b.const(f"{p}/anchor_grid", anchors)], f"{p}/Mul_3_output_0", f"{p}/Mul_3"
    )
    cat = b.node(
        "Concat",
        [xy, wh, _slice(b, s, 4, NO, f"{p}/Slice_2")],
        f"{p}/Concat_output_0",
        f"{p}/Concat",
        axis=-1,
    )
    target = (
        _flatten_shape(b, raw, p)
        if dynamic
        else b.const(f"{p}/shape3", np.array([-1, NA * h * h, NO], np.int64))
    )
    return b.node("Reshape", [cat, target], f"{p}/Reshape_1_output_0", f"{p}/Reshape_1")


def build_yolo_like(*, opset: int = 13, seed: int = 0) -> onnx.ModelProto:
    """The mini YOLO-like model described in the module docstring, checked by onnx."""
    b = _Builder(seed, opset)
    p3, _, p4b = _backbone(b)
    n3 = _neck(b, p3, p4b)
    r3 = b.silu(b.conv(n3, 16, 16, 3, "102/rbr"), "102")
    r4 = b.silu(b.conv(p4b, 16, 16, 3, "103/rbr"), "103")
    d3 = _decode(b, _head_conv(b, r3, 0, False), 3, SIZE // 2, 2.0, dynamic=False)
    d4 = _decode(b, _head_conv(b, r4, 1, True), 4, SIZE // 4, 4.0, dynamic=True)
    b.node("Concat", [d3, d4], "output", "/model.105/Concat", axis=1)
    graph = helper.make_graph(
        b.nodes,
        "yolo_like",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 640, NO])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
