"""YOLOv5/YOLOv7-style detection loss: anchor-ratio target assignment with neighbour
cells, CIoU box loss, BCE objectness (target = IoU) and BCE classification."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from bench.models.head import IDetect

# A target may also be predicted from the two neighbouring cells nearest its centre
# (offsets in grid cells: self, left, up, right, down).
_NEIGHBOURS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32) * 0.5


@dataclass(frozen=True)
class LossGains:
    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    anchor_t: float = 4.0  # a target matches an anchor if both wh ratios are within this
    balance: tuple[float, float, float] = (4.0, 1.0, 0.4)  # objectness weight per level

    def scaled(self, num_classes: int, imgsz: int, levels: int = 3) -> LossGains:
        """The official per-run scaling of the gains by classes, image size and levels."""
        k = 3.0 / levels
        return LossGains(self.box * k, self.obj * (imgsz / 640) ** 2 * k,
                         self.cls * num_classes / 80 * k, self.anchor_t, self.balance)


@dataclass(frozen=True)
class LevelTargets:
    """Targets assigned to one output level."""

    image: torch.Tensor   # [M] image index in the batch
    anchor: torch.Tensor  # [M] anchor index
    gy: torch.Tensor      # [M] cell row
    gx: torch.Tensor      # [M] cell column
    box: torch.Tensor     # [M, 4] centre offset from the cell corner, w, h (grid units)
    cls: torch.Tensor     # [M] class index
    anchor_wh: torch.Tensor  # [M, 2] the matched anchor, grid units


def bbox_ciou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of paired boxes given as (cx, cy, w, h), shape [M, 4] each."""
    a1, a2 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b1, b2 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(0).prod(1)
    union = a[:, 2:].prod(1) + b[:, 2:].prod(1) - inter + eps
    iou = inter / union
    hull = torch.max(a2, b2) - torch.min(a1, b1)
    diag2 = hull.pow(2).sum(1) + eps
    centre2 = (a[:, :2] - b[:, :2]).pow(2).sum(1)
    v = (4 / math.pi ** 2) * (torch.atan(b[:, 2] / (b[:, 3] + eps))
                              - torch.atan(a[:, 2] / (a[:, 3] + eps))).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre2 / diag2 + v * alpha)


def assign_level(targets: torch.Tensor, anchors: torch.Tensor, ny: int, nx: int,
                 anchor_t: float) -> LevelTargets:
    """Assign ``targets`` [T, 6] = (image, class, cx, cy, w, h), normalised to [0, 1],
    to the anchors [na, 2] (grid units) of one level of ny x nx cells."""
    na = anchors.shape[0]
    scaled = targets.clone()
    scaled[:, [2, 4]] *= nx
    scaled[:, [3, 5]] *= ny
    ratio = scaled[None, :, 4:6] / anchors[:, None]                     # [na, T, 2]
    ok = torch.max(ratio, 1 / ratio).amax(2) < anchor_t                 # [na, T]
    anchor_idx = torch.arange(na)[:, None].expand_as(ok)[ok]
    t = scaled[None].expand(na, -1, -1)[ok]
    return _with_neighbours(t, anchor_idx, anchors, ny, nx)


def _with_neighbours(t: torch.Tensor, anchor_idx: torch.Tensor, anchors: torch.Tensor,
                     ny: int, nx: int) -> LevelTargets:
    gxy = t[:, 2:4]
    inverse = torch.tensor([nx, ny], dtype=t.dtype) - gxy
    near_low = (gxy % 1 < 0.5) & (gxy > 1)
    near_high = (inverse % 1 < 0.5) & (inverse > 1)
    use = torch.stack((torch.ones_like(near_low[:, 0]), near_low[:, 0], near_low[:, 1],
                       near_high[:, 0], near_high[:, 1]))                # [5, M]
    t, anchor_idx = t[None].expand(5, -1, -1)[use], anchor_idx[None].expand(5, -1)[use]
    offsets = _NEIGHBOURS[:, None].expand(-1, use.shape[1], -1)[use]
    gxy = t[:, 2:4]
    cell = (gxy - offsets).long()
    gx, gy = cell[:, 0].clamp(0, nx - 1), cell[:, 1].clamp(0, ny - 1)
    box = torch.cat((gxy - torch.stack((gx, gy), 1), t[:, 4:6]), 1)
    return LevelTargets(t[:, 0].long(), anchor_idx, gy, gx, box, t[:, 1].long(),
                        anchors[anchor_idx])


class DetectionLoss:
    """Callable ``loss(raw_outputs, targets) -> (total, parts[box, obj, cls])``."""

    def __init__(self, head: IDetect, imgsz: int, gains: LossGains | None = None,
                 scale_gains: bool = True):
        self.head = head
        self.gains = gains or LossGains()
        if scale_gains:
            self.gains = self.gains.scaled(head.nc, imgsz, head.nl)
        self.bce = nn.BCEWithLogitsLoss()

    def __call__(self, outputs: list[torch.Tensor], targets: torch.Tensor):
        zero = outputs[0].new_zeros(())
        lbox, lobj, lcls = zero, zero, zero
        for i, p in enumerate(outputs):
            lt = assign_level(targets, self.head.anchors[i], p.shape[2], p.shape[3],
                              self.gains.anchor_t)
            tobj = torch.zeros_like(p[..., 4])
            if lt.image.numel():
                box_l, cls_l = self._matched(p, lt, tobj)
                lbox, lcls = lbox + box_l, lcls + cls_l
            lobj = lobj + self.bce(p[..., 4], tobj) * self.gains.balance[i]
        parts = torch.stack((lbox * self.gains.box, lobj * self.gains.obj, lcls * self.gains.cls))
        return parts.sum(), parts.detach()

    def _matched(self, p: torch.Tensor, lt: LevelTargets, tobj: torch.Tensor):
        ps = p[lt.image, lt.anchor, lt.gy, lt.gx]
        pxy = ps[:, :2].sigmoid() * 2 - 0.5
        pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * lt.anchor_wh
        ciou = bbox_ciou(torch.cat((pxy, pwh), 1), lt.box)
        tobj[lt.image, lt.anchor, lt.gy, lt.gx] = ciou.detach().clamp(0).to(tobj.dtype)
        cls_l = p.new_zeros(())
        if self.head.nc > 1:
            onehot = torch.zeros_like(ps[:, 5:])
            onehot[torch.arange(len(lt.cls)), lt.cls] = 1.0
            cls_l = self.bce(ps[:, 5:], onehot)
        return (1.0 - ciou).mean(), cls_l
