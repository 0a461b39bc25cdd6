"""Host/device buffers, one stream and CUDA events, behind a small interface.

Two implementations: pycuda (what the TensorRT samples and most Jetson setups use) and
cuda-python's runtime bindings (`cuda.bindings.runtime`, or `cuda.cudart` in cuda-python
< 12.6) for where pycuda does not build. Both give pinned host arrays, async copies on one
stream, and events for timing the GPU work. Imported lazily by the TensorRT engine only.

One CUDA context per device for the whole process: the device's primary context (the
one the CUDA runtime, and so TensorRT, uses). pycuda retains and pushes it once
(_SharedContext); cuda-python's runtime API uses it implicitly. Each backend owns only
its stream, events and allocations, so engines open and close in any order.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import ctypes
import threading
from collections.abc import Iterator
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
    def close(self) -> None:
        """Free this engine's stream, events and buffers (never the device's context)."""

    def activation(self) -> contextlib.AbstractContextManager:
        """Make the device current on the calling thread for the length of a with-block."""
        return contextlib.nullcontext()

    def pci_bus_id(self) -> str | None:
        """The device's PCI bus id ('0000:01:00.0'), to find the same GPU in NVML."""
        return None

    def driver_version(self) -> int | None:
        """The CUDA driver's version as CUDA encodes it (12060 = 12.6)."""
        return None


class _SharedContext:
    """A device's primary context, retained once for the whole process (as
    pycuda.autoprimaryctx does) and kept current on the thread that opened it.

    Engines never push or pop it themselves, so they may open and close in any order
    (the session keeps the fp32 anchor open across variants and closes it last). Another
    thread gets it pushed for the length of one call (activation()) and popped again,
    because pycuda aborts when a thread exits with a non-empty context stack.
    """

    def __init__(self, cuda: Any, index: int):
        cuda.init()
        self.cuda, self.index = cuda, index
        self.device = cuda.Device(index)
        self.context = self.device.retain_primary_context()
        self.context.push()
        self.owner = threading.get_ident()

    @contextlib.contextmanager
    def activation(self) -> Iterator[None]:
        if threading.get_ident() == self.owner:
            yield
            return
        self.context.push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    def release(self) -> None:
        """Pop and release (at exit, on the owner thread)."""
        if threading.get_ident() != self.owner:
            return
        try:
            self.cuda.Context.pop()
        finally:
            self.context.detach()


_SHARED: dict[tuple[int, int], _SharedContext] = {}
_SHARED_LOCK = threading.Lock()


def shared_context(cuda: Any, index: int) -> _SharedContext:
    """The process-wide primary context of device index under this pycuda module."""
    key = (id(cuda), index)
    with _SHARED_LOCK:
        if key not in _SHARED:
            if not _SHARED:
                atexit.register(release_shared_contexts)
            _SHARED[key] = _SharedContext(cuda, index)
        return _SHARED[key]


def release_shared_contexts() -> None:
    """Release every shared context (registered with atexit; tests call it too)."""
    with _SHARED_LOCK:
        shared = list(_SHARED.values())
        _SHARED.clear()
    for context in reversed(shared):
        try:
            context.release()
        except Exception:  # noqa: S112 - at exit a dead context is no longer our problem
            continue


