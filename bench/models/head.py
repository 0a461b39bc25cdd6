"""The IDetect head: three 1x1 output convs with YOLOR implicit knowledge, and the
decoding of the official ``--grid`` export layout."""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.models.common import ImplicitA, ImplicitM


class IDetect(nn.Module):
    """Per level: ImplicitA -> 1x1 conv -> ImplicitM.

    Training mode returns the raw maps, each [B, na, ny, nx, 5+C]; eval mode returns the
    decoded boxes [B, N, 5+C]: centre x, y, w, h in input pixels, then sigmoid objectness
    and class scores.
    """

    def __init__(self, num_classes: int, anchors: list[list[float]], strides: list[float],
                 channels: list[int]):
        super().__init__()
        self.nc, self.no = num_classes, num_classes + 5
        self.nl, self.na = len(anchors), len(anchors[0]) // 2
        self.stride = tuple(float(s) for s in strides)
        pixels = torch.tensor(anchors, dtype=torch.float32).view(self.nl, self.na, 2)
        # Same buffers as the official head: anchors in grid units, anchor_grid in pixels.
        self.register_buffer("anchors", pixels / torch.tensor(self.stride).view(-1, 1, 1))
        self.register_buffer("anchor_grid", pixels.clone().view(self.nl, 1, self.na, 1, 1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in channels)
        self.ia = nn.ModuleList(ImplicitA(c) for c in channels)
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in channels)
        self._init_biases()

    def _init_biases(self) -> None:
        # Prior of ~8 objects per 640x640 image and a uniform class prior (YOLO practice),
        # so that the first iterations are not dominated by the objectness loss.
        with torch.no_grad():
            for conv, s in zip(self.m, self.stride):
                b = conv.bias.view(self.na, self.no)
                b[:, 4] += math.log(8 / (640 / s) ** 2)
                b[:, 5:] += math.log(0.6 / (self.nc - 0.99))

    def raw(self, i: int, x: torch.Tensor) -> torch.Tensor:
        y = self.im[i](self.m[i](self.ia[i](x)))
        # int() makes the spatial sizes constants in an exported graph (fixed imgsz), so
        # the grid folds into an initializer; the batch stays dynamic through -1.
        ny, nx = int(y.shape[2]), int(y.shape[3])
        return y.view(-1, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()

    def decode(self, i: int, p: torch.Tensor) -> torch.Tensor:
        ny, nx = int(p.shape[2]), int(p.shape[3])
        ys, xs = torch.meshgrid(torch.arange(ny, dtype=p.dtype), torch.arange(nx, dtype=p.dtype),
                                indexing="ij")
        grid = torch.stack((xs, ys), 2).view(1, 1, ny, nx, 2).to(p.device)
        s = p.sigmoid()
        xy = (s[..., 0:2] * 2.0 - 0.5 + grid) * self.stride[i]
        wh = (s[..., 2:4] * 2.0) ** 2 * self.anchor_grid[i]
        return torch.cat((xy, wh, s[..., 4:]), -1).reshape(-1, self.na * ny * nx, self.no)

    def forward(self, xs: list[torch.Tensor]):
        raw = [self.raw(i, x) for i, x in enumerate(xs)]
        if self.training:
            return raw
        return torch.cat([self.decode(i, p) for i, p in enumerate(raw)], 1)
