"""Host/device buffers, one stream and CUDA events, behind a small interface.

Two implementations: pycuda (what the TensorRT samples and most Jetson setups use) and
cuda-python's runtime bindings (`cuda.bindings.runtime`, or `cuda.cudart` in cuda-python
< 12.6) for where pycuda does not build. Both give pinned host arrays, async copies on one
stream, and events for timing the GPU work. Imported lazily by the TensorRT engine only.
"""

from __future__ import annotations

import abc
import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.errors import EngineUnavailable

BACKENDS = ("pycuda", "cuda-python")
MISSING_BINDINGS = ("neither pycuda nor cuda-python is installed "
                    "(pip install pycuda, or pip install cuda-python)")


@dataclass(frozen=True)
class DeviceBuffer:
    """A device allocation: its address and size; handle is the binding's own object."""

    ptr: int
    nbytes: int
    handle: Any = None


class CudaBackend(abc.ABC):
    """One device, one stream. All copies are asynchronous on that stream."""

    name = "cuda"

    @abc.abstractmethod
    def device_info(self) -> tuple[str, str]:
        """(GPU name, compute capability 'major.minor')."""

    @property
    @abc.abstractmethod
    def stream_handle(self) -> int: ...

    @abc.abstractmethod
    def alloc(self, nbytes: int) -> DeviceBuffer: ...

    @abc.abstractmethod
    def pinned(self, shape: tuple, dtype: np.dtype) -> np.ndarray: ...

    @abc.abstractmethod
    def to_device(self, dst: DeviceBuffer, src: np.ndarray) -> None: ...

    @abc.abstractmethod
    def to_host(self, dst: np.ndarray, src: DeviceBuffer) -> None: ...

    @abc.abstractmethod
    def new_event(self) -> Any: ...

    @abc.abstractmethod
    def record(self, event: Any) -> None: ...

    @abc.abstractmethod
    def elapsed_ms(self, start: Any, end: Any) -> float:
        """Milliseconds between two recorded events (call after synchronize)."""

    @abc.abstractmethod
    def synchronize(self) -> None: ...

    @abc.abstractmethod
    def free(self, buffer: DeviceBuffer) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class PycudaBackend(CudaBackend):
    name = "pycuda"

    def __init__(self, device_index: int = 0):
        import pycuda.driver as cuda

        self._cuda = cuda
        cuda.init()
        self._device = cuda.Device(device_index)
        # The primary context is the one the CUDA runtime (and so TensorRT) uses.
        self._context = self._device.retain_primary_context()
        self._context.push()
        self._stream = cuda.Stream()

    def device_info(self) -> tuple[str, str]:
        major, minor = self._device.compute_capability()
        return self._device.name(), f"{major}.{minor}"

    @property
    def stream_handle(self) -> int:
        return int(self._stream.handle)

    def alloc(self, nbytes: int) -> DeviceBuffer:
        memory = self._cuda.mem_alloc(max(int(nbytes), 1))
        return DeviceBuffer(int(memory), int(nbytes), memory)

    def pinned(self, shape: tuple, dtype: np.dtype) -> np.ndarray:
        return self._cuda.pagelocked_empty(tuple(shape), np.dtype(dtype))

    def to_device(self, dst: DeviceBuffer, src: np.ndarray) -> None:
        self._cuda.memcpy_htod_async(dst.handle, src, self._stream)

    def to_host(self, dst: np.ndarray, src: DeviceBuffer) -> None:
        self._cuda.memcpy_dtoh_async(dst, src.handle, self._stream)

    def new_event(self) -> Any:
        return self._cuda.Event()

    def record(self, event: Any) -> None:
        event.record(self._stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(end.time_since(start))

    def synchronize(self) -> None:
        self._stream.synchronize()

    def free(self, buffer: DeviceBuffer) -> None:
        buffer.handle.free()

    def close(self) -> None:
        self._stream.synchronize()
        self._cuda.Context.pop()
        self._context.detach()


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime  # cuda-python < 12.6
    return runtime


class CudaPythonBackend(CudaBackend):
    name = "cuda-python"

    def __init__(self, device_index: int = 0):
        self._rt = _cudart()
        self._index = device_index
        self._call(self._rt.cudaSetDevice, device_index)
        self._stream = self._call(self._rt.cudaStreamCreate)
        self._host: list[int] = []
        self._events: list[Any] = []

    def _call(self, function: Any, *args: Any) -> Any:
        """cuda-python returns (error, *values); raise on error, return the value(s)."""
        error, *values = function(*args)
        if error != self._rt.cudaError_t.cudaSuccess:
            name = self._rt.cudaGetErrorName(error)[1]
            name = name.decode() if isinstance(name, bytes) else name
            raise RuntimeError(f"{function.__name__} failed: {name}")
        return values[0] if len(values) == 1 else (tuple(values) or None)

    def device_info(self) -> tuple[str, str]:
        props = self._call(self._rt.cudaGetDeviceProperties, self._index)
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return name.rstrip("\x00"), f"{props.major}.{props.minor}"

    @property
    def stream_handle(self) -> int:
        return int(self._stream)

    def alloc(self, nbytes: int) -> DeviceBuffer:
        ptr = self._call(self._rt.cudaMalloc, max(int(nbytes), 1))
        return DeviceBuffer(int(ptr), int(nbytes), ptr)

    def pinned(self, shape: tuple, dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, 1)
        ptr = int(self._call(self._rt.cudaMallocHost, nbytes))
        self._host.append(ptr)
        raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
        flat = np.frombuffer(raw, dtype=np.uint8)
        return flat[: nbytes - nbytes % dtype.itemsize].view(dtype).reshape(shape)

    def to_device(self, dst: DeviceBuffer, src: np.ndarray) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self._rt.cudaMemcpyAsync, dst.ptr, src.ctypes.data, src.nbytes, kind,
                   self._stream)

    def to_host(self, dst: np.ndarray, src: DeviceBuffer) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self._rt.cudaMemcpyAsync, dst.ctypes.data, src.ptr, dst.nbytes, kind,
                   self._stream)

    def new_event(self) -> Any:
        event = self._call(self._rt.cudaEventCreate)
        self._events.append(event)
        return event

    def record(self, event: Any) -> None:
        self._call(self._rt.cudaEventRecord, event, self._stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._call(self._rt.cudaEventElapsedTime, start, end))

    def synchronize(self) -> None:
        self._call(self._rt.cudaStreamSynchronize, self._stream)

    def free(self, buffer: DeviceBuffer) -> None:
        self._call(self._rt.cudaFree, buffer.handle)

    def close(self) -> None:
        self.synchronize()
        for event in self._events:
            self._rt.cudaEventDestroy(event)
        for ptr in self._host:
            self._rt.cudaFreeHost(ptr)
        self._rt.cudaStreamDestroy(self._stream)
        self._events, self._host = [], []


