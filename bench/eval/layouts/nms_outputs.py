"""Layouts of exports that run NMS inside the model: no further NMS here, only conf and
max_det; their shapes do not tell the class count (bench.inputs reads it from the graph
or the model's metadata, or takes --num-classes)."""

from __future__ import annotations

import numpy as np

from bench.eval.layouts.base import DecodeOptions, Detections, OutputLayout, Outputs, top


def _find_by_name(outputs: Outputs, key: str) -> str | None:
    found = [n for n in outputs if key in n.lower()]
    return found[0] if len(found) == 1 else None


class End2EndLayout(OutputLayout):
    """num_dets [B,1], det_boxes [B,K,4] xyxy, det_scores [B,K], det_classes [B,K]
    (TensorRT EfficientNMS, YOLOv7 --end2end without --max-wh)."""

    name = "end2end"
    description = "end-to-end (num_dets, det_boxes, det_scores, det_classes)"

    def matches(self, outputs: Outputs, num_classes: int | None) -> tuple[str, ...] | None:
        if len(outputs) == 4:
            names = tuple(_find_by_name(outputs, k) for k in ("num", "box", "score", "class"))
            if None not in names and len(set(names)) == 4:
                return names  # type: ignore[return-value]
        return self._by_shape(outputs)

    @staticmethod
    def _by_shape(outputs: Outputs) -> tuple[str, ...] | None:
        shapes = {n: np.shape(a) for n, a in outputs.items()}
        nums = [n for n, s in shapes.items() if len(s) == 2 and s[1] == 1]
        boxes = [n for n, s in shapes.items() if len(s) == 3 and s[2] == 4]
        if len(outputs) != 4 or len(nums) != 1 or len(boxes) != 1:
            return None
        k = shapes[boxes[0]][1]
        pair = [n for n, s in shapes.items() if len(s) == 2 and s[1] == k and n not in nums]
        if len(pair) != 2:
            return None
        # Integer output = classes; otherwise the plugin's order: scores before classes.
        if np.issubdtype(outputs[pair[0]].dtype, np.integer) and not np.issubdtype(
            outputs[pair[1]].dtype, np.integer
        ):
            pair.reverse()
        return (nums[0], boxes[0], pair[0], pair[1])

    def decode(self, outputs: Outputs, names: tuple[str, ...], batch_size: int,
               options: DecodeOptions) -> list[Detections]:
        num, boxes, scores, classes = (outputs[n] for n in names)
        dets = []
        for b in range(batch_size):
            n = int(np.clip(num[b].reshape(-1)[0], 0, boxes.shape[1]))
            det = Detections.make(boxes[b, :n], scores[b, :n], np.rint(classes[b, :n]))
            dets.append(top(det, options))
        return dets


class OrtNmsLayout(OutputLayout):
    """[M, 7] rows of batch index, x0, y0, x1, y1, class, score (YOLOv7 --end2end --max-wh,
    ONNX Runtime's NonMaxSuppression)."""

    name = "ort_nms"
    description = "[N,7] (batch, x0, y0, x1, y1, class, score)"

    def matches(self, outputs: Outputs, num_classes: int | None) -> tuple[str, ...] | None:
        sevens = [n for n, a in outputs.items() if np.ndim(a) == 2 and np.shape(a)[1] == 7]
        return (sevens[0],) if len(sevens) == 1 and len(outputs) == 1 else None

    def batch(self, outputs: Outputs, names: tuple[str, ...]) -> int:
        # Trailing images without detections cannot be told: callers pass batch_size.
        rows = outputs[names[0]]
        return int(rows[:, 0].max()) + 1 if len(rows) else 1

    def checks_batch(self) -> bool:
        return False

    def decode(self, outputs: Outputs, names: tuple[str, ...], batch_size: int,
               options: DecodeOptions) -> list[Detections]:
        rows = outputs[names[0]]
        index = np.rint(rows[:, 0])
        dets = []
        for b in range(batch_size):
            mine = rows[index == b]
            det = Detections.make(mine[:, 1:5], mine[:, 6], np.rint(mine[:, 5]))
            dets.append(top(det, options))
        return dets
