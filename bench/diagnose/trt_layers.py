"""What each layer of a TensorRT engine ran in, and where the time went.

The TensorRT counterpart of ort_profile, from two things TensorRT reports about a built
engine (bench.engines.trt_profile collects them):

- the engine inspector's JSON, ``{"Layers": [...], "Bindings": [...]}`` (11.x: "I/O
  Tensors" objects in place of "Bindings"). Built with ProfilingVerbosity.DETAILED, each
  layer is an object: "Name"; "LayerType" (CaskConvolution, PointWise, Reformat, NoOp,
  ...); "Inputs" and "Outputs", each tensor with "Name", "Dimensions" and "Format/Datatype"
  ("Row major linear FP32", "Thirty-two wide channel vectorized row major Int8 format";
  only the data type, "Int8" or "Half", when the inspector has no execution context; 11.x
  splits the field into a format and a data type); "Origin" on a Reformat ("QDQ": a
  QuantizeLinear or DequantizeLinear that ran as a conversion of its own, "REFORMAT": a
  layout or precision copy between layers); "Metadata", "[ONNX Layer: <node>]" per ONNX
  node fused into the layer, separated by \\x1f or \\x1e (8.6+); "TacticName". Built
  without DETAILED (the default is LAYER_NAMES_ONLY), "Layers" lists names only: nothing
  is then claimed about precisions, and the summary says why.
- the IProfiler's time of each layer in each run, keyed by the same layer names.

A layer counts as

  int8      its first input is INT8 (a convolution reading int8 codes: an int8 kernel);
  qdq       a Reformat of Origin QDQ (a Q/DQ conversion TensorRT did not fuse);
  reformat  any other Reformat (NoOp copies run no kernel and are not counted);
  float     its first input is FP32, FP16 or BF16;
  other     anything else (INT32/INT64/BOOL shape arithmetic, FP8, no inputs);
  unknown   the inspector gave its name only, or never named it.

A layer computes an ONNX Conv when one of its ONNX names (from Metadata, else the " + "
parts of its name: TensorRT names a fused layer by joining its parts) is that Conv's
TensorRT name: the node's name, "node_of_<first output>" for an unnamed node (as the ONNX
parser names it). A layer covering several convs counts them all at its precision. Conv
FLOPs and the int8 % are as in ort_profile: the share of the graph's conv FLOPs computed
in int8 layers. A layer's time is its median over the timed runs.

Sources: NVIDIA TensorRT docs, "Engine Inspector" (inference-library/engine-tools) and the
Python API's EngineInspector and ProfilingVerbosity; "Migrating IEngineInspector Usage
from TensorRT 10.x to 11.x" (the Bindings -> I/O Tensors example; the 11.x names of the
split tensor fields are not shown there, so "DataType", "Datatype" and "Format" are all
read); the engine graph JSONs NVIDIA publishes with trt-engine-explorer (NVIDIA/TensorRT
v10.16, tools/experimental/trt-engine-explorer/examples/pytorch/resnet/A100/qat), for the
field values (LayerType, Origin, Format/Datatype texts, " + " fused names).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from bench.diagnose.ort_profile import conv_flops
from bench.errors import ModelError

SLOWEST = 10
PRECISIONS = ("int8", "qdq", "reformat", "float", "other", "unknown")
NAMES_ONLY = ("engine not built with ProfilingVerbosity.DETAILED: the inspector gives layer "
              "names only, so no precisions are claimed")
PROFILE_COLUMNS = ("name", "layer_type", "precision", "inputs", "outputs", "time_us", "convs",
                   "conv_flops", "origin", "tactic")
_DTYPE = re.compile(r"\b(uint8|int8|int4|fp8|fp4|fp16|half|bfloat16|bf16|fp32|float|int32|"
                    r"int64|bool)\b", re.IGNORECASE)
_CANONICAL = {"half": "FP16", "float": "FP32", "bfloat16": "BF16"}
_FLOATS = frozenset({"FP32", "FP16", "BF16"})
_ONNX_LAYER = re.compile(r"\[ONNX Layer: (.+?)\](?=[\x1e\x1f]|\[ONNX Layer: |\s*$)", re.DOTALL)
_TYPE_KEYS = ("DataType", "Datatype", "Format/Datatype", "Format")


@dataclass(frozen=True)
class LayerInfo:
    """One engine layer as the inspector describes it (names only: just the name)."""

    name: str
    layer_type: str = ""
    origin: str = ""
    inputs: tuple[str, ...] = ()  # data types: INT8, FP16, FP32, ... ("?" when unreadable)
    outputs: tuple[str, ...] = ()
    onnx_nodes: tuple[str, ...] = ()
    tactic: str = ""
    detailed: bool = False

    @property
    def precision(self) -> str:
        if not self.detailed:
            return "unknown"
        if self.layer_type.lower().startswith("reformat"):
            return "qdq" if self.origin.upper() == "QDQ" else "reformat"
        first = self.inputs[0] if self.inputs else ""
        if first == "INT8":
            return "int8"
        return "float" if first in _FLOATS else "other"


@dataclass(frozen=True)
class LayerTime:
    """One layer with its time per run (median) and the ONNX convs it computes."""

    layer: LayerInfo
    time_us: float
    convs: tuple[str, ...] = ()
    conv_flops: int = 0

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def precision(self) -> str:
        return self.layer.precision


@dataclass(frozen=True)
class TrtProfile:
    """The layers of one engine, timed and summarised."""

    model: str
    runs: int
    detailed: bool  # the inspector gave precisions (DETAILED)
    total_us: float  # sum of the layers' times per run
    int8_pct: float | None  # % of conv FLOPs in int8 layers; None without DETAILED
    layer_counts: dict[str, int]  # per precision
    time_pct: dict[str, float]  # % of the layers' time per precision
    conv_flops: int
    unmatched_convs: tuple[str, ...]  # convs no layer maps back to (counted as not int8)
    untimed: tuple[str, ...]  # inspector layers the profiler never reported (NoOps)
    layers: tuple[LayerTime, ...]  # slowest first

    @property
    def slowest(self) -> tuple[LayerTime, ...]:
        return self.layers[:SLOWEST]

    @property
    def reformat_layers(self) -> int:
        """Reformat layers, those from Q/DQ included."""
        return self.layer_counts["reformat"] + self.layer_counts["qdq"]

    @property
    def note(self) -> str | None:
        return None if self.detailed else NAMES_ONLY

    def summary(self) -> str:
        """int8 % of conv FLOPs, layers and time in INT8 / float / reformats, the slowest."""
        counts, pct = self.layer_counts, self.time_pct
        tail = f"({self.total_us / 1e3:.2f} ms of layers per run, {self.runs} runs)"
        if self.detailed:
            head = (f"{self.int8_pct:.1f} % of conv FLOPs in INT8; INT8 {counts['int8']} of "
                    f"{len(self.layers)} layers, {pct['int8']:.1f} % of the time; float "
                    f"{counts['float']}, {pct['float']:.1f} %; reformat "
                    f"{self.reformat_layers} ({counts['qdq']} from Q/DQ), "
                    f"{pct['reformat'] + pct['qdq']:.1f} % {tail}")
        else:
            head = f"{NAMES_ONLY}; {len(self.layers)} layers {tail}"
        lines = [head]
        lines += [f"  {t.time_us / 1e3:7.3f} ms  {t.precision:8s}  "
                  f"{t.layer.layer_type or '?':16s}  {t.name}" for t in self.slowest]
        return "\n".join(lines)


def tensor_dtype(entry: object) -> str:
    """A tensor entry's data type (INT8, FP16, FP32, BF16, INT32, ...; "?" when unknown)."""
    if not isinstance(entry, dict):
        return "?"
    for key in _TYPE_KEYS:
        value = entry.get(key)
        match = _DTYPE.search(value) if isinstance(value, str) else None
        if match:
            word = match.group(1).lower()
            return _CANONICAL.get(word, word.upper())
    return "?"


