"""Element-wise ONNX ops: arithmetic, activations, comparisons, logic, Clip, Cast, Where."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from bench.models.onnx_ops.context import Kernel, NodeContext, torch_dtype


def _fixed(fn: Kernel):
    """A builder for an op without attributes."""
    return lambda ctx: fn


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # ONNX integer Div truncates toward zero (C semantics), as ONNX Runtime does.
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def _pow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.pow(a, b).to(a.dtype)  # ONNX Pow keeps the base's type


def _mod(ctx: NodeContext) -> Kernel:
    return torch.fmod if ctx.attr("fmod", 0) else torch.remainder


def _variadic(fn) -> Kernel:
    return lambda *xs: functools.reduce(fn, xs)


def _mean(*xs: torch.Tensor) -> torch.Tensor:
    return functools.reduce(torch.add, xs) / len(xs)


def _leaky_relu(ctx: NodeContext) -> Kernel:
    alpha = float(ctx.attr("alpha", 0.01))
    return lambda x: F.leaky_relu(x, alpha)


def _elu(ctx: NodeContext) -> Kernel:
    alpha = float(ctx.attr("alpha", 1.0))
    return lambda x: F.elu(x, alpha)


def _celu(ctx: NodeContext) -> Kernel:
    alpha = float(ctx.attr("alpha", 1.0))
    return lambda x: F.celu(x, alpha)


def _selu(ctx: NodeContext) -> Kernel:
    alpha = float(ctx.attr("alpha", 1.67326319217681884765625))
    gamma = float(ctx.attr("gamma", 1.05070102214813232421875))
    return lambda x: gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


def _hard_sigmoid(ctx: NodeContext) -> Kernel:
    alpha = float(ctx.attr("alpha", 0.2))
    beta = float(ctx.attr("beta", 0.5))
    return lambda x: torch.clamp(alpha * x + beta, 0.0, 1.0)


def _swish(ctx: NodeContext) -> Kernel:
    alpha = float(ctx.attr("alpha", 1.0))
    return F.silu if alpha == 1.0 else (lambda x: x * torch.sigmoid(alpha * x))


def _thresholded_relu(ctx: NodeContext) -> Kernel:
    alpha = float(ctx.attr("alpha", 1.0))
    return lambda x: torch.where(x > alpha, x, torch.zeros_like(x))


def _gelu(ctx: NodeContext) -> Kernel:
    approximate = ctx.one_of("approximate", ctx.attr("approximate", "none"), ["none", "tanh"])
    return lambda x: F.gelu(x, approximate=approximate)


def _prelu(x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    return torch.where(x < 0, x * slope, x)


def _softplus(x: torch.Tensor) -> torch.Tensor:
    # log(1 + exp(x)) without overflow; F.softplus's linear cut-off differs from ONNX by ~1e-9.
    return torch.clamp(x, min=0) + torch.log1p(torch.exp(-torch.abs(x)))


def _clip(ctx: NodeContext) -> Kernel:
    if ctx.opset < 11:  # bounds were attributes before opset 11
        low = ctx.attr("min", -math.inf)
        high = ctx.attr("max", math.inf)
        return lambda x: torch.clamp(x, low, high)
    return _clip_inputs


def _clip_inputs(x: torch.Tensor, low: torch.Tensor | None = None,
                 high: torch.Tensor | None = None) -> torch.Tensor:
    if low is None and high is None:
        return x
    return torch.clamp(x, low, high)


def _cast(ctx: NodeContext) -> Kernel:
    dtype = torch_dtype(ctx.attr("to"), ctx.label)
    return lambda x: x.to(dtype)


def _cast_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.to(like.dtype)


def _where(cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(cond.bool(), a, b)


def _sign(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x)


def _bool_op(fn) -> Kernel:
    return lambda a, b: fn(a.bool(), b.bool())


# Ops without attributes, by arity: one input, then two or three.
UNARY = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp,
    "Log": torch.log, "Neg": torch.neg, "Abs": torch.abs, "Floor": torch.floor,
    "Ceil": torch.ceil, "Round": torch.round, "Sqrt": torch.sqrt,
    "Reciprocal": torch.reciprocal, "Erf": torch.erf, "Sign": _sign, "Sin": torch.sin,
    "Cos": torch.cos, "HardSwish": F.hardswish, "Mish": F.mish, "Softplus": _softplus,
    "Softsign": F.softsign, "IsNaN": torch.isnan, "Not": torch.logical_not,
}

MULTI_INPUT = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div, "Pow": _pow,
    "PRelu": _prelu, "Equal": torch.eq, "Greater": torch.gt, "Less": torch.lt,
    "GreaterOrEqual": torch.ge, "LessOrEqual": torch.le,
    "And": _bool_op(torch.logical_and), "Or": _bool_op(torch.logical_or),
    "Xor": _bool_op(torch.logical_xor), "Where": _where, "CastLike": _cast_like,
}

VARIADIC = {"Min": torch.minimum, "Max": torch.maximum, "Sum": torch.add}

OPS = {
    **{name: _fixed(fn) for name, fn in UNARY.items()},
    **{name: _fixed(fn) for name, fn in MULTI_INPUT.items()},
    **{name: _fixed(_variadic(fn)) for name, fn in VARIADIC.items()},
    "Mean": _fixed(_mean),
    "Mod": _mod,
    "LeakyRelu": _leaky_relu,
    "Elu": _elu,
    "Celu": _celu,
    "Selu": _selu,
    "HardSigmoid": _hard_sigmoid,
    "Swish": _swish,
    "ThresholdedRelu": _thresholded_relu,
    "Gelu": _gelu,
    "Clip": _clip,
    "Cast": _cast,
}
