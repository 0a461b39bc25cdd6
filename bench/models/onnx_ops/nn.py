"""Layer ONNX ops: convolutions, normalizations, matrix products, softmax, reductions, TopK."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.models.onnx_ops.context import Kernel, NodeContext, to_ints
from bench.models.onnx_ops.window import Window, split_total, torch_pads

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _conv(ctx: NodeContext) -> Kernel:
    window, groups = Window.of(ctx), ctx.attr("group", 1)

    def run(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        rank = x.dim() - 2
        begins, ends = window.explicit_pads(x.shape[2:], w.shape[2:])
        if begins != ends:  # torch pads symmetrically; pad the odd side first
            x, begins = F.pad(x, torch_pads(begins, ends)), [0] * rank
        return _CONV[rank](x, w, b, window.stride(rank), begins, window.dilation(rank), groups)
    return run


def _conv_transpose(ctx: NodeContext) -> Kernel:
    window, groups = Window.of(ctx), ctx.attr("group", 1)
    output_padding, output_shape = ctx.attr("output_padding"), ctx.attr("output_shape")

    def run(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        rank = x.dim() - 2
        extra = list(output_padding or [0] * rank)
        full = _CONV_T[rank](x, w, None, window.stride(rank), 0, 0, groups, window.dilation(rank))
        begins, ends = _transpose_pads(window, x.shape[2:], full.shape[2:], extra, output_shape)
        # Negative F.pad crops the padding away; the output padding adds zeros at the end.
        y = F.pad(full, torch_pads([-p for p in begins], [o - p for o, p in zip(extra, ends)]))
        return y if b is None else y + b.reshape(1, -1, *[1] * rank)
    return run


def _transpose_pads(window: Window, spatial, full, extra, output_shape
                    ) -> tuple[list[int], list[int]]:
    rank = len(spatial)
    if output_shape is None and window.auto_pad in ("NOTSET", "VALID"):
        if window.auto_pad == "VALID":
            return [0] * rank, [0] * rank
        pads = window.pads or (0,) * (2 * rank)
        return list(pads[:rank]), list(pads[rank:])
    stride = window.stride(rank)
    target = list(output_shape[-rank:]) if output_shape else [n * s for n, s in
                                                              zip(spatial, stride)]
    totals = [f + e - t for f, e, t in zip(full, extra, target)]
    return split_total(totals, upper=window.auto_pad == "SAME_UPPER")


def _batch_norm(ctx: NodeContext) -> Kernel:
    if ctx.attr("training_mode", 0):
        raise ctx.error("training_mode=1 is not supported; expected an inference graph")
    ctx.require_outputs(1)
    eps = float(ctx.attr("epsilon", 1e-5))
    return lambda x, scale, bias, mean, var: F.batch_norm(x, mean, var, scale, bias, False,
                                                          0.0, eps)


def _instance_norm(ctx: NodeContext) -> Kernel:
    eps = float(ctx.attr("epsilon", 1e-5))
    return lambda x, scale, bias: F.instance_norm(x, weight=scale, bias=bias, eps=eps)


def _layer_norm(ctx: NodeContext) -> Kernel:
    ctx.require_outputs(1)
    axis, eps = ctx.attr("axis", -1), float(ctx.attr("epsilon", 1e-5))

    def run(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        dims = tuple(range(axis % x.dim(), x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
        y = (x - mean) / torch.sqrt(var + eps) * scale
        return y if bias is None else y + bias
    return run


def _gemm(ctx: NodeContext) -> Kernel:
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    trans_a, trans_b = ctx.attr("transA", 0), ctx.attr("transB", 0)

    def run(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        y = (a.t() if trans_a else a) @ (b.t() if trans_b else b)
        y = y if alpha == 1.0 else alpha * y
        return y if c is None else y + (c if beta == 1.0 else beta * c)
    return run


def _einsum(ctx: NodeContext) -> Kernel:
    equation = ctx.attr("equation").replace(" ", "")
    return lambda *xs: torch.einsum(equation, *xs)


def _softmax(log: bool):
    fn = F.log_softmax if log else F.softmax

    def build(ctx: NodeContext) -> Kernel:
        if ctx.opset >= 13:
            axis = ctx.attr("axis", -1)
            return lambda x: fn(x, dim=axis)
        axis = ctx.attr("axis", 1)  # before opset 13: over everything from `axis` on
        return lambda x: fn(x.flatten(axis % x.dim()), dim=-1).reshape(x.shape)
    return build


def _prod(x: torch.Tensor, dim: tuple[int, ...], keepdim: bool) -> torch.Tensor:
    for d in sorted(dim, reverse=True):
        x = torch.prod(x, dim=d, keepdim=keepdim)
    return x


_REDUCERS = {
    "ReduceMean": torch.mean, "ReduceSum": torch.sum, "ReduceMax": torch.amax,
    "ReduceMin": torch.amin, "ReduceProd": _prod,
    "ReduceL1": lambda x, dim, keepdim: torch.sum(x.abs(), dim=dim, keepdim=keepdim),
    "ReduceL2": lambda x, dim, keepdim: torch.sqrt(torch.sum(x * x, dim=dim, keepdim=keepdim)),
    "ReduceSumSquare": lambda x, dim, keepdim: torch.sum(x * x, dim=dim, keepdim=keepdim),
}


def _reduce(ctx: NodeContext) -> Kernel:
    reducer = _REDUCERS[ctx.node.op_type]
    fixed, keep = ctx.attr("axes"), bool(ctx.attr("keepdims", 1))
    noop = bool(ctx.attr("noop_with_empty_axes", 0))

    def run(x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        dims = fixed if fixed is not None else ([] if axes is None else to_ints(axes))
        if not dims and noop:
            return x
        dims = dims or list(range(x.dim()))
        return reducer(x, dim=tuple(d % x.dim() for d in dims), keepdim=keep)
    return run


def _arg_extreme(ctx: NodeContext) -> Kernel:
    fn = torch.argmax if ctx.node.op_type == "ArgMax" else torch.argmin
    axis, keep = ctx.attr("axis", 0), bool(ctx.attr("keepdims", 1))
    last = bool(ctx.attr("select_last_index", 0))

    def run(x: torch.Tensor) -> torch.Tensor:
        if not last:
            return fn(x, dim=axis, keepdim=keep)
        a = axis % x.dim()  # ties resolve to the last index: search the flipped tensor
        return x.shape[a] - 1 - fn(x.flip(a), dim=a, keepdim=keep)
    return run


def _topk(ctx: NodeContext) -> Kernel:
    axis, fixed_k = ctx.attr("axis", -1), ctx.attr("k")
    largest, ordered = bool(ctx.attr("largest", 1)), bool(ctx.attr("sorted", 1))

    def run(x: torch.Tensor, k: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        count = fixed_k if k is None else to_ints(k)[0]
        values, indices = torch.topk(x, count, dim=axis, largest=largest, sorted=ordered)
        return values, indices
    return run


def _global_pool(reducer):
    def build(ctx: NodeContext) -> Kernel:
        return lambda x: reducer(x, dim=tuple(range(2, x.dim())), keepdim=True)
    return build


OPS = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "BatchNormalization": _batch_norm,
    "InstanceNormalization": _instance_norm, "LayerNormalization": _layer_norm,
    "MatMul": lambda ctx: torch.matmul, "Gemm": _gemm, "Einsum": _einsum,
    "Softmax": _softmax(log=False), "LogSoftmax": _softmax(log=True),
    **{name: _reduce for name in _REDUCERS},
    "ArgMax": _arg_extreme, "ArgMin": _arg_extreme, "TopK": _topk,
    "GlobalAveragePool": _global_pool(torch.mean), "GlobalMaxPool": _global_pool(torch.amax),
}
