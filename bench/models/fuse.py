"""Fold a trained model into its deployment form: BatchNorm into the preceding conv,
RepConv's branches into one 3x3 conv, and the head's implicit A/M into its 1x1 convs."""

from __future__ import annotations

import copy

import torch
from torch import nn

from bench.models.common import Conv, RepConv
from bench.models.head import IDetect


def fuse(model: nn.Module) -> nn.Module:
    """Return a fused copy of ``model`` in eval mode; the original is left untouched.

    The fused copy computes the same outputs as the original in eval mode (up to float
    rounding) with fewer layers; its state_dict keys are ``model.<i>.conv.weight/bias``,
    ``model.<i>.rbr_reparam.*`` and ``model.<i>.m.<j>.*``.
    """
    fused = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in fused.modules():
            if isinstance(module, Conv) and isinstance(module.bn, nn.BatchNorm2d):
                module.conv = _conv_with_bn(module.conv, module.bn)
                module.bn = nn.Identity()
            elif isinstance(module, RepConv) and not hasattr(module, "rbr_reparam"):
                _reparameterize(module)
            elif isinstance(module, IDetect):
                _fold_implicit(module)
    return fused


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _conv_with_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale, shift = _bn_scale_shift(bn)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, groups=conv.groups, bias=True)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    fused.bias.copy_(bias * scale + shift)
    return fused


def _branch_kernel(branch: nn.Module | None,
                   like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A RepConv branch as an equivalent 3x3 kernel and bias."""
    if branch is None:
        return torch.zeros_like(like), torch.zeros(like.shape[0])
    if isinstance(branch, nn.BatchNorm2d):
        # The identity branch is a 3x3 kernel with a single 1 at the centre of channel i->i.
        identity = torch.zeros_like(like)
        identity[range(like.shape[0]), range(like.shape[0]), 1, 1] = 1.0
        scale, shift = _bn_scale_shift(branch)
        return identity * scale.view(-1, 1, 1, 1), shift
    conv, bn = branch[0], branch[1]
    scale, shift = _bn_scale_shift(bn)
    pad = (3 - conv.kernel_size[0]) // 2
    kernel = nn.functional.pad(conv.weight, [pad] * 4)
    return kernel * scale.view(-1, 1, 1, 1), shift


def _reparameterize(block: RepConv) -> None:
    dense = block.rbr_dense[0]
    parts = [_branch_kernel(b, dense.weight)
             for b in (block.rbr_dense, block.rbr_1x1, block.rbr_identity)]
    conv = nn.Conv2d(dense.in_channels, dense.out_channels, 3, dense.stride, 1, bias=True)
    conv.weight.copy_(sum(k for k, _ in parts))
    conv.bias.copy_(sum(b for _, b in parts))
    block.rbr_reparam = conv
    for name in ("rbr_dense", "rbr_1x1", "rbr_identity"):
        delattr(block, name)


def _fold_implicit(head: IDetect) -> None:
    # m(x + a) * s  ==  (s * W) x + s * (W a + b)
    if not hasattr(head.ia[0], "implicit"):
        return  # folded already: fusing a fused model changes nothing
    for i, conv in enumerate(head.m):
        w = conv.weight.view(conv.out_channels, conv.in_channels)
        shift = w @ head.ia[i].implicit.view(-1)
        scale = head.im[i].implicit.view(-1)
        conv.bias.copy_((conv.bias + shift) * scale)
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
    head.ia = nn.ModuleList(nn.Identity() for _ in head.m)
    head.im = nn.ModuleList(nn.Identity() for _ in head.m)
