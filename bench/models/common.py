"""Building blocks of the YOLOv7 family.

Attribute names (conv, bn, rbr_dense, rbr_1x1, cv1..cv7, m, ia, im, implicit) are part of
the contract: they make the state_dict keys equal to the official checkpoints', so that
official weights load with ``strict=True``.
"""

from __future__ import annotations

import torch
from torch import nn

# The official models set these on every BatchNorm after building (initialize_weights);
# eps matters when official running statistics are loaded.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def make_activation(kind: str) -> nn.Module:
    if kind == "silu":
        return nn.SiLU(inplace=True)
    if kind == "leaky":
        return nn.LeakyReLU(0.1, inplace=True)
    raise ValueError(f"activation {kind!r}: expected 'silu' or 'leaky'")


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm -> activation, 'same' padding."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, act: str = "silu"):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn: nn.Module = batch_norm(c_out)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MP(nn.Module):
    """2x2 max-pool, stride 2 (the official 'MP' layer)."""

    def __init__(self, k: int = 2):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


class SP(nn.Module):
    """k x k max-pool, stride 1, 'same' padding (the tiny model's SPP branches)."""

    def __init__(self, k: int = 3):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


class Concat(nn.Module):
    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)


class SPPCSPC(nn.Module):
    """Spatial pyramid pooling in a cross-stage-partial block (yolov7 layer 51)."""

    def __init__(self, c_in: int, c_out: int, act: str = "silu", pools=(5, 9, 13)):
        super().__init__()
        hidden = c_out  # the official block uses 2 * c_out * 0.5
        self.cv1 = Conv(c_in, hidden, 1, act=act)
        self.cv2 = Conv(c_in, hidden, 1, act=act)
        self.cv3 = Conv(hidden, hidden, 3, act=act)
        self.cv4 = Conv(hidden, hidden, 1, act=act)
        self.m = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in pools)
        self.cv5 = Conv(4 * hidden, hidden, 1, act=act)
        self.cv6 = Conv(hidden, hidden, 3, act=act)
        self.cv7 = Conv(2 * hidden, c_out, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        pooled = torch.cat([x1] + [pool(x1) for pool in self.m], 1)
        y1 = self.cv6(self.cv5(pooled))
        return self.cv7(torch.cat((y1, self.cv2(x)), 1))


class RepConv(nn.Module):
    """RepVGG block: 3x3 conv+BN plus 1x1 conv+BN (plus identity BN when shapes allow).

    After ``reparameterize()`` it is one 3x3 conv with bias named ``rbr_reparam``.
    """

    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1, act: str = "silu"):
        super().__init__()
        if k != 3:
            raise ValueError(f"RepConv kernel {k}: expected 3")
        self.act = make_activation(act)
        self.rbr_identity = batch_norm(c_in) if c_in == c_out and s == 1 else None
        self.rbr_dense = nn.Sequential(nn.Conv2d(c_in, c_out, 3, s, 1, bias=False),
                                       batch_norm(c_out))
        self.rbr_1x1 = nn.Sequential(nn.Conv2d(c_in, c_out, 1, s, 0, bias=False), batch_norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "rbr_reparam"):
            return self.act(self.rbr_reparam(x))
        y = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            y = y + self.rbr_identity(x)
        return self.act(y)


class ImplicitA(nn.Module):
    """Learned per-channel offset added to the detect conv's input (YOLOR)."""

    def __init__(self, channels: int):
        super().__init__()
        self.implicit = nn.Parameter(torch.empty(1, channels, 1, 1).normal_(0.0, 0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit + x


class ImplicitM(nn.Module):
    """Learned per-channel scale applied to the detect conv's output (YOLOR)."""

    def __init__(self, channels: int):
        super().__init__()
        self.implicit = nn.Parameter(torch.empty(1, channels, 1, 1).normal_(1.0, 0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit * x
