"""Shape and indexing ONNX ops: Shape, Reshape, Slice, Gather, Concat, Split, Expand, ..."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from bench.models.onnx_ops.context import Kernel, NodeContext, to_ints


def _int64(values: list[int] | int, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64, device=like.device)


def _shape(ctx: NodeContext) -> Kernel:
    start, end = ctx.attr("start", 0), ctx.attr("end")
    return lambda x: _int64(list(x.shape[start:end]), x)


def _size(ctx: NodeContext) -> Kernel:
    return lambda x: _int64(x.numel(), x)


def _reshape(ctx: NodeContext) -> Kernel:
    allow_zero = bool(ctx.attr("allowzero", 0))
    fixed = ctx.attr("shape")  # opset < 5 carried the shape as an attribute

    def run(x: torch.Tensor, shape: torch.Tensor | None = None) -> torch.Tensor:
        dims = to_ints(fixed if shape is None else shape)
        if not allow_zero:  # 0 copies the input's dimension at that position
            dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        return x.reshape(dims)
    return run


def _transpose(ctx: NodeContext) -> Kernel:
    perm = ctx.attr("perm")
    if perm is None:
        return lambda x: x.permute(*reversed(range(x.dim())))
    return lambda x: x.permute(*perm)


def _flatten(ctx: NodeContext) -> Kernel:
    axis = ctx.attr("axis", 1)

    def run(x: torch.Tensor) -> torch.Tensor:
        split = axis + x.dim() if axis < 0 else axis
        return x.reshape(math.prod(x.shape[:split]), math.prod(x.shape[split:]))
    return run


def _axes(ctx: NodeContext, given: torch.Tensor | None) -> list[int] | None:
    """Axes from the attribute (old opsets) or the optional input (new opsets)."""
    if ctx.attr("axes") is not None:
        return list(ctx.attr("axes"))
    if given is None or given.numel() == 0:
        return None
    return to_ints(given)


def _squeeze(ctx: NodeContext) -> Kernel:
    def run(x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        dims = _axes(ctx, axes)
        if dims is None:
            return x.squeeze()
        return x.squeeze(tuple(sorted({d % x.dim() for d in dims})))
    return run


def _unsqueeze(ctx: NodeContext) -> Kernel:
    def run(x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        dims = _axes(ctx, axes) or []
        rank = x.dim() + len(dims)
        for d in sorted(d % rank for d in dims):
            x = x.unsqueeze(d)
        return x
    return run


def _concat(ctx: NodeContext) -> Kernel:
    axis = ctx.attr("axis")
    return lambda *xs: torch.cat(xs, dim=axis)


def _split(ctx: NodeContext) -> Kernel:
    axis, fixed = ctx.attr("axis", 0), ctx.attr("split")
    parts = len(ctx.node.output)

    def run(x: torch.Tensor, split: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        sizes = fixed if split is None or split.numel() == 0 else to_ints(split)
        if sizes is None:  # equal parts; the last one smaller when uneven (opset 18)
            sizes = math.ceil(x.shape[axis] / parts)
        return tuple(torch.split(x, sizes, dim=axis))
    return run


def _slice_bounds(start: int, end: int, step: int, dim: int) -> tuple[int, int]:
    """ONNX Slice clamping: negative indices count from the end, then clamp to the axis."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return min(max(start, 0), dim), min(max(end, 0), dim)
    return min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)


def slice_tensor(x: torch.Tensor, starts: list[int], ends: list[int], axes: list[int],
                 steps: list[int]) -> torch.Tensor:
    index: list[slice] = [slice(None)] * x.dim()
    backward: list[tuple[int, int, int, int]] = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = axis % x.dim()
        start, end = _slice_bounds(start, end, step, x.shape[axis])
        if step > 0:
            index[axis] = slice(start, end, step)
        else:  # torch views cannot step backwards; gather those axes instead
            backward.append((axis, start, end, step))
    x = x[tuple(index)]
    for axis, start, end, step in backward:
        picks = torch.arange(start, end, step, device=x.device)
        x = x.index_select(axis, picks)
    return x