def _onnx_nodes(layer: dict) -> tuple[str, ...]:
    metadata = layer.get("Metadata")
    found = _ONNX_LAYER.findall(metadata) if isinstance(metadata, str) else []
    if found:
        return tuple(found)
    return tuple(part.strip() for part in str(layer.get("Name", "")).split(" + ") if part.strip())


def _layer(entry: object, index: int) -> LayerInfo:
    if isinstance(entry, str):
        return LayerInfo(entry)
    if not isinstance(entry, dict) or not isinstance(entry.get("Name"), str):
        raise ModelError(f"tensorrt engine information: layer {index} is {_short(entry)}; "
                         "expected an object with a Name, or a name")
    tensors = {side: tuple(tensor_dtype(t) for t in entry.get(side) or ())
               for side in ("Inputs", "Outputs")}
    return LayerInfo(entry["Name"], str(entry.get("LayerType", "")), str(entry.get("Origin", "")),
                     tensors["Inputs"], tensors["Outputs"], _onnx_nodes(entry),
                     str(entry.get("TacticName", "")), detailed="LayerType" in entry)


def parse_engine_information(text: str) -> tuple[LayerInfo, ...]:
    """The layers of the inspector's JSON (get_engine_information(JSON)), in engine order.

    A layer given as a bare name (the engine was not built DETAILED) has detailed False.
    Raises ModelError when the text is not that JSON.
    """
    try:
        record = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"tensorrt engine information is not JSON ({exc})") from None
    layers = record.get("Layers") if isinstance(record, dict) else None
    if not isinstance(layers, list):
        raise ModelError(f"tensorrt engine information {_short(record)}: expected an object "
                         "with a \"Layers\" list")
    return tuple(_layer(entry, index) for index, entry in enumerate(layers))


