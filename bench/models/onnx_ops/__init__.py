"""The op table of the ONNX-in-PyTorch interpreter: op type -> kernel builder.

A builder reads the node's attributes once (raising ModelError for what it cannot do) and
returns a kernel, a plain callable over torch tensors that runs at every forward.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.models.onnx_ops import elementwise, nn, pool, quant, resize, shape, window
from bench.models.onnx_ops.context import Kernel, NodeContext

Builder = Callable[[NodeContext], Kernel]

OPS: dict[str, Builder] = {
    **elementwise.OPS, **shape.OPS, **window.OPS, **nn.OPS, **pool.OPS, **resize.OPS,
    **quant.OPS,
}

_DEFAULT_DOMAINS = ("", "ai.onnx")


def build_kernel(ctx: NodeContext) -> Kernel:
    """The kernel for one node, or ModelError naming its op type and node name."""
    node = ctx.node
    if node.domain not in _DEFAULT_DOMAINS or node.op_type not in OPS:
        op = f"{node.domain}.{node.op_type}" if node.domain not in _DEFAULT_DOMAINS \
            else node.op_type
        raise ctx.error(f"op {op} is not supported by the PyTorch interpreter; expected one "
                        f"of the {len(OPS)} ops in bench.models.onnx_ops.OPS")
    return OPS[node.op_type](ctx)


__all__ = ["OPS", "Builder", "Kernel", "NodeContext", "build_kernel"]
