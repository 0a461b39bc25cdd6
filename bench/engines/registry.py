"""The backend registry: backend name -> engine class.

Adding a backend is one module (an Engine subclass with from_config) plus one line in
BACKENDS, or a register_backend() call from outside the package. Entries are
"module:Class" strings so that listing the backends imports none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.errors import ConfigError
from bench.lazy import resolve

if TYPE_CHECKING:
    from bench.engines.base import Engine

BACKENDS: dict[str, str | type[Engine]] = {
    "onnxruntime": "bench.engines.ort:OrtEngine",
    "tensorrt": "bench.engines.trt:TrtEngine",
    "torch": "bench.engines.pytorch:TorchEngine",
}


def register_backend(name: str, engine: str | type[Engine]) -> None:
    """Add (or replace) a backend: an Engine subclass or its "module:Class" path."""
    BACKENDS[name] = engine


def backend_names() -> tuple[str, ...]:
    return tuple(BACKENDS)


def engine_class(backend: str) -> type[Engine]:
    """The engine class of a backend; ConfigError naming the known ones otherwise."""
    entry = BACKENDS.get(backend)
    if entry is None:
        raise ConfigError(f"backend {backend!r}: unknown; expected one of "
                          f"{', '.join(BACKENDS)}")
    return resolve(entry)