class PycudaBackend(CudaBackend):
    """pycuda on the device's process-wide primary context; this engine's own stream,
    events and allocations, all freed by close()."""

    name = "pycuda"

    def __init__(self, device_index: int = 0):
        import pycuda.driver as cuda

        self._cuda = cuda
        self._shared = shared_context(cuda, device_index)
        self._device = self._shared.device
        with self._shared.activation():
            self._stream = cuda.Stream()
        self._events: list[Any] = []
        self._buffers: list[Any] = []

    def activation(self) -> contextlib.AbstractContextManager:
        return self._shared.activation()

    def device_info(self) -> tuple[str, str]:
        major, minor = self._device.compute_capability()
        return self._device.name(), f"{major}.{minor}"

    def pci_bus_id(self) -> str | None:
        return str(self._device.pci_bus_id())

    def driver_version(self) -> int | None:
        return int(self._cuda.get_driver_version())

    @property
    def stream_handle(self) -> int:
        return int(self._stream.handle)

    def alloc(self, nbytes: int) -> DeviceBuffer:
        with self.activation():
            memory = self._cuda.mem_alloc(max(int(nbytes), 1))
        self._buffers.append(memory)
        return DeviceBuffer(int(memory), int(nbytes), memory)

    def pinned(self, shape: tuple, dtype: np.dtype) -> np.ndarray:
        with self.activation():
            return self._cuda.pagelocked_empty(tuple(shape), np.dtype(dtype))

    def to_device(self, dst: DeviceBuffer, src: np.ndarray) -> None:
        self._cuda.memcpy_htod_async(dst.handle, src, self._stream)

    def to_host(self, dst: np.ndarray, src: DeviceBuffer) -> None:
        self._cuda.memcpy_dtoh_async(dst, src.handle, self._stream)

    def new_event(self) -> Any:
        with self.activation():
            event = self._cuda.Event()
        self._events.append(event)
        return event

    def record(self, event: Any) -> None:
        event.record(self._stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(end.time_since(start))

    def synchronize(self) -> None:
        self._stream.synchronize()

    def free(self, buffer: DeviceBuffer) -> None:
        with self.activation():
            buffer.handle.free()
        self._buffers = [b for b in self._buffers if b is not buffer.handle]

    def close(self) -> None:
        """Free this engine's allocations, events and stream; the context stays."""
        with self.activation():
            self._stream.synchronize()
            for memory in self._buffers:
                memory.free()
            # pycuda destroys a stream or event when its last reference goes.
            self._buffers, self._events, self._stream = [], [], None


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
        self._threads: set[int] = set()
        with self.activation():
            self._stream = self._call(self._rt.cudaStreamCreate)
        self._host: list[int] = []
        self._device: dict[int, Any] = {}
        self._events: list[Any] = []

    def activation(self) -> contextlib.AbstractContextManager:
        # The runtime's current device is per thread: set it once on each thread.
        thread = threading.get_ident()
        if thread not in self._threads:
            self._call(self._rt.cudaSetDevice, self._index)
            self._threads.add(thread)
        return contextlib.nullcontext()

    def pci_bus_id(self) -> str | None:
        props = self._call(self._rt.cudaGetDeviceProperties, self._index)
        return f"{props.pciDomainID:04x}:{props.pciBusID:02x}:{props.pciDeviceID:02x}.0"

    def driver_version(self) -> int | None:
        return int(self._call(self._rt.cudaDriverGetVersion))

    def _call(self, function: Any, *args: Any) -> Any:
        """cuda-python returns (error, *values); raise on error, return the value(s)."""
        error, *values = function(*args)
        if error != self._rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"{function.__name__} failed: {self._error_name(error)}")
        return values[0] if len(values) == 1 else (tuple(values) or None)

    def _error_name(self, error: Any) -> str:
        name = self._rt.cudaGetErrorName(error)[1]
        return name.decode() if isinstance(name, bytes) else str(name)

    def device_info(self) -> tuple[str, str]:
        props = self._call(self._rt.cudaGetDeviceProperties, self._index)
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return name.rstrip("\x00"), f"{props.major}.{props.minor}"

    @property
    def stream_handle(self) -> int:
        return int(self._stream)

    def alloc(self, nbytes: int) -> DeviceBuffer:
        ptr = self._call(self._rt.cudaMalloc, max(int(nbytes), 1))
        self._device[int(ptr)] = ptr
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
        if self._device.pop(buffer.ptr, None) is not None:
            self._call(self._rt.cudaFree, buffer.handle)

    def close(self) -> None:
        """Free this engine's buffers, events and stream; report the first error."""
        self.synchronize()
        errors = [self._rt.cudaFree(ptr)[0] for ptr in self._device.values()]
        errors += [self._rt.cudaEventDestroy(event)[0] for event in self._events]
        errors += [self._rt.cudaFreeHost(ptr)[0] for ptr in self._host]
        errors.append(self._rt.cudaStreamDestroy(self._stream)[0])
        self._device, self._events, self._host = {}, [], []
        failed = [e for e in errors if e != self._rt.cudaError_t.cudaSuccess]
        if failed:
            raise RuntimeError(f"cuda-python close: {len(failed)} call(s) failed, first "
                               f"{self._error_name(failed[0])}")


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
        problem = binding_problem(bindings[0])
        return f"no CUDA device ({bindings[0]} sees none{'; ' + problem if problem else ''})"
    if device_index >= count:
        return f"no CUDA device {device_index} ({bindings[0]} sees {count})"
    return None


