"""Resize (opset 10+) and Upsample: nearest and linear, computed one axis at a time.

Each resized axis maps output coordinates to input coordinates with the node's
coordinate_transformation_mode, then either picks the nearest input (nearest_mode) or
blends the two neighbours (linear; n-linear is separable, so axis by axis is exact).
Coordinates are float32, as in ONNX Runtime, so floor/round ties land the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bench.models.onnx_ops.context import Kernel, NodeContext, to_ints

_COORDINATE_MODES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                     "half_pixel_symmetric"]
_NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


@dataclass(frozen=True)
class ResizeRule:
    mode: str  # "nearest" or "linear"
    coordinates: str
    nearest: str  # one of _NEAREST_MODES, or "legacy" (opset < 11 and Upsample)
    axes: tuple[int, ...] | None  # opset 18: which axes scales/sizes refer to


def _source_coordinates(rule: ResizeRule, out_len: int, in_len: int,
                        scale: float, device) -> torch.Tensor:
    x = torch.arange(out_len, dtype=torch.float32, device=device)
    mode = rule.coordinates
    if mode == "asymmetric":
        return x / scale
    if mode == "align_corners":
        return x * ((in_len - 1) / (out_len - 1)) if out_len > 1 else torch.zeros_like(x)
    if mode == "pytorch_half_pixel" and out_len == 1:
        return torch.zeros_like(x)
    if mode == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / (scale * in_len))
        return offset + (x + 0.5) / scale - 0.5
    return (x + 0.5) / scale - 0.5


def _nearest_index(rule: ResizeRule, coords: torch.Tensor, scale: float) -> torch.Tensor:
    if rule.nearest == "legacy":  # ONNX Runtime's pre-opset-11 rule
        picked = torch.ceil(coords) if scale < 1 else torch.trunc(coords)
    elif rule.nearest == "round_prefer_floor":
        picked = torch.ceil(coords - 0.5)
    elif rule.nearest == "round_prefer_ceil":
        picked = torch.floor(coords + 0.5)
    else:
        picked = torch.floor(coords) if rule.nearest == "floor" else torch.ceil(coords)
    return picked.long()


def _resize_axis(x: torch.Tensor, axis: int, out_len: int, scale: float,
                 rule: ResizeRule) -> torch.Tensor:
    in_len = x.shape[axis]
    coords = _source_coordinates(rule, out_len, in_len, scale, x.device)
    if rule.mode == "nearest":
        index = _nearest_index(rule, coords, scale).clamp(0, in_len - 1)
        return x.index_select(axis, index)
    coords = coords.clamp(0, in_len - 1)
    low = coords.floor().long()
    high = (low + 1).clamp(max=in_len - 1)
    shape = [1] * x.dim()
    shape[axis] = out_len
    weight = (coords - low).reshape(shape).to(x.dtype)
    return x.index_select(axis, low) * (1 - weight) + x.index_select(axis, high) * weight


def resize(x: torch.Tensor, rule: ResizeRule, scales: list[float] | None,
           sizes: list[int] | None) -> torch.Tensor:
    axes = list(rule.axes) if rule.axes else list(range(x.dim()))
    for i, axis in enumerate(axes):
        in_len = x.shape[axis]
        if sizes is not None:
            out_len, scale = sizes[i], sizes[i] / in_len
        else:
            scale = scales[i]
            out_len = math.floor(in_len * scale)
        if out_len != in_len or scale != 1.0:
            x = _resize_axis(x, axis, out_len, float(torch.tensor(scale, dtype=torch.float32)),
                             rule)
    return x


def _rule(ctx: NodeContext, legacy: bool) -> ResizeRule:
    mode = ctx.attr("mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode  # Upsample-7's old spelling
    ctx.one_of("mode", mode, ["nearest", "linear"])
    if legacy:
        return ResizeRule(mode, "asymmetric", "legacy", None)
    if ctx.attr("antialias", 0):
        raise ctx.error("antialias=1 is not supported; expected 0")
    ctx.one_of("keep_aspect_ratio_policy", ctx.attr("keep_aspect_ratio_policy", "stretch"),
               ["stretch"])
    coordinates = ctx.one_of("coordinate_transformation_mode",
                             ctx.attr("coordinate_transformation_mode", "half_pixel"),
                             _COORDINATE_MODES)
    nearest = ctx.one_of("nearest_mode", ctx.attr("nearest_mode", "round_prefer_floor"),
                         _NEAREST_MODES)
    axes = ctx.attr("axes")
    return ResizeRule(mode, coordinates, nearest, tuple(axes) if axes else None)


def _present(t: torch.Tensor | None) -> bool:
    return t is not None and t.numel() > 0


def _floats(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.reshape(-1).tolist()]


def _resize(ctx: NodeContext) -> Kernel:
    if ctx.opset < 11:  # Resize-10: (X, scales), asymmetric coordinates
        rule = _rule(ctx, legacy=True)
        return lambda x, scales: resize(x, rule, _floats(scales), None)
    rule = _rule(ctx, legacy=False)

    def run(x, roi=None, scales=None, sizes=None) -> torch.Tensor:
        if _present(sizes):
            return resize(x, rule, None, to_ints(sizes))
        if not _present(scales):
            raise ctx.error("neither scales nor sizes is given; expected one of them")
        return resize(x, rule, _floats(scales), None)
    return run


def _upsample(ctx: NodeContext) -> Kernel:
    rule = _rule(ctx, legacy=True)
    fixed = ctx.attr("scales")  # Upsample-7 attribute; Upsample-9 takes an input

    def run(x: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
        return resize(x, rule, list(fixed) if scales is None else _floats(scales), None)
    return run


OPS = {"Resize": _resize, "Upsample": _upsample}
