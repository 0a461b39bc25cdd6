"""PyTorch reference engine: the model run by PyTorch itself, the "before TensorRT" row.

The model comes from the ONNX file through bench.models.onnx_torch.OnnxModule (an ONNX ->
torch.nn.Module interpreter), so every backend runs the very same artifact. CPU or CUDA;
fp32, or fp16 on CUDA (module.half() and a half input). On CUDA, infer() synchronises
before it returns and CUDA events time the forward pass for extra_info.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.engines.base import Batches, Engine
from bench.engines.gpu_time import gpu_time_summary
from bench.errors import ConfigError, EngineUnavailable, ModelError

if TYPE_CHECKING:
    from bench.config import BenchConfig
    from bench.variants import VariantSpec

PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class TorchOptions:
    """precision: "fp32" | "fp16" (CUDA only); threads: torch.set_num_threads on the CPU
    (process-wide), None for torch's choice."""

    precision: str = "fp32"
    threads: int | None = None


class TorchEngine(Engine):
    """Runs an ONNX model as a torch.nn.Module on "cpu", "cuda" or "cuda:N"."""

    name = "torch"
    Options = TorchOptions

    def __init__(self, model_path: Any, *, device: str = "cpu",
                 options: TorchOptions | None = None):
        super().__init__(model_path, device=device, options=options)
        self.precision = self.options.precision
        self._gpu_ms: list[float] = []

    @classmethod
    def from_config(cls, cfg: BenchConfig, spec: VariantSpec, artifact_path: Path, *,
                    calibration: Batches | None = None, calibration_id: str = "",
                    image_size: int | None = None, max_batch: int | None = None) -> TorchEngine:
        precision = "fp16" if spec.artifact == "fp16" else "fp32"
        return cls(artifact_path, device=cfg.device,
                   options=TorchOptions(precision=precision, threads=cfg.threads))

    @classmethod
    def skip_reason(cls, cfg: BenchConfig, spec: VariantSpec) -> str | None:
        if spec.artifact not in ("fp32", "fp16"):
            return f"the torch reference engine runs fp32 and fp16 only, not {spec.name}"
        if spec.artifact == "fp16" and cfg.device == "cpu":
            return "fp16 on the torch CPU engine is not a deployment path; use --device cuda"
        return None

    @classmethod
    def unavailable_reason(cls, device: str = "cpu") -> str | None:
        try:
            import torch
        except ImportError:
            return "torch is not installed (pip install torch; on a Jetson, NVIDIA's JetPack wheel)"
        if device == "cpu":
            return None
        if not re.fullmatch(r"cuda(:\d+)?", str(device)):
            return f"torch device {device!r} unknown; expected 'cpu' or 'cuda[:N]'"
        if not torch.cuda.is_available():
            return "CUDA is not available to torch"
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            return f"torch sees {torch.cuda.device_count()} CUDA device(s); no {device}"
        return None

    def activate(self) -> TorchEngine:
        if not self.active and self.unavailable_reason(self.device) is None:
            self._check_precision()  # before the model is read: a config error says so first
        super().activate()
        return self

    def _activate(self) -> None:
        self._check_precision()
        import torch

        if self.options.threads and self.device == "cpu":
            torch.set_num_threads(int(self.options.threads))
        self._torch = torch
        self._dtype = torch.float16 if self.precision == "fp16" else torch.float32
        module = self._load_module().to(self.device).eval()
        # OnnxModule casts its input to the weights' dtype, so .half() is all fp16 needs.
        self._module = module.half() if self.precision == "fp16" else module
        self._cuda = self.device.startswith("cuda")
        if self._cuda:
            self._events = (torch.cuda.Event(enable_timing=True),
                            torch.cuda.Event(enable_timing=True))
            # Events record on a stream of the engine's device, not the current device's.
            self._stream = torch.cuda.current_stream(torch.device(self.device))

    def _check_precision(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"torch precision {self.precision!r}: expected one of "
                              f"{', '.join(PRECISIONS)}")
        if self.precision == "fp16" and self.device == "cpu":
            raise EngineUnavailable("torch fp16 runs on CUDA only; got device 'cpu'")

    def _load_module(self) -> Any:
        from bench.onnx_file import load_model

        proto = load_model(self.model_path)
        self._input_shape = _graph_input_shape(proto, self.model_path.name)
        from bench.models.onnx_torch import OnnxModule

        module = OnnxModule(proto)
        self._output_names = list(module.output_names)
        return module

    def _deactivate(self) -> None:
        self._module = None
        if getattr(self, "_cuda", False):
            self._torch.cuda.empty_cache()

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            images = torch.from_numpy(np.ascontiguousarray(batch))
            images = images.to(self.device, self._dtype, non_blocking=False)
            outputs = self._forward(images)
        return {name: _to_numpy(value) for name, value in zip(self._output_names, outputs,
                                                               strict=True)}

    def _forward(self, images: Any) -> tuple:
        if not self._cuda:
            return tuple(self._module(images))
        start, end = self._events
        with self._torch.cuda.device(self._stream.device):
            start.record(self._stream)
            outputs = tuple(self._module(images))
            end.record(self._stream)
        # Synchronise before returning, or the caller times a launch, not an inference.
        self._torch.cuda.synchronize(self.device)
        self._gpu_ms.append(start.elapsed_time(end))
        return outputs

    @property
    def input_shape(self) -> tuple:
        return self._input_shape

    def reset_timings(self) -> None:
        """Forget the GPU times so far (e.g. between the accuracy and the latency pass)."""
        self._gpu_ms = []

    def runtime_version(self) -> str | None:
        import torch

        return str(torch.__version__)

    def device_name(self) -> str | None:
        if not str(self.device).startswith("cuda"):
            return None
        import torch

        return str(torch.cuda.get_device_name(torch.device(self.device)))

    def extra_info(self) -> dict[str, Any]:
        if not self.active:
            return {}
        info = {"torch_version": self._torch.__version__, "precision": self.precision,
                "device": self.device}
        if self._cuda:
            info["gpu"] = self.device_name()
        return {**info, **gpu_time_summary(self._gpu_ms)}


def _to_numpy(value: Any) -> np.ndarray:
    # Half outputs come back as float32 so decoders see one dtype; integer outputs
    # (e.g. num_dets of an end-to-end export) keep theirs.
    if value.is_floating_point() and value.element_size() < 4:
        value = value.float()
    return value.detach().cpu().numpy()


def _graph_input_shape(proto: Any, model: str) -> tuple:
    initializers = {tensor.name for tensor in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(f"model {model}: expected one input, got {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims)