def _short(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _conv_names(model: onnx.ModelProto) -> dict[str, str]:
    """TensorRT's names of each Conv -> its key in conv_flops (name, else output name)."""
    names = {}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        key = node.name or node.output[0]
        aliases = [node.name] if node.name else [f"node_of_{node.output[0]}", node.output[0]]
        names.update(dict.fromkeys(aliases, key))
    return names


def _per_run(times: list[float], runs: int) -> float:
    if len(times) == runs:
        return float(np.median(times))
    return sum(times) / runs  # reported in some runs only


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole > 0 else 0.0


def _timed(layers: tuple[LayerInfo, ...], times_ms: dict[str, list[float]], runs: int,
           convs: dict[str, str], flops: dict[str, int]) -> list[LayerTime]:
    known = {layer.name for layer in layers}
    stray = [LayerInfo(name) for name in times_ms if name not in known]
    rows = []
    for layer in (*layers, *stray):
        times = times_ms.get(layer.name, [])
        mine = () if layer.precision in ("qdq", "reformat") else tuple(dict.fromkeys(
            convs[n] for n in layer.onnx_nodes if n in convs))
        rows.append(LayerTime(layer, 1e3 * _per_run(times, runs) if times else 0.0, mine,
                              sum(flops.get(c, 0) for c in mine)))
    return sorted(rows, key=lambda row: -row.time_us)


def summarise(model: onnx.ModelProto, engine_information: str,
              times_ms: dict[str, list[float]], runs: int, input_shape: tuple[int, ...],
              label: str = "") -> TrtProfile:
    """A TrtProfile of an engine built from `model`, profiled at `input_shape`."""
    layers = parse_engine_information(engine_information)
    detailed = bool(layers) and all(layer.detailed for layer in layers)
    flops = conv_flops(model, input_shape)
    rows = _timed(layers, times_ms, runs, _conv_names(model), flops)
    counts = {p: sum(1 for r in rows if r.precision == p) for p in PRECISIONS}
    by_precision: dict[str, float] = defaultdict(float)
    for row in rows:
        by_precision[row.precision] += row.time_us
    total = sum(row.time_us for row in rows)
    matched = {c for row in rows for c in row.convs}
    int8 = {c for row in rows if row.precision == "int8" for c in row.convs}
    whole = sum(flops.values())
    return TrtProfile(
        label, runs, detailed, total,
        _pct(sum(flops[c] for c in int8), whole) if detailed else None, counts,
        {p: _pct(by_precision[p], total) for p in PRECISIONS}, whole,
        tuple(c for c in flops if c not in matched),
        tuple(layer.name for layer in layers if layer.name not in times_ms), tuple(rows))


def summarise_file(model_path: str | Path, engine_information: str,
                   times_ms: dict[str, list[float]], runs: int,
                   input_shape: tuple[int, ...]) -> TrtProfile:
    """summarise() with the ONNX the engine was built from read from model_path."""
    from bench.onnx_file import load_model

    path = Path(model_path)
    return summarise(load_model(path), engine_information, times_ms, runs, input_shape,
                     path.name)


def profile_csv(profile: TrtProfile) -> str:
    """Every layer of a profile, slowest first, as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PROFILE_COLUMNS)
    for row in profile.layers:
        layer = row.layer
        writer.writerow([layer.name, layer.layer_type, row.precision, " ".join(layer.inputs),
                         " ".join(layer.outputs), f"{row.time_us:.3f}", " ".join(row.convs),
                         row.conv_flops, layer.origin, layer.tactic])
    return buffer.getvalue()


def profile_summary(profile: TrtProfile, shown: int = 5) -> dict:
    """The row's share of a profile: the keys of the ORT one where they mean the same
    (int8_pct, float_time_pct, qdq_time_pct, kernel_ms, slowest, unmatched_convs), the
    layer counts and reformats, and profile_note where precisions are unknown."""
    pct, counts = profile.time_pct, profile.layer_counts
    out: dict = {} if profile.int8_pct is None else {"int8_pct": round(profile.int8_pct, 2)}
    if profile.detailed:
        out.update({"float_time_pct": round(pct["float"], 2),
                    "qdq_time_pct": round(pct["qdq"], 2),
                    "int8_time_pct": round(pct["int8"], 2),
                    "int8_layers": counts["int8"], "float_layers": counts["float"],
                    "reformat_layers": profile.reformat_layers,
                    "reformat_time_pct": round(pct["reformat"] + pct["qdq"], 2)})
    out.update({"layers": len(profile.layers), "kernel_ms": round(profile.total_us / 1e3, 3),
                "slowest": [{"node": r.name, "op": r.layer.layer_type, "precision": r.precision,
                             "ms": round(r.time_us / 1e3, 4)} for r in profile.layers[:shown]],
                "unmatched_convs": list(profile.unmatched_convs) if profile.detailed else []})
    if profile.note:
        out["profile_note"] = profile.note
    return out
