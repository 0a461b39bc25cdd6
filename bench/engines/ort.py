"""ONNX Runtime engine: CPU by default, CUDA / TensorRT execution providers when present."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.engines.base import Batches, Engine
from bench.environment import usable_cores
from bench.errors import ModelError

if TYPE_CHECKING:
    from bench.config import BenchConfig
    from bench.variants import VariantSpec

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


@dataclass(frozen=True)
class OrtOptions:
    """threads: intra-op threads (None lets ONNX Runtime decide)."""

    threads: int | None = None


class OrtEngine(Engine):
    """Runs an ONNX file with onnxruntime.InferenceSession.

    device: "cpu", "cuda" or "tensorrt" (the execution provider, not our TensorRT engine).
    options: OrtOptions.

    On the CPU, infer_streams() opens separate sessions of the same file for the accuracy
    pass: S streams of T // S threads each (T: the threads option, else the usable
    cores), never spinning, so that the pass keeps every core on the network while
    decoding runs beside it. Their outputs equal infer()'s bit for bit on the default
    model's fp32, fp16 and int8 graphs with 1- and 2-thread sessions
    (tests/engines/test_ort_streams.py); a kernel that split one sum across threads
    could differ in the last bits.
    """

    MAX_STREAMS = 4
    # infer()'s session keeps its threads spinning during a call but stops them when the
    # call returns (session.force_spinning_stop): nothing spins on between the latency
    # pass's interleaved blocks, so no pause is needed to settle. Measured on the default
    # (2 cores): the same per-call latency as spinning sessions given a 50 ms pause
    # (4.1-4.3 against 3.8-4.1 ms for fp32, 3.0 against 2.7-2.9 ms for int8, block medians),
    # where two spinning sessions alternated without a pause run fp32 at 8.2 ms.
    settle_pause_s = 0.0

    name = "onnxruntime"
    Options = OrtOptions

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

    @classmethod
    def from_config(cls, cfg: BenchConfig, spec: VariantSpec, artifact_path: Path, *,
                    calibration: Batches | None = None, calibration_id: str = "",
                    image_size: int | None = None, max_batch: int | None = None) -> OrtEngine:
        return cls(artifact_path, device=cfg.device, options=OrtOptions(threads=cfg.threads))

    def runtime_version(self) -> str | None:
        import onnxruntime as ort

        return str(ort.__version__)

    def _activate(self) -> None:
        threads = self.options.threads or None
        self._session = self._open(threads)
        self._streams: dict[tuple[int, int], list] = {}
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            raise ModelError(f"model {self.model_path}: expected one input, got {names}")
        self._input = inputs[0]
        self._output_names = [o.name for o in self._session.get_outputs()]
        check_image_input(self.model_path.name, self._input.name, self._input.shape)

    def _open(self, threads: int | None, spinning: bool = True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        else:
            options.add_session_config_entry("session.force_spinning_stop", "1")
        try:
            return ort.InferenceSession(
                str(self.model_path), options, providers=_PROVIDERS[self.device])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"model {self.model_path}: onnxruntime cannot load it ({first})") from None

    def _deactivate(self) -> None:
        self._session = None
        self._streams = {}

    def infer_streams(self, streams: int | None = None) -> list[Callable]:
        """S callables for the accuracy pass; see the class docstring. One stream, or a
        device other than the CPU, is infer() itself."""
        cores = self.options.threads or usable_cores()
        count = min(cores, self.MAX_STREAMS) if streams is None else streams
        if count <= 1 or self.device != "cpu":
            return [self.infer]
        threads = max(1, cores // count)
        key = (count, threads)
        if key not in self._streams:
            # One-thread sessions run concurrent calls without sharing a pool: one serves all.
            opened = 1 if threads == 1 else count
            sessions = [self._open(threads, spinning=False) for _ in range(opened)]
            self._streams[key] = [sessions[k % opened] for k in range(count)]
        return [self._runner(session) for session in self._streams[key]]

    def _runner(self, session) -> Callable:
        names, input_name = self._output_names, self._input.name

        def infer(batch: np.ndarray) -> dict[str, np.ndarray]:
            return dict(zip(names, session.run(names, {input_name: batch})))

        # session.run returns new numpy arrays on every call (no I/O binding here), so
        # the accuracy pass need not copy them before the next call.
        infer.fresh_outputs = True  # type: ignore[attr-defined]
        return infer

    @property
    def input_shape(self) -> tuple:
        return tuple(self._input.shape)

    @property
    def input_name(self) -> str:
        return self._input.name

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
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
