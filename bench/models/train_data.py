"""Training data for the detector: a COCO split read into memory, letterboxed to a square,
and batches with random flip / scale / translation (no mosaic)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.data.coco import CocoDataset
from bench.data.letterbox import PAD_VALUE, letterbox_rgb


def open_split(root: str | Path, split: str) -> CocoDataset:
    """``root/annotations/instances_<split>.json`` with its images in ``root/<split>/``;
    class index i is the i-th category id in sorted order."""
    return CocoDataset(Path(root), split)


def image_targets(ds: CocoDataset, image_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [n, 4] (x, y, w, h, original pixels) and class indices [n] of one image;
    crowd and empty boxes left out."""
    index_of = {c: i for i, c in enumerate(ds.class_to_category)}
    anns = [a for a in ds.coco.imgToAnns.get(image_id, [])
            if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0
            and a["category_id"] in index_of]
    boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
    return boxes, np.array([index_of[a["category_id"]] for a in anns], np.int64)


@dataclass(frozen=True)
class TrainSet:
    """Letterboxed training images in memory with boxes as (class, x1, y1, x2, y2) pixels."""

    images: np.ndarray            # [N, S, S, 3] uint8
    labels: tuple[np.ndarray, ...]  # per image [n, 5] float32
    size: int


def load_train_set(ds: CocoDataset, size: int) -> TrainSet:
    """Every image of ``ds`` letterboxed to ``size`` (as the evaluation does), in memory."""
    ids = ds.image_ids
    images = np.empty((len(ids), size, size, 3), np.uint8)
    labels = []
    for i, image_id in enumerate(ids):
        images[i], placement = letterbox_rgb(ds.load_rgb(image_id), size)
        boxes, classes = image_targets(ds, image_id)
        xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)
        xyxy = xyxy * np.tile(placement.ratio, 2) + np.tile(placement.pad, 2)
        labels.append(np.concatenate([classes[:, None], xyxy], 1).astype(np.float32))
    return TrainSet(images, tuple(labels), size)


@dataclass(frozen=True)
class Augment:
    flip: float = 0.5      # probability of a horizontal flip
    scale: float = 0.25    # zoom factor drawn from [1 - scale, 1 + scale]
    translate: float = 0.1  # shift drawn from +-translate * size, each axis


def make_batch(data: TrainSet, indices: np.ndarray, rng: np.random.Generator,
               aug: Augment) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [B,3,S,S] in [0,1] and targets [T,6] = (image, class, cx, cy, w, h) / S."""
    s = data.size
    flips = rng.random(len(indices)) < aug.flip
    zooms = rng.uniform(1 - aug.scale, 1 + aug.scale, len(indices))
    shifts = rng.uniform(-aug.translate, aug.translate, (len(indices), 2)) * s
    pixels = torch.from_numpy(data.images[indices]).permute(0, 3, 1, 2).float() / 255.0
    images = _warp(pixels, flips, zooms, shifts)
    targets = [_move_boxes(data.labels[j], f, z, t, s, b)
               for b, (j, f, z, t) in enumerate(zip(indices, flips, zooms, shifts))]
    return images, torch.from_numpy(np.concatenate(targets, 0))


def _warp(pixels: torch.Tensor, flips, zooms, shifts) -> torch.Tensor:
    # affine_grid maps output to input coordinates (normalised to [-1, 1]):
    # x_in = flip * (x_out - t) / zoom.
    size = pixels.shape[-1]
    sign = torch.from_numpy(np.where(flips, -1.0, 1.0)).float()
    inv = torch.from_numpy(1.0 / zooms).float()
    t = torch.from_numpy(shifts / (size / 2)).float()
    theta = torch.zeros(len(zooms), 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sign * inv, -sign * inv * t[:, 0]
    theta[:, 1, 1], theta[:, 1, 2] = inv, -inv * t[:, 1]
    grid = torch.nn.functional.affine_grid(theta, list(pixels.shape), align_corners=False)
    fill = PAD_VALUE / 255.0
    out = torch.nn.functional.grid_sample(pixels - fill, grid, align_corners=False)
    return out + fill


def _move_boxes(labels: np.ndarray, flip: bool, zoom: float, shift: np.ndarray, size: int,
                batch_index: int) -> np.ndarray:
    cls, xyxy = labels[:, :1], labels[:, 1:].copy()
    if flip:
        xyxy[:, [0, 2]] = size - xyxy[:, [2, 0]]
    centre = size / 2
    moved = (xyxy - centre) * zoom + centre + np.tile(shift, 2)
    clipped = moved.clip(0, size)
    area = (moved[:, 2:] - moved[:, :2]).prod(1)
    wh = clipped[:, 2:] - clipped[:, :2]
    # Drop boxes pushed (mostly) out of the frame or squeezed to a sliver.
    keep = (wh.min(1) > 2) & (wh.prod(1) > 0.4 * area)
    cxcywh = np.concatenate([(clipped[:, :2] + clipped[:, 2:]) / 2, wh], 1)[keep] / size
    index = np.full((int(keep.sum()), 1), batch_index, np.float32)
    return np.concatenate([index, cls[keep], cxcywh], 1).astype(np.float32)


def epoch_order(n: int, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A shuffled epoch split into full batches (the remainder is dropped)."""
    perm = rng.permutation(n)
    return [perm[i:i + batch] for i in range(0, n - batch + 1, batch)]


def batches_per_epoch(n: int, batch: int) -> int:
    return max(1, math.floor(n / batch))
