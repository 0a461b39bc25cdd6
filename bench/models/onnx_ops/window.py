"""Sliding-window geometry shared by Conv, ConvTranspose and the pools; the Pad op."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.models.onnx_ops.context import Kernel, NodeContext, to_ints

AUTO_PADS = ["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"]


@dataclass(frozen=True)
class Window:
    """A node's strides, dilations and padding; lengths follow the spatial rank."""

    strides: tuple[int, ...] | None
    dilations: tuple[int, ...] | None
    pads: tuple[int, ...] | None  # ONNX order: all begins, then all ends
    auto_pad: str

    @classmethod
    def of(cls, ctx: NodeContext) -> Window:
        auto_pad = ctx.one_of("auto_pad", ctx.attr("auto_pad", "NOTSET"), AUTO_PADS)
        return cls(_opt(ctx.attr("strides")), _opt(ctx.attr("dilations")),
                   _opt(ctx.attr("pads")), auto_pad)

    def stride(self, rank: int) -> tuple[int, ...]:
        return self.strides or (1,) * rank

    def dilation(self, rank: int) -> tuple[int, ...]:
        return self.dilations or (1,) * rank

    def explicit_pads(self, spatial: Sequence[int], kernel: Sequence[int]
                      ) -> tuple[list[int], list[int]]:
        """Begin and end pads per spatial axis, resolving auto_pad for this input size."""
        rank = len(spatial)
        if self.auto_pad == "VALID":
            return [0] * rank, [0] * rank
        if self.auto_pad == "NOTSET":
            pads = self.pads or (0,) * (2 * rank)
            return list(pads[:rank]), list(pads[rank:])
        totals = [_same_total(n, k, s, d) for n, k, s, d in
                  zip(spatial, kernel, self.stride(rank), self.dilation(rank))]
        return split_total(totals, upper=self.auto_pad == "SAME_UPPER")


def _opt(values: Sequence[int] | None) -> tuple[int, ...] | None:
    return tuple(values) if values else None


def _same_total(size: int, kernel: int, stride: int, dilation: int) -> int:
    out = math.ceil(size / stride)
    return max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def split_total(totals: Sequence[int], upper: bool) -> tuple[list[int], list[int]]:
    """SAME_UPPER puts the odd pad at the end, SAME_LOWER at the beginning."""
    small = [t // 2 for t in totals]
    large = [t - t // 2 for t in totals]
    return (small, large) if upper else (large, small)


def torch_pads(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """ONNX per-axis pads as F.pad's list, which starts from the last axis."""
    flat: list[int] = []
    for begin, end in zip(reversed(begins), reversed(ends)):
        flat += [begin, end]
    return flat


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate",
              "wrap": "circular"}


def _pad(ctx: NodeContext) -> Kernel:
    mode = _PAD_MODES[ctx.one_of("mode", ctx.attr("mode", "constant"), list(_PAD_MODES))]
    fixed, fill = ctx.attr("pads"), ctx.attr("value", 0.0)  # attributes before opset 11

    def run(x: torch.Tensor, pads: torch.Tensor | None = None,
            value: torch.Tensor | None = None, axes: torch.Tensor | None = None
            ) -> torch.Tensor:
        flat = to_ints(fixed if pads is None else pads)
        axes_list = list(range(x.dim())) if axes is None else to_ints(axes)
        begins, ends = [0] * x.dim(), [0] * x.dim()
        for i, axis in enumerate(axes_list):
            begins[axis % x.dim()], ends[axis % x.dim()] = flat[i], flat[i + len(axes_list)]
        constant = fill if value is None else value.item()
        return _apply_pad(x, begins, ends, mode, constant)
    return run


def _apply_pad(x: torch.Tensor, begins: list[int], ends: list[int], mode: str,
               value: float) -> torch.Tensor:
    if mode == "constant":
        return F.pad(x, torch_pads(begins, ends), value=value)
    # Non-constant modes pad only trailing axes in torch, with leading axes folded into one.
    padded = [i for i in range(x.dim()) if begins[i] or ends[i]]
    if not padded:
        return x
    first = padded[0]
    folded = x.reshape(1, -1, *x.shape[first:])
    out = F.pad(folded, torch_pads(begins[first:], ends[first:]), mode=mode)
    return out.reshape(*x.shape[:first], *out.shape[2:])


OPS = {"Pad": _pad}
