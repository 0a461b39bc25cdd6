"""The output-layout registry: one decoder object per layout that real exports produce.

  raw      [B, N, 5+C]  cx, cy, w, h, objectness, class scores (YOLOv5 / YOLOv7 --grid)
  yolov8   [B, 4+C, N]  cx, cy, w, h, class scores, no objectness (YOLOv8 and later)
  end2end  num_dets [B,1], det_boxes [B,K,4] xyxy, det_scores [B,K], det_classes [B,K]
           (TensorRT EfficientNMS, YOLOv7 --end2end for TensorRT)
  ort_nms  [M, 7]  batch index, x0, y0, x1, y1, class, score (YOLOv7 --end2end --max-wh)

Layouts are tried in registration order; the first whose `matches` returns names wins.
Adding a layout: a subclass of OutputLayout (or DenseLayout, which brings the numpy and
ONNX Runtime decoding) in a module here, plus one register_layout line below.
"""

from __future__ import annotations

from bench.eval.layouts.base import DecodeOptions, Detections, OutputLayout
from bench.eval.layouts.dense import DenseLayout, RawLayout, Yolov8Layout
from bench.eval.layouts.nms_outputs import End2EndLayout, OrtNmsLayout

LAYOUTS: dict[str, OutputLayout] = {}


def register_layout(layout: OutputLayout, *, before: str | None = None) -> OutputLayout:
    """Add a layout to the registry (tried last, or just before the layout named `before`)."""
    if layout.name in LAYOUTS:
        raise ValueError(f"output layout {layout.name!r} is already registered")
    if before is None:
        LAYOUTS[layout.name] = layout
        return layout
    if before not in LAYOUTS:
        raise ValueError(f"output layout {before!r} unknown; expected one of {list(LAYOUTS)}")
    items = list(LAYOUTS.items())
    at = [name for name, _ in items].index(before)
    LAYOUTS.clear()
    LAYOUTS.update([*items[:at], (layout.name, layout), *items[at:]])
    return layout


def unregister_layout(name: str) -> None:
    """Remove a layout (tests that register a toy one)."""
    LAYOUTS.pop(name, None)


def get_layout(name: str) -> OutputLayout:
    if name not in LAYOUTS:
        raise ValueError(f"output layout {name!r} unknown; expected one of {list(LAYOUTS)}")
    return LAYOUTS[name]


register_layout(End2EndLayout())
register_layout(OrtNmsLayout())
register_layout(RawLayout())
register_layout(Yolov8Layout())

__all__ = ["LAYOUTS", "DecodeOptions", "DenseLayout", "Detections", "OutputLayout",
           "get_layout", "register_layout", "unregister_layout"]
