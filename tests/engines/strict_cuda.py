"""Strict stand-ins for pycuda and cuda-python, over one fake GPU in host memory.

They model the bookkeeping the real bindings do, as read from their sources and docs
(facts only; nothing here is their code):

pycuda (`pycuda.driver`):
- each thread has its own context stack; `Context.pop()` is static and pops whatever is on
  top, raising LogicError "cannot pop non-current context" on an empty stack;
- `Device.retain_primary_context()` gives a new context object for the device's primary
  context; `push()` puts it on the calling thread's stack;
- `detach()` of a primary context releases it and, when it was current, drops it (and any
  dead entries) from the stack: releasing does not pop what is above it in CUDA's terms,
  but pycuda's bookkeeping forgets it; detaching twice raises;
- `mem_alloc`, `pagelocked_empty`, `Stream()` and `Event()` need a current, valid context
  (else LogicError "... no currently active context?"); freeing memory needs its context
  alive; an async copy checks sizes and that the stream belongs to a live context.

cuda-python (`cuda.bindings.runtime`): every call returns a tuple whose first item is a
cudaError_t; invalid handles, double frees, oversized copies and unknown devices return
error codes (never raise); cudaMallocHost gives real host addresses.

Both count what is alive (allocations, streams, events, host buffers) so tests can check
that an engine frees what it took.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import sys
import threading
import types
from dataclasses import dataclass, field

import numpy as np


@dataclass
class FakeGpu:
    """The device side: named devices and device memory (address -> bytes)."""

    names: tuple[str, ...] = ("Fake Orin",)
    capability: tuple[int, int] = (8, 7)
    pci_bus_ids: tuple[int, ...] = (1,)
    memory: dict[int, np.ndarray] = field(default_factory=dict)
    streams: set = field(default_factory=set)
    events: set = field(default_factory=set)
    host: dict[int, object] = field(default_factory=dict)
    _next: itertools.count = field(default_factory=lambda: itertools.count(0x10, 0x10))
    _top: int = 0x100000

    def malloc(self, nbytes: int) -> int:
        """A new allocation, never overlapping another (a guard page between them)."""
        ptr, size = self._top, max(int(nbytes), 1)
        self._top += (size + 0xFFF) // 0x1000 * 0x1000 + 0x1000
        self.memory[ptr] = np.zeros(size, np.uint8)
        return ptr

    def view(self, ptr: int, nbytes: int) -> np.ndarray:
        """nbytes of device memory at ptr; ptr may point inside an allocation."""
        for base, block in self.memory.items():
            if base <= ptr < base + block.nbytes:
                if ptr - base + nbytes > block.nbytes:
                    raise IndexError(f"device read of {nbytes} B at {ptr:#x} runs past the "
                                     f"{block.nbytes} B allocation at {base:#x}")
                return block[ptr - base: ptr - base + nbytes]
        raise KeyError(f"device address {ptr:#x} is not allocated")

    def live(self) -> dict[str, int]:
        return {"memory": len(self.memory), "streams": len(self.streams),
                "events": len(self.events), "host": len(self.host)}


# -- pycuda --------------------------------------------------------------------------


class PycudaError(Exception):
    pass


class LogicError(PycudaError):
    pass


def fake_pycuda(gpu: FakeGpu) -> types.ModuleType:
    """A `pycuda.driver` module over gpu, with pycuda's context-stack rules."""
    driver = types.ModuleType("pycuda.driver")
    local = threading.local()
    driver.Error, driver.LogicError = PycudaError, LogicError
    driver.initialized = False

    def stack() -> list:
        if not hasattr(local, "stack"):
            local.stack = []
        return local.stack

    def current():
        entries = stack()
        while entries and not entries[-1].valid:
            entries.pop()
        return entries[-1] if entries else None

    def require_context(what: str):
        if not driver.initialized:
            raise LogicError(f"{what} failed: initialization error (call cuda.init() first)")
        ctx = current()
        if ctx is None:
            raise LogicError(f"explicit_context_dependent failed: invalid device context - "
                             f"no currently active context? ({what})")
        return ctx

    def init(flags: int = 0) -> None:
        driver.initialized = True

    class Context:
        def __init__(self, device: Device):
            self.device, self.valid, self.thread = device, True, threading.get_ident()

        def push(self) -> None:
            if not self.valid:
                raise LogicError("context::push failed: cannot push dead context")
            stack().append(self)

        @staticmethod
        def pop() -> None:
            entries = stack()
            if not entries:
                raise LogicError("context::pop failed: invalid device context - "
                                 "cannot pop non-current context")
            entries.pop()

        @staticmethod
        def get_current():
            return current()

        def detach(self) -> None:
            if not self.valid:
                raise LogicError("context::detach failed: invalid device context - "
                                 "cannot detach from invalid context")
            was_current = current() is self
            self.valid = False
            if was_current:
                current()  # drops it and any dead entries from the top of the stack

        @staticmethod
        def synchronize() -> None:
            require_context("cuCtxSynchronize")

    class Device:
        def __init__(self, index: int):
            if not driver.initialized:
                raise LogicError("cuDeviceGet failed: initialization error")
            if not 0 <= index < len(gpu.names):
                raise LogicError(f"cuDeviceGet failed: invalid device ordinal {index}")
            self.index = index

        @staticmethod
        def count() -> int:
            if not driver.initialized:
                raise LogicError("cuDeviceGetCount failed: initialization error")
            return len(gpu.names)

        def name(self) -> str:
            return gpu.names[self.index]

        def compute_capability(self) -> tuple[int, int]:
            return gpu.capability

        def pci_bus_id(self) -> str:
            return f"0000:{gpu.pci_bus_ids[self.index]:02X}:00.0"

        def retain_primary_context(self) -> Context:
            return Context(self)

    class DeviceAllocation:
        def __init__(self, ptr: int, ctx: Context):
            self.ptr, self.ctx, self.freed = ptr, ctx, False

        def __int__(self) -> int:
            return self.ptr

        def free(self) -> None:
            if self.freed:
                return  # pycuda makes a second free a no-op
            if not self.ctx.valid:
                raise LogicError("cuMemFree failed: cannot activate dead context")
            del gpu.memory[self.ptr]
            self.freed = True

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        ctx = require_context("cuMemAlloc")
        return DeviceAllocation(gpu.malloc(nbytes), ctx)

    def pagelocked_empty(shape, dtype) -> np.ndarray:
        require_context("cuMemHostAlloc")
        return np.empty(shape, dtype)

    class Stream:
        def __init__(self, flags: int = 0):
            self.ctx = require_context("cuStreamCreate")
            self.handle = next(gpu._next)
            gpu.streams.add(self.handle)

        def synchronize(self) -> None:
            self._check("cuStreamSynchronize")

        def _check(self, what: str) -> None:
            if not self.ctx.valid or self.handle not in gpu.streams:
                raise LogicError(f"{what} failed: invalid resource handle")

        def __del__(self) -> None:
            gpu.streams.discard(self.handle)

    class Event:
        def __init__(self, flags: int = 0):
            self.ctx = require_context("cuEventCreate")
            self.handle, self.recorded = next(gpu._next), None
            gpu.events.add(self.handle)

        def record(self, stream: Stream | None = None):
            if stream is not None:
                stream._check("cuEventRecord")
            self.recorded = _clock()
            return self

        def time_since(self, other: Event) -> float:
            if self.recorded is None or other.recorded is None:
                raise LogicError("cuEventElapsedTime failed: invalid resource handle")
            return max(self.recorded - other.recorded, 0.0) * 1000.0

        def __del__(self) -> None:
            gpu.events.discard(self.handle)

    def memcpy_htod_async(dest, src: np.ndarray, stream: Stream | None = None) -> None:
        require_context("cuMemcpyHtoDAsync")
        if stream is not None:
            stream._check("cuMemcpyHtoDAsync")
        data = np.ascontiguousarray(src).reshape(-1).view(np.uint8)
        gpu.view(int(dest), data.nbytes)[:] = data

    def memcpy_dtoh_async(dest: np.ndarray, src, stream: Stream | None = None) -> None:
        require_context("cuMemcpyDtoHAsync")
        if stream is not None:
            stream._check("cuMemcpyDtoHAsync")
        dest.reshape(-1).view(np.uint8)[:] = gpu.view(int(src), dest.nbytes)

    def get_driver_version() -> int:
        return 12060

    for name, value in dict(init=init, Context=Context, Device=Device, mem_alloc=mem_alloc,
                            pagelocked_empty=pagelocked_empty, Stream=Stream, Event=Event,
                            memcpy_htod_async=memcpy_htod_async,
                            memcpy_dtoh_async=memcpy_dtoh_async,
                            get_driver_version=get_driver_version,
                            DeviceAllocation=DeviceAllocation).items():
        setattr(driver, name, value)
    driver.stack = stack  # for tests: the calling thread's context stack
    return driver


