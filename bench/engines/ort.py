"""ONNX Runtime engine: CPU by default, CUDA / TensorRT execution providers when present."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.engines.base import Engine
from bench.errors import EngineUnavailable, ModelError

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class OrtEngine(Engine):
    """Runs an ONNX file with onnxruntime.InferenceSession.

    device: "cpu", "cuda" or "tensorrt" (the execution provider, not our TensorRT engine).
    options: threads (intra-op threads; None lets ORT decide).
    """

    name = "onnxruntime"

    @classmethod
    def unavailable_reason(cls, device: str = "cpu") -> str | None:
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
        if device not in _PROVIDERS:
            return f"onnxruntime device {device!r} unknown; expected one of {', '.join(_PROVIDERS)}"
        wanted = _PROVIDERS[device][0]
        if wanted not in ort.get_available_providers():
            return f"onnxruntime has no {wanted} here (available: {ort.get_available_providers()})"
        return None

    def _activate(self) -> None:
        reason = self.unavailable_reason(self.device)
        if reason:
            raise EngineUnavailable(reason)
        import onnxruntime as ort

        if not self.model_path.is_file():
            raise ModelError(f"model {self.model_path}: file not found")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.options.get("threads"):
            options.intra_op_num_threads = int(self.options["threads"])
            options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(self.model_path), options, providers=_PROVIDERS[self.device])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"model {self.model_path}: onnxruntime cannot load it ({first})") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            raise ModelError(f"model {self.model_path}: expected one input, got {names}")
        self._input = inputs[0]
        self._output_names = [o.name for o in self._session.get_outputs()]
        check_image_input(self.model_path.name, self._input.name, self._input.shape)

    def _deactivate(self) -> None:
        self._session = None

    @property
    def input_shape(self) -> tuple:
        return tuple(self._input.shape)

    @property
    def input_name(self) -> str:
        return self._input.name

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self._session.run(self._output_names, {self._input.name: batch})
        return dict(zip(self._output_names, outputs))

    def extra_info(self) -> dict[str, Any]:
        return {"providers": self._session.get_providers()} if self.active else {}


def check_image_input(model: str, name: str, shape: list | tuple) -> None:
    """An image detector takes one 4-D NCHW input with 3 channels."""
    if len(shape) != 4:
        raise ModelError(f"model {model}: input {name!r} has shape {list(shape)}; "
                         "expected 4-D [batch, 3, height, width]")
    channels = shape[1]
    if isinstance(channels, int) and channels != 3:
        raise ModelError(f"model {model}: input {name!r} has {channels} channels; expected 3")
