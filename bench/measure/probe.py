"""The speed probe: a fixed small ONNX network that does not change with the model under test.

Timed in blocks alternating with the variant's, on the same engine and threads, it turns a
latency into a probe-normalised latency (variant / probe) that compares across runs on a
machine whose speed drifts (bench.measure.stats). It is a plain FP32 image network (five
3x3 convolutions with ReLU, then a global average pool) on a [1, 3, 96, 96] input, so every
engine runs it, about 135 MFLOP: a few milliseconds on one CPU core.

The file is generated at first use (onnx.helper, weights from a fixed seed) into a cache
folder, named by its content hash; the same PROBE_VERSION gives the same bytes. Change
anything about the network and PROBE_VERSION must change too: probe figures of different
versions are not comparable, and a baseline records the version it was measured with.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

from bench.atomic import atomic_write_bytes

# 2: the size of a small detector (~0.6 GFLOP, 128 px, up to 256 channels) instead of a
# 135-MFLOP toy: on a shared machine a 1 ms probe was slowed far less by other processes
# than a 30 ms multi-threaded model (A/A ratios spread 0.66-1.33), since a short call rarely
# meets a descheduled thread; a probe of the model's size meets the same contention.
PROBE_VERSION = "2"
INPUT_NAME = "images"
OUTPUT_NAME = "output"
INPUT_SHAPE = (1, 3, 128, 128)
_SEED = 20261201
_OPSET = 17
_IR_VERSION = 8
# (out channels, stride) of each 3x3 convolution
_LAYERS = ((32, 2), (64, 1), (64, 2), (128, 1), (128, 2), (256, 1))


def _network_bytes() -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(_SEED)
    nodes, inits = [], []
    x, c_in = INPUT_NAME, INPUT_SHAPE[1]
    for i, (c_out, stride) in enumerate(_LAYERS):
        fan_in = c_in * 9
        w = (rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(c_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"conv{i}"],
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                      strides=[stride, stride], name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"))
        x, c_in = f"relu{i}", c_out
    nodes.append(helper.make_node("GlobalAveragePool", [x], [OUTPUT_NAME], name="pool"))
    graph = helper.make_graph(
        nodes, f"speed_probe_v{PROBE_VERSION}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, list(INPUT_SHAPE))],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, c_in, 1, 1])],
        inits,
    )
    model = helper.make_model(graph, producer_name="bench.measure.probe",
                              producer_version=PROBE_VERSION,
                              opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)


@functools.lru_cache(maxsize=1)
def probe_bytes() -> bytes:
    """The probe's ONNX file, byte for byte (the same for one PROBE_VERSION)."""
    return _network_bytes()


def probe_sha256() -> str:
    return hashlib.sha256(probe_bytes()).hexdigest()


def probe_model_path(cache_dir: str | Path) -> Path:
    """The probe's ONNX file in cache_dir (written there at first use, atomically; a file of
    that name with other content is replaced), named speed_probe_v<version>_<sha12>.onnx."""
    data = probe_bytes()
    path = Path(cache_dir) / f"speed_probe_v{PROBE_VERSION}_{probe_sha256()[:12]}.onnx"
    if not path.is_file() or path.read_bytes() != data:
        atomic_write_bytes(path, data)
    return path


def probe_batch() -> np.ndarray:
    """The probe's fixed input, float32 [1, 3, 128, 128] in [0, 1]."""
    return np.random.default_rng(_SEED + 1).random(INPUT_SHAPE, dtype=np.float32)


def probe_identity() -> dict[str, str]:
    """What a row or baseline stores to say which probe its figures are of."""
    return {"version": PROBE_VERSION, "sha256": probe_sha256()}
