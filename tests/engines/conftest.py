"""Fixtures for the engine tests: the strict CUDA and TensorRT stand-ins, installed."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import ModuleType

import pytest
import strict_cuda
import strict_trt

from bench.engines import cuda_buffers


@dataclass
class StrictRig:
    """One fake rig: the GPU, its CUDA binding and a TensorRT of one version."""

    gpu: strict_cuda.FakeGpu
    cuda: ModuleType
    trt: ModuleType
    binding: str

    def stack(self) -> list:
        """pycuda's context stack on the calling thread ([] for cuda-python)."""
        return self.cuda.stack() if self.binding == "pycuda" else []


@pytest.fixture
def strict_rig(monkeypatch):
    """install(version, binding, **cudart_kwargs) -> StrictRig; released after the test."""

    def install(version: str = "10.3.0.30", binding: str = "pycuda", **kwargs) -> StrictRig:
        gpu = strict_cuda.FakeGpu()
        cuda = strict_cuda.install(monkeypatch, gpu, binding, **kwargs)
        trt = strict_trt.fake_tensorrt(version, gpu)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return StrictRig(gpu, cuda, trt, binding)

    yield install
    cuda_buffers.release_shared_contexts()
