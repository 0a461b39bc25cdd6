"""Greedy non-maximum suppression in numpy, class-aware or not.

Same result as torchvision.ops.nms / batched_nms: a box is dropped when its IoU with a
kept, higher-scoring box of its class exceeds the threshold. With a confidence threshold
of 0.001 an image can bring thousands of candidates over dozens of classes, where a
box-by-box loop costs more than the network; so the work is done block by block on
vectorised lists of same-class pairs:

1. take the next block of highest-scoring live candidates; list every same-class pair
   in it that overlaps beyond the threshold, in one vectorised step;
2. walk the block in score order: keep a box unless a kept one suppressed it, and mark
   what it overlaps (a cheap loop over precomputed pair lists);
3. the block's keeps then kill, in one vectorised step per chunk, every later live
   candidate of their class that they overlap; stop once max_keep boxes are kept.
"""

from __future__ import annotations

import numpy as np

DEFAULT_IOU = 0.65
_BLOCK = 512  # candidates settled per round
_CHUNK = 512  # later candidates per vectorised step of a round (bounds memory)


def iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise IoU of xyxy boxes a[i] and b[i] ([p, 4] each)."""
    iw = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    ih = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union -= inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every xyxy box in a [n, 4] against every one in b [m, 4]: [n, m]."""
    ia, ib = np.repeat(np.arange(len(a)), len(b)), np.tile(np.arange(len(b)), len(a))
    return iou_pairs(a[ia], b[ib]).reshape(len(a), len(b))


def same_class_pairs(classes_a: np.ndarray, classes_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (i, j) with classes_a[i] == classes_b[j], as two index arrays (i ascending)."""
    order_b = np.argsort(classes_b, kind="stable")
    sorted_b = classes_b[order_b]
    lo = np.searchsorted(sorted_b, classes_a, "left")
    counts = np.searchsorted(sorted_b, classes_a, "right") - lo
    ia = np.repeat(np.arange(len(classes_a)), counts)
    offsets = np.arange(len(ia)) - np.repeat(np.cumsum(counts) - counts, counts)
    return ia, order_b[np.repeat(lo, counts) + offsets]


def _block_keep(boxes, classes, iou: float, limit: int) -> np.ndarray:
    """Greedy keeps (positions) among score-sorted boxes, at most limit."""
    ia, ib = same_class_pairs(classes, classes)
    later = ia < ib
    ia, ib = ia[later], ib[later]
    hit = iou_pairs(boxes[ia], boxes[ib]) > iou
    ia, ib = ia[hit], ib[hit]  # ia ascends, so each box's victims are one slice
    bounds = np.searchsorted(ia, np.arange(len(boxes) + 1))
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep: list[int] = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == limit:
            break
        suppressed[ib[bounds[i] : bounds[i + 1]]] = True
    return np.asarray(keep, dtype=np.int64)


def _kill_overlapped(boxes, classes, alive, kept: np.ndarray, after: int, iou: float) -> None:
    """Mark dead every live box past `after` that a kept box of its class overlaps."""
    rest = after + np.flatnonzero(alive[after:])
    for c in range(0, len(rest), _CHUNK):
        chunk = rest[c : c + _CHUNK]
        ia, ib = same_class_pairs(classes[kept], classes[chunk])
        hit = iou_pairs(boxes[kept[ia]], boxes[chunk[ib]]) > iou
        alive[chunk[ib[hit]]] = False


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou: float = DEFAULT_IOU,
    max_keep: int | None = None,
    classes: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the kept boxes, highest score first (ties keep input order).

    With classes, boxes of different classes never suppress each other. Stops once
    max_keep boxes are kept: greedy order makes them the first max_keep of the full result.
    """
    order = np.argsort(-np.asarray(scores).reshape(-1), kind="stable")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[order]
    classes = np.zeros(len(order), np.int64) if classes is None else np.asarray(classes)[order]
    alive = np.ones(len(order), dtype=bool)
    limit = len(order) if max_keep is None else max_keep
    keep: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    kept = 0
    for start in range(0, len(order), _BLOCK):
        if kept >= limit:
            break
        cand = start + np.flatnonzero(alive[start : start + _BLOCK])
        local = cand[_block_keep(boxes[cand], classes[cand], iou, limit - kept)]
        keep.append(local)
        kept += len(local)
        if kept < limit and len(local):
            _kill_overlapped(boxes, classes, alive, local, start + _BLOCK, iou)
    return order[np.concatenate(keep)]


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    iou: float = DEFAULT_IOU,
    max_keep: int | None = None,
) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other."""
    return nms(boxes, scores, iou, max_keep, classes=np.asarray(classes).reshape(-1))
