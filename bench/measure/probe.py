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

INT8 rows are normalised by the same detector in INT8 (kind "int8"): its Q/DQ graph,
written by bench.quant.qdq with the run's Q/DQ profile from activation ranges shipped
beside this module (probe_int8_amax.json, the default's max calibration), so it is the
same file on every run of one install. Measured on quiet cores (300 blocks of 4 calls,
an int8-max model against each probe): the run-to-run sd of normalised latency was
1.7-2.2 % with the INT8 probe against 6.4-6.9 % with the FP32 one, since this VM's slow
mode slows INT8 kernels less than FP32 ones (int8-max 1.45x where FP32 slows 1.6x).

The files are written into a cache folder under names with their content hash. Probe
figures are only compared between rows whose probe identity (kind and sha256, in each
row's extra; the FP32 probe's also in the environment) is the same.
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


PROBE_KINDS = ("fp32", "int8")
_INT8_AMAX = Path(__file__).with_name("probe_int8_amax.json")


def probe_kind(artifact: str) -> str:
    """Which probe normalises a row of this artifact kind (bench.variants.ARTIFACT_KINDS)."""
    from bench.variants import INT8_ARTIFACTS

    return "int8" if artifact in INT8_ARTIFACTS else "fp32"


@functools.lru_cache(maxsize=4)
def int8_probe_bytes(profile: str) -> bytes:
    """The INT8 probe's ONNX (the default's Q/DQ graph for this Q/DQ profile), byte for
    byte the same for one install; ModelError when the shipped ranges miss a tensor."""
    import json

    from bench.config import KEEP_FLOAT_FLAGS
    from bench.errors import ModelError
    from bench.models.default import default_model_path
    from bench.quant.ptq import quant_plan
    from bench.quant.qdq import write_qdq

    model, plan = quant_plan(default_model_path(), KEEP_FLOAT_FLAGS)
    amax = json.loads(_INT8_AMAX.read_text())["amax"]
    missing = sorted(set(plan.activation_tensors) - set(amax))
    if missing:
        raise ModelError(f"speed probe {_INT8_AMAX.name}: no range for {len(missing)} planned "
                         f"tensor(s), e.g. {missing[:3]}; expected one for each")
    return write_qdq(model, plan, amax, profile=profile).SerializeToString(deterministic=True)


def probe_file(cache_dir: str | Path, kind: str = "fp32", profile: str = "cpu") -> Path:
    """The probe of this kind in cache_dir (written at first use, atomically; a file of that
    name with other content is replaced), named by its version, kind and content hash."""
    if kind not in PROBE_KINDS:
        raise ValueError(f"probe kind {kind!r}: expected one of {PROBE_KINDS}")
    if kind == "fp32":
        return probe_model_path(cache_dir)
    data = int8_probe_bytes(profile)
    sha = _int8_sha256(profile)
    path = Path(cache_dir) / f"speed_probe_v{PROBE_VERSION}_int8_{profile}_{sha[:12]}.onnx"
    if not path.is_file() or path.read_bytes() != data:
        atomic_write_bytes(path, data)
    return path


def row_probe_identity(kind: str, profile: str) -> dict[str, str]:
    """What a row stores to say which probe normalised it."""
    if kind == "fp32":
        return {"kind": "fp32", "version": PROBE_VERSION, "sha256": probe_sha256()}
    return {"kind": "int8", "version": PROBE_VERSION, "profile": profile,
            "sha256": _int8_sha256(profile)}


@functools.lru_cache(maxsize=4)
def _int8_sha256(profile: str) -> str:
    return hashlib.sha256(int8_probe_bytes(profile)).hexdigest()


def probe_batch() -> np.ndarray:
    """The probe's fixed input, float32 [1, 3, 256, 256] in [0, 1] (seeded noise)."""
    return np.random.default_rng(_SEED + 1).random(INPUT_SHAPE, dtype=np.float32)


def probe_identity() -> dict[str, str]:
    """What a row or baseline stores to say which probe its figures are of."""
    return {"version": PROBE_VERSION, "sha256": probe_sha256()}