def available_bindings() -> list[str]:
    """The CUDA bindings importable here, in order of preference."""
    found = []
    for name, probe in (("pycuda", _probe_pycuda), ("cuda-python", _cudart)):
        try:
            probe()
        except Exception:  # an ImportError, or a broken install (missing libcuda)
            continue
        found.append(name)
    return found


def _probe_pycuda() -> None:
    import pycuda.driver  # noqa: F401


def cuda_unavailable_reason(device_index: int = 0) -> str | None:
    """None when a binding is present and sees the device, else a one-line reason."""
    bindings = available_bindings()
    if not bindings:
        return MISSING_BINDINGS
    count = _device_count(bindings[0])
    if count == 0:
        return f"no CUDA device ({bindings[0]} sees none)"
    if device_index >= count:
        return f"no CUDA device {device_index} ({bindings[0]} sees {count})"
    return None


def _device_count(binding: str) -> int:
    try:
        if binding == "pycuda":
            import pycuda.driver as cuda

            cuda.init()
            return int(cuda.Device.count())
        error, count = _cudart().cudaGetDeviceCount()
        return int(count) if error == _cudart().cudaError_t.cudaSuccess else 0
    except Exception:  # no driver: pycuda raises LogicError/RuntimeError from cuInit
        return 0


def load_cuda_backend(device_index: int = 0, prefer: str | None = None) -> CudaBackend:
    """A backend for the device: `prefer` if given, else pycuda, else cuda-python."""
    if prefer is not None and prefer not in BACKENDS:
        raise EngineUnavailable(f"cuda backend {prefer!r}: expected one of {', '.join(BACKENDS)}")
    bindings = available_bindings()
    order = [prefer] if prefer else bindings
    for name in order:
        if name in bindings:
            cls = PycudaBackend if name == "pycuda" else CudaPythonBackend
            return cls(device_index)
    raise EngineUnavailable(MISSING_BINDINGS if not prefer else f"{prefer} is not installed")