def _slice(ctx: NodeContext) -> Kernel:
    if ctx.attr("starts") is not None:  # opset < 10: everything is an attribute
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes = ctx.attr("axes", list(range(len(starts))))
        return lambda x: slice_tensor(x, starts, ends, axes, [1] * len(starts))

    def run(x, starts, ends, axes=None, steps=None) -> torch.Tensor:
        starts, ends = to_ints(starts), to_ints(ends)
        axes = list(range(len(starts))) if axes is None else to_ints(axes)
        steps = [1] * len(starts) if steps is None else to_ints(steps)
        return slice_tensor(x, starts, ends, axes, steps)
    return run


def _positive(indices: torch.Tensor, dim: int) -> torch.Tensor:
    indices = indices.long()
    return torch.where(indices < 0, indices + dim, indices)


def _gather(ctx: NodeContext) -> Kernel:
    axis = ctx.attr("axis", 0)

    def run(data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        a = axis % data.dim()
        picks = _positive(indices, data.shape[a])
        flat = data.index_select(a, picks.reshape(-1))
        return flat.reshape(data.shape[:a] + picks.shape + data.shape[a + 1:])
    return run


def _gather_elements(ctx: NodeContext) -> Kernel:
    axis = ctx.attr("axis", 0)

    def run(data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        a = axis % data.dim()
        return torch.gather(data, a, _positive(indices, data.shape[a]))
    return run


def _scatter_nd(ctx: NodeContext) -> Kernel:
    reduction = ctx.one_of("reduction", ctx.attr("reduction", "none"), ["none", "add"])

    def run(data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        where = tuple(_positive(indices[..., i], data.shape[i])
                      for i in range(indices.shape[-1]))
        return data.index_put(where, updates, accumulate=reduction == "add")
    return run


_SCATTER_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


def _scatter_elements(ctx: NodeContext) -> Kernel:
    axis = ctx.attr("axis", 0)
    reduction = ctx.one_of("reduction", ctx.attr("reduction", "none"),
                           ["none", *_SCATTER_REDUCE])

    def run(data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        a = axis % data.dim()
        where = _positive(indices, data.shape[a])
        if reduction == "none":
            return torch.scatter(data, a, where, updates)
        return torch.scatter_reduce(data, a, where, updates, _SCATTER_REDUCE[reduction])
    return run


def _broadcast(a: Sequence[int], b: Sequence[int]) -> list[int]:
    # torch.broadcast_shapes is slow in eager Python; shapes here are short int lists.
    rank = max(len(a), len(b))
    a, b = [1] * (rank - len(a)) + list(a), [1] * (rank - len(b)) + list(b)
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b)):
        raise ValueError(f"shapes {a} and {b} do not broadcast")
    return [y if x == 1 else x for x, y in zip(a, b)]


def _expand(ctx: NodeContext) -> Kernel:
    def run(x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        # ONNX Expand broadcasts both ways: a 1 in `shape` keeps the input's dimension.
        return x.expand(_broadcast(x.shape, to_ints(shape)))
    return run


def _tile(ctx: NodeContext) -> Kernel:
    return lambda x, repeats: x.repeat(to_ints(repeats))


def _range(ctx: NodeContext) -> Kernel:
    def run(start: torch.Tensor, limit: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype,
                            device=start.device)
    return run


def _constant_of_shape(ctx: NodeContext) -> Kernel:
    value = ctx.attr("value", torch.zeros(1, dtype=torch.float32))

    def run(shape: torch.Tensor) -> torch.Tensor:
        return torch.full(to_ints(shape), value.reshape(-1)[0].item(), dtype=value.dtype,
                          device=shape.device)
    return run


def _identity(ctx: NodeContext) -> Kernel:
    return lambda x: x


def _dropout(ctx: NodeContext) -> Kernel:
    # Inference: the data passes through and the mask (when asked for) is all true.
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        return lambda x, *_: (x, torch.ones_like(x, dtype=torch.bool))
    return lambda x, *_: x


def _nonzero(ctx: NodeContext) -> Kernel:
    return lambda x: torch.nonzero(x).t().contiguous()


OPS = {
    "Shape": _shape, "Size": _size, "Reshape": _reshape, "Transpose": _transpose,
    "Flatten": _flatten, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Concat": _concat,
    "Split": _split, "Slice": _slice, "Gather": _gather, "GatherElements": _gather_elements,
    "ScatterND": _scatter_nd, "ScatterElements": _scatter_elements, "Expand": _expand,
    "Tile": _tile, "Range": _range, "ConstantOfShape": _constant_of_shape,
    "Identity": _identity, "Dropout": _dropout, "NonZero": _nonzero,
}
