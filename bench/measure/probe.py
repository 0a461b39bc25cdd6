"""The speed probe: a fixed ONNX network that does not change with the model under test.

Timed in blocks alternating with the variant's, on the same engine and threads, it turns a
latency into a probe-normalised latency (variant / probe) that compares across runs on a
machine whose speed drifts (bench.measure.stats). Since version 3 the probe is the
embedded default detector's FP32 graph (bench/models/default, a YOLOv7-tiny at 256 px,
shipped with the package) on a fixed seeded input: every engine runs it, and it meets
the same contention as a detector does.

Why a detector and not a toy network, measured on this project's 2-core shared VM: block
medians of the detector switch between a fast and a slow mode (4.1-4.5 against 6.0-7.0 ms)
for a few blocks at a time, and the slow mode hit a 0.6-GFLOP toy probe (version 2, 128
px, small activations) only some of the times it hit the detector: the two's block medians
correlated -0.08, so normalising by the toy added noise (run-to-run sd of the normalised
latency 15.6 %, 10 blocks of 5 calls) instead of removing it; normalised by a second
session of the detector's graph the same blocks gave 3.4 % (scripts/selftest_verdicts.py
measures what the verdicts make of it).

The file is the default's ONNX itself, copied into a cache folder under a name with its
content hash. Probe figures are only compared between runs whose probe identity
(probe_identity(): version and sha256, recorded in the environment) is the same.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

from bench.atomic import atomic_write_bytes

# 1 and 2 were generated toy networks (see the module docstring for why they were dropped).
PROBE_VERSION = "3"
INPUT_NAME = "images"
INPUT_SHAPE = (1, 3, 256, 256)  # the default detector's own size
_SEED = 20261201


def _network_bytes() -> bytes:
    from bench.models.default import default_model_path

    return default_model_path().read_bytes()


@functools.lru_cache(maxsize=1)
def probe_bytes() -> bytes:
    """The probe's ONNX file, byte for byte (the same for one PROBE_VERSION and default)."""
    return _network_bytes()


@functools.lru_cache(maxsize=1)
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
    """The probe's fixed input, float32 [1, 3, 256, 256] in [0, 1] (seeded noise)."""
    return np.random.default_rng(_SEED + 1).random(INPUT_SHAPE, dtype=np.float32)


def probe_identity() -> dict[str, str]:
    """What a row or baseline stores to say which probe its figures are of."""
    return {"version": PROBE_VERSION, "sha256": probe_sha256()}
