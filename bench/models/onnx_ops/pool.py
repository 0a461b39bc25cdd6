"""MaxPool and AveragePool with ONNX's padding, ceil_mode and count_include_pad rules."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.models.onnx_ops.context import Kernel, NodeContext
from bench.models.onnx_ops.window import Window, torch_pads

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@dataclass(frozen=True)
class PoolPlan:
    """Where to pad so that a plain (unpadded, floor-mode) torch pool gives ONNX's output."""

    begins: list[int]
    ends: list[int]  # the node's own end pads
    rights: list[int]  # end pads that yield exactly ONNX's output length (may crop)

    @property
    def torch_native(self) -> bool:
        """True when torch's own symmetric padding gives the same windows."""
        return self.begins == self.ends == self.rights


def _output_length(size: int, begin: int, end: int, kernel: int, stride: int,
                   ceil: bool) -> int:
    span = size + begin + end - kernel
    length = (math.ceil(span / stride) if ceil else span // stride) + 1
    # A window that would start inside the end padding is dropped (as ONNX Runtime does).
    if ceil and (length - 1) * stride >= size + begin:
        length -= 1
    return length


def pool_plan(window: Window, spatial: Sequence[int], kernel: Sequence[int],
              ceil: bool) -> PoolPlan:
    rank = len(spatial)
    reach = [(k - 1) * d + 1 for k, d in zip(kernel, window.dilation(rank))]
    begins, ends = window.explicit_pads(spatial, kernel)
    rights = []
    for size, b, e, k, s in zip(spatial, begins, ends, reach, window.stride(rank)):
        length = _output_length(size, b, e, k, s, ceil)
        rights.append((length - 1) * s + k - size - b)
    return PoolPlan(begins, ends, rights)


def _fits_torch(plan: PoolPlan, kernel: Sequence[int]) -> bool:
    return plan.torch_native and all(p <= k // 2 for p, k in zip(plan.begins, kernel))


def _max_pool(ctx: NodeContext) -> Kernel:
    ctx.require_outputs(1)
    window, kernel = Window.of(ctx), tuple(ctx.attr("kernel_shape"))
    ceil = bool(ctx.attr("ceil_mode", 0))

    def run(x: torch.Tensor) -> torch.Tensor:
        rank = x.dim() - 2
        plan = pool_plan(window, x.shape[2:], kernel, ceil)
        stride, dilation = window.stride(rank), window.dilation(rank)
        if _fits_torch(plan, kernel):
            return _MAX_POOL[rank](x, kernel, stride, plan.begins, dilation)
        x = F.pad(x, torch_pads(plan.begins, plan.rights), value=-math.inf)
        return _MAX_POOL[rank](x, kernel, stride, 0, dilation)
    return run


def _average_pool(ctx: NodeContext) -> Kernel:
    window, kernel = Window.of(ctx), tuple(ctx.attr("kernel_shape"))
    ceil, include_pad = bool(ctx.attr("ceil_mode", 0)), bool(ctx.attr("count_include_pad", 0))
    if any(d != 1 for d in window.dilations or ()):
        raise ctx.error(f"dilations={list(window.dilations)} are not supported; expected 1s")

    def run(x: torch.Tensor) -> torch.Tensor:
        rank = x.dim() - 2
        plan = pool_plan(window, x.shape[2:], kernel, ceil)
        stride = window.stride(rank)
        if _fits_torch(plan, kernel):
            return _AVG_POOL[rank](x, kernel, stride, plan.begins, False, include_pad)
        total = _AVG_POOL[rank](F.pad(x, torch_pads(plan.begins, plan.rights)), kernel, stride)
        count = _AVG_POOL[rank](_divisor_mask(x, plan, include_pad), kernel, stride)
        return total / count
    return run


def _divisor_mask(x: torch.Tensor, plan: PoolPlan, include_pad: bool) -> torch.Tensor:
    """Ones where an element counts toward a window's divisor, laid out like the padded input."""
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    if not include_pad:
        return F.pad(ones, torch_pads(plan.begins, plan.rights))
    # The node's pads count; the extra reach that ceil_mode adds beyond them does not.
    ones = F.pad(ones, torch_pads(plan.begins, plan.ends), value=1.0)
    zeros = [0] * len(plan.begins)
    return F.pad(ones, torch_pads(zeros, [r - e for r, e in zip(plan.rights, plan.ends)]))


OPS = {"MaxPool": _max_pool, "AveragePool": _average_pool}