def _clock() -> float:
    import time

    return time.perf_counter()


# -- cuda-python ---------------------------------------------------------------------


class cudaError_t(enum.IntEnum):  # noqa: N801 - the binding's own name
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorNotReady = 600


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3


class _Handle:
    """cudaStream_t / cudaEvent_t: an opaque object with int()."""

    def __init__(self, value: int):
        self.value = value

    def __int__(self) -> int:
        return self.value


def fake_cudart(gpu: FakeGpu, *, driver_version: int = 12060,
                runtime_version: int = 12060) -> types.ModuleType:
    """A `cuda.bindings.runtime` module over gpu: tuple returns, error codes."""
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t, rt.cudaMemcpyKind = cudaError_t, cudaMemcpyKind
    ok, bad = cudaError_t.cudaSuccess, cudaError_t
    state = threading.local()
    recorded: dict[int, float] = {}

    def device() -> int | None:
        return getattr(state, "device", None)

    def cudaGetErrorName(error):  # noqa: N802
        return ok, cudaError_t(error).name.encode()

    def cudaGetDeviceCount():  # noqa: N802
        if runtime_version // 1000 > driver_version // 1000:
            return bad.cudaErrorInsufficientDriver, 0
        return ok, len(gpu.names)

    def cudaDriverGetVersion():  # noqa: N802
        return ok, driver_version

    def cudaRuntimeGetVersion():  # noqa: N802
        return ok, runtime_version

    def cudaSetDevice(index):  # noqa: N802
        if not 0 <= int(index) < len(gpu.names):
            return (bad.cudaErrorInvalidDevice,)
        state.device = int(index)
        return (ok,)

    def cudaGetDeviceProperties(index):  # noqa: N802
        if not 0 <= int(index) < len(gpu.names):
            return bad.cudaErrorInvalidDevice, None
        name = gpu.names[index].encode().ljust(256, b"\x00")
        props = types.SimpleNamespace(name=name, major=gpu.capability[0],
                                      minor=gpu.capability[1], pciBusID=gpu.pci_bus_ids[index],
                                      pciDomainID=0, pciDeviceID=0)
        return ok, props

    def cudaStreamCreate():  # noqa: N802
        if device() is None:
            state.device = 0  # the runtime initialises device 0 implicitly
        handle = next(gpu._next)
        gpu.streams.add(handle)
        return ok, _Handle(handle)

    def cudaStreamDestroy(stream):  # noqa: N802
        if int(stream) not in gpu.streams:
            return (bad.cudaErrorInvalidResourceHandle,)
        gpu.streams.discard(int(stream))
        return (ok,)

    def cudaStreamSynchronize(stream):  # noqa: N802
        return (ok,) if int(stream) in gpu.streams else (bad.cudaErrorInvalidResourceHandle,)

    def cudaMalloc(nbytes):  # noqa: N802
        if int(nbytes) <= 0:
            return bad.cudaErrorInvalidValue, 0
        return ok, gpu.malloc(int(nbytes))

    def cudaFree(ptr):  # noqa: N802
        if int(ptr) not in gpu.memory:
            return (bad.cudaErrorInvalidValue,)
        del gpu.memory[int(ptr)]
        return (ok,)

    def cudaMallocHost(nbytes):  # noqa: N802
        buffer = ctypes.create_string_buffer(int(nbytes))
        address = ctypes.addressof(buffer)
        gpu.host[address] = buffer
        return ok, address

    def cudaFreeHost(ptr):  # noqa: N802
        if int(ptr) not in gpu.host:
            return (bad.cudaErrorInvalidValue,)
        del gpu.host[int(ptr)]
        return (ok,)

    def cudaMemcpyAsync(dst, src, count, kind, stream):  # noqa: N802
        if int(stream) not in gpu.streams:
            return (bad.cudaErrorInvalidResourceHandle,)
        try:
            if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
                target = gpu.view(int(dst), int(count))
                ctypes.memmove(target.ctypes.data, int(src), int(count))
            elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
                source = gpu.view(int(src), int(count))
                ctypes.memmove(int(dst), source.ctypes.data, int(count))
            else:
                return (bad.cudaErrorInvalidValue,)
        except (KeyError, IndexError):
            return (bad.cudaErrorInvalidValue,)
        return (ok,)

    def cudaEventCreate():  # noqa: N802
        handle = next(gpu._next)
        gpu.events.add(handle)
        return ok, _Handle(handle)

    def cudaEventDestroy(event):  # noqa: N802
        if int(event) not in gpu.events:
            return (bad.cudaErrorInvalidResourceHandle,)
        gpu.events.discard(int(event))
        recorded.pop(int(event), None)
        return (ok,)

    def cudaEventRecord(event, stream):  # noqa: N802
        if int(event) not in gpu.events or int(stream) not in gpu.streams:
            return (bad.cudaErrorInvalidResourceHandle,)
        recorded[int(event)] = _clock()
        return (ok,)

    def cudaEventElapsedTime(start, end):  # noqa: N802
        if int(start) not in recorded or int(end) not in recorded:
            return bad.cudaErrorInvalidResourceHandle, 0.0
        return ok, max(recorded[int(end)] - recorded[int(start)], 0.0) * 1000.0

    for name, value in list(locals().items()):
        if name.startswith("cuda") and callable(value):
            setattr(rt, name, value)
    return rt


def install(monkeypatch, gpu: FakeGpu, binding: str = "pycuda", **kwargs) -> types.ModuleType:
    """Make `import pycuda.driver` (or `cuda.bindings.runtime`) find the stand-in only."""
    for name in ("pycuda", "pycuda.driver", "cuda", "cuda.bindings", "cuda.bindings.runtime",
                 "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)  # None: ImportError on import
    if binding == "pycuda":
        driver = fake_pycuda(gpu)
        package = types.ModuleType("pycuda")
        package.driver, package.VERSION, package.VERSION_TEXT = driver, (2025, 1, 2), "2025.1.2"
        package.__path__ = []
        monkeypatch.setitem(sys.modules, "pycuda", package)
        monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
        return driver
    runtime = fake_cudart(gpu, **kwargs)
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    major = kwargs.get("runtime_version", 12060) // 1000
    bindings.__version__ = f"{major}.9.0"
    cuda.__path__, bindings.__path__ = [], []
    cuda.bindings, bindings.runtime = bindings, runtime
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)
    return runtime
