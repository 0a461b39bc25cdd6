"""YOLOv7's evaluation letterbox: fit into a square keeping the aspect ratio, pad with 114.

The longer side is scaled to exactly imgsz (up or down, as YOLOv7's loader does), the
shorter one rounded, and the padding split as YOLOv7 splits it (round(d/2 -+ 0.1)).
Unlike YOLOv7's scale_coords, boxes are mapped back with the ratios and integer padding
actually applied, so a round trip is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """How one image was placed in the network input."""

    ratio: tuple[float, float]  # (x, y): resized size / original size
    pad: tuple[int, int]  # (left, top) padding in network pixels
    orig_shape: tuple[int, int]  # (height, width) of the original image
    new_shape: tuple[int, int]  # (height, width) of the resized image, before padding


def plan(orig_shape: tuple[int, int], imgsz: int) -> Letterbox:
    """The resize and padding that fit an image of orig_shape (h, w) into imgsz x imgsz."""
    h, w = orig_shape
    r = imgsz / max(h, w)
    new_h, new_w = min(imgsz, max(1, round(h * r))), min(imgsz, max(1, round(w * r)))
    dw, dh = (imgsz - new_w) / 2, (imgsz - new_h) / 2
    left, top = round(dw - 0.1), round(dh - 0.1)
    return Letterbox((new_w / w, new_h / h), (left, top), (h, w), (new_h, new_w))


def letterbox_rgb(rgb: np.ndarray, imgsz: int) -> tuple[np.ndarray, Letterbox]:
    """HxWx3 uint8 RGB -> imgsz x imgsz x 3 uint8 letterboxed, and its placement."""
    box = plan(rgb.shape[:2], imgsz)
    new_h, new_w = box.new_shape
    img = Image.fromarray(rgb)
    if (new_h, new_w) != rgb.shape[:2]:
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    canvas = np.full((imgsz, imgsz, 3), PAD_VALUE, dtype=np.uint8)
    left, top = box.pad
    canvas[top : top + new_h, left : left + new_w] = np.asarray(img)
    return canvas, box


def to_chw_float(hwc: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32 in [0, 1], written into out when given."""
    if out is None:
        out = np.empty((hwc.shape[2], hwc.shape[0], hwc.shape[1]), dtype=np.float32)
    # Transposing the uint8 bytes first, then one contiguous multiply: 20 % faster than
    # multiplying through the strided view, the same floats.
    planar = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    return np.multiply(planar, np.float32(1 / 255), out=out, dtype=np.float32)


def letterbox(
    rgb: np.ndarray, imgsz: int, out: np.ndarray | None = None
) -> tuple[np.ndarray, Letterbox]:
    """HxWx3 uint8 RGB -> 3 x imgsz x imgsz float32 network input, and its placement.

    out: a 3 x imgsz x imgsz float32 array to write into (a slot of a batch), if given.
    """
    canvas, box = letterbox_rgb(rgb, imgsz)
    return to_chw_float(canvas, out), box


def unletterbox_boxes(
    boxes_xyxy: np.ndarray,
    ratio: float | tuple[float, float],
    pad: tuple[float, float],
    orig_shape: tuple[int, int],
) -> np.ndarray:
    """Network-input xyxy boxes -> original-image xyxy boxes, clipped to the image (h, w)."""
    rx, ry = (ratio, ratio) if np.isscalar(ratio) else ratio
    left, top = pad
    out = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - left) / rx
    out[:, [1, 3]] = (out[:, [1, 3]] - top) / ry
    h, w = orig_shape
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out
