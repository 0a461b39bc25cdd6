"""QuantizeLinear / DequantizeLinear as fake quantization with a straight-through estimator.

A QuantizeLinear whose output only feeds DequantizeLinear nodes keeps its integer codes in
a float tensor, so gradients pass through round() unchanged (straight-through) and are cut
outside the clamp range. Any other consumer (or a graph output) gets the real integer dtype.
"""

from __future__ import annotations

import torch

from bench.models.onnx_ops.context import Kernel, NodeContext, torch_dtype

_INTEGER_CODES = (torch.int8, torch.uint8, torch.int16, torch.uint16, torch.int32)


def _along(param: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """A scale or zero point shaped to broadcast on `axis` (per-axis) or everywhere."""
    if param.numel() == 1:
        return param.reshape(())
    shape = [1] * x.dim()
    shape[axis % x.dim()] = param.numel()
    return param.reshape(shape)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even forward; identity gradient backward."""
    return x + (torch.round(x) - x).detach()


def _code_dtype(ctx: NodeContext) -> torch.dtype:
    zero_point = ctx.const(2)
    if zero_point is not None:
        return zero_point.dtype
    output_dtype = ctx.attr("output_dtype", 0)
    return torch_dtype(output_dtype, ctx.label) if output_dtype else torch.uint8


def _check_plain(ctx: NodeContext) -> None:
    if ctx.attr("block_size", 0):
        raise ctx.error(f"block_size={ctx.attr('block_size')} is not supported; expected "
                        "per-tensor or per-axis quantization")


def _feeds_only_dequantize(ctx: NodeContext) -> bool:
    users = ctx.consumers.get(ctx.node.output[0], ())
    return bool(users) and all(user == "DequantizeLinear" for user in users)


def _quantize(ctx: NodeContext) -> Kernel:
    _check_plain(ctx)
    axis, dtype = ctx.attr("axis", 1), _code_dtype(ctx)
    if dtype not in _INTEGER_CODES:
        raise ctx.error(f"zero point type {dtype} is not supported; expected one of "
                        f"{[str(d) for d in _INTEGER_CODES]}")
    low, high = torch.iinfo(dtype).min, torch.iinfo(dtype).max
    fake = _feeds_only_dequantize(ctx)

    def run(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None = None):
        codes = round_ste(x / _along(scale, x, axis))
        if zero_point is not None:
            codes = codes + _along(zero_point, x, axis).to(codes.dtype)
        codes = torch.clamp(codes, low, high)
        return codes if fake else codes.to(dtype)
    return run


def _dequantize(ctx: NodeContext) -> Kernel:
    _check_plain(ctx)
    axis = ctx.attr("axis", 1)

    def run(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None = None):
        values = x.to(scale.dtype)
        if zero_point is not None:
            values = values - _along(zero_point, x, axis).to(scale.dtype)
        return values * _along(scale, x, axis)
    return run


OPS = {"QuantizeLinear": _quantize, "DequantizeLinear": _dequantize}