def cuda_version_text(encoded: int | None) -> str:
    """12060 -> '12.6' (CUDA's own encoding: 1000 * major + 10 * minor)."""
    if not encoded:
        return "none"
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def driver_version(binding: str) -> int | None:
    """The CUDA driver version a binding reports (no context needed), None if it cannot."""
    try:
        if binding == "pycuda":
            import pycuda.driver as cuda

            return int(cuda.get_driver_version())
        error, version = _cudart().cudaDriverGetVersion()
        return int(version) if error == _cudart().cudaError_t.cudaSuccess and version else None
    except Exception:  # no libcuda at all
        return None


def binding_version(binding: str) -> str | None:
    """The installed distribution's version (cuda-python's bindings live in cuda-bindings
    from 12.6 on), None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:  # the imported module's own version first: it is the one that runs
        if binding == "pycuda":
            import pycuda

            return str(pycuda.VERSION_TEXT)
        import cuda.bindings

        return str(cuda.bindings.__version__)
    except (ImportError, AttributeError):
        pass
    names = ("pycuda",) if binding == "pycuda" else ("cuda-bindings", "cuda-python")
    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def binding_problem(binding: str) -> str | None:
    """Why a binding that imports cannot drive this machine's CUDA driver, or None.

    cuda-python N.x needs a CUDA N driver: 13 on JetPack 6 (CUDA 12.x) sees no device.
    """
    driver = driver_version(binding)
    if driver is None:
        return "no CUDA driver found (libcuda)"
    release = binding_version(binding)
    if binding == "cuda-python" and release:
        major = int(release.split(".")[0])
        if major > driver // 1000:
            return (f"cuda-python {release} needs a CUDA {major} driver; this one is CUDA "
                    f"{cuda_version_text(driver)} (pip install 'cuda-python>={driver // 1000},"
                    f"<{driver // 1000 + 1}')")
    return None


def cuda_binding_report() -> list[str]:
    """Lines for `bench env`: each CUDA binding, its version, the driver it sees, and
    why it is unusable where it is."""
    lines = []
    importable = available_bindings()
    for binding in BACKENDS:
        release = binding_version(binding)
        if binding not in importable:
            state = "installed but does not import" if release else "not installed"
            lines.append(f"cuda binding {binding:<12} {state}")
            continue
        driver = driver_version(binding)
        problem = binding_problem(binding)
        count = _device_count(binding)
        text = (f"cuda binding {binding:<12} {release or '?'}, driver CUDA "
                f"{cuda_version_text(driver)}, {count} device(s)")
        lines.append(text + (f": unusable, {problem}" if problem else
                             (": unusable, no device" if count == 0 else ": ok")))
    return lines


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


def cuda_pci_bus_id(index: int = 0) -> str | None:
    """The PCI bus id of CUDA device index ('0000:01:00.0'), from torch, pycuda or
    cuda-python, without creating a context; None when none of them can say."""
    try:
        import torch

        if torch.cuda.is_available() and index < torch.cuda.device_count():
            props = torch.cuda.get_device_properties(index)
            return (f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:"
                    f"{props.pci_device_id:02x}.0")
    except (ImportError, AttributeError, RuntimeError):
        pass
    for binding in available_bindings():
        try:
            if binding == "pycuda":
                import pycuda.driver as cuda

                cuda.init()
                return str(cuda.Device(index).pci_bus_id()).lower()
            error, props = _cudart().cudaGetDeviceProperties(index)
            if error == _cudart().cudaError_t.cudaSuccess:
                return (f"{props.pciDomainID:04x}:{props.pciBusID:02x}:"
                        f"{props.pciDeviceID:02x}.0")
        except Exception:  # noqa: S112 - a binding without a driver: try the next one
            continue
    return None
