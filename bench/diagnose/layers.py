"""Per-tensor quantization error: SQNR and cosine similarity between an FP32 model and a
Q/DQ model of it, at every quantized activation tensor.

The method is Polygraphy's layerwise comparison (``polygraphy run --onnxrt
--onnx-outputs mark all``): mark intermediate tensors as graph outputs of both models, run
the same inputs through ONNX Runtime and compare tensor by tensor. What is compared at a
tensor ``t`` is what its quantized consumers read: in the FP32 model ``t``, in the Q/DQ
model the DequantizeLinear output of ``t``'s QuantizeLinear, so the figure holds both the
error carried in from upstream and ``t``'s own rounding and clipping. Images stream one at
a time and only four running sums per tensor are kept, so memory does not grow with the
number of images.

Marking a tensor as an output stops ONNX Runtime from fusing the nodes around it, so the
Q/DQ model's values are those of its Q/DQ graph run in float (the reference semantics of
the file), not of the fused int8 kernels; the two differ by accumulation rounding only.

SQNR = 10 log10(sum x^2 / sum (x - q)^2) over all elements of all images (inf when q == x);
cosine = sum x q / sqrt(sum x^2 sum q^2).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np
import onnx

from bench.errors import InputDataError, ModelError
from bench.onnx_file import load_model
from bench.quant.placement import GraphIndex, node_label
from bench.quant.qdq import quantized_tensor_set


@dataclass(frozen=True)
class LayerError:
    """The error at one tensor. order: position of its producer in the FP32 graph
    (-1 for a graph input), so rows of different Q/DQ models of one model line up."""

    order: int
    tensor: str
    node: str
    op: str
    sqnr_db: float
    cosine: float


def _load(path: str | Path) -> onnx.ModelProto:
    return load_model(Path(path))


def _read_point(tensor: str, index: GraphIndex) -> str:
    """What the quantized consumers of `tensor` read in the Q/DQ graph: its DQ output."""
    for q, _ in index.consumers.get(tensor, ()):
        if q.op_type == "QuantizeLinear":
            for dq, _ in index.consumers.get(q.output[0], ()):
                if dq.op_type == "DequantizeLinear":
                    return dq.output[0]
    return tensor


def _check_tensors(tensors: Sequence[str], fp32: GraphIndex, qdq: GraphIndex, inputs: set[str],
                   paths: tuple[Path, Path]) -> None:
    for tensor, index, path in ((t, i, p) for t in tensors for i, p in zip((fp32, qdq), paths)):
        if tensor not in index.producer and tensor not in inputs:
            raise ModelError(
                f"layer_errors: tensor {tensor!r} is not computed in {path}; expected an "
                "activation tensor of the FP32 model that the Q/DQ model also has"
            )


def _session(model: onnx.ModelProto, outputs: Sequence[str], threads: int | None):
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(
        onnx.helper.make_empty_tensor_value_info(t) for t in dict.fromkeys(outputs)
        if t not in present
    )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(probe.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def _images(batches: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    for batch in batches:
        batch = np.asarray(batch)
        if batch.dtype == np.uint8:
            batch = batch.astype(np.float32) / 255.0
        for i in range(len(batch)):
            yield np.ascontiguousarray(batch[i:i + 1], dtype=np.float32)


def _values(session, feed: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    wanted = [n for n in dict.fromkeys(names) if n not in feed]
    got = dict(zip(wanted, session.run(wanted, feed)))
    return {n: feed[n] if n in feed else got[n] for n in names}


def _accumulate(sums: np.ndarray, ref: np.ndarray, got: np.ndarray, tensor: str) -> None:
    if ref.shape != got.shape:
        raise ModelError(f"layer_errors: tensor {tensor!r} has shape {got.shape} in the Q/DQ "
                         f"model and {ref.shape} in the FP32 model; expected the same")
    x, q = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    diff = x - q
    sums += (x @ x, diff @ diff, x @ q, q @ q)


def _row(order: int, tensor: str, index: GraphIndex, sums: np.ndarray) -> LayerError:
    signal, noise, dot, power = (float(v) for v in sums)
    sqnr = math.inf if noise == 0 else (
        -math.inf if signal == 0 else 10 * math.log10(signal / noise))
    norm = math.sqrt(signal * power)
    cosine = dot / norm if norm > 0 else float(signal == power)
    node = index.producer.get(tensor)
    label, op = (node_label(node), node.op_type) if node is not None else (tensor, "input")
    return LayerError(order, tensor, label, op, sqnr, cosine)


def layer_errors(
    fp32_path: str | Path,
    qdq_path: str | Path,
    tensors: Sequence[str] | None,
    batches: Iterable[np.ndarray],
    *,
    threads: int | None = None,
) -> list[LayerError]:
    """SQNR and cosine per tensor, in FP32 graph order.

    tensors: activation tensor names of the FP32 model; None means every activation
    tensor that carries a Q/DQ pair in the Q/DQ model. batches: NCHW float32 (or uint8
    pixels, divided by 255) arrays, run one image at a time.
    Raises ModelError for a tensor either model does not compute and InputDataError when
    `batches` holds no image.
    """
    paths = (Path(fp32_path), Path(qdq_path))
    fp32, qdq = _load(paths[0]), _load(paths[1])
    fp_index, q_index = GraphIndex(fp32.graph), GraphIndex(qdq.graph)
    inputs = {i.name for i in fp32.graph.input} - set(fp_index.initializers)
    if tensors is None:
        tensors = sorted(quantized_tensor_set(qdq, activations_only=True))
    tensors = sorted(dict.fromkeys(tensors), key=fp_index.order_of)
    _check_tensors(tensors, fp_index, q_index, inputs, paths)
    read = {t: _read_point(t, q_index) for t in tensors}
    fp_session = _session(fp32, tensors, threads)
    q_session = _session(qdq, list(read.values()), threads)
    feed_name = fp_session.get_inputs()[0].name
    sums = {t: np.zeros(4) for t in tensors}
    seen = 0
    for image in _images(batches):
        feed = {feed_name: image}
        ref = _values(fp_session, feed, tensors)
        got = _values(q_session, feed, list(read.values()))
        for t in tensors:
            _accumulate(sums[t], ref[t], got[read[t]], t)
        seen += 1
    if not seen:
        raise InputDataError("layer_errors: batches held no image; expected at least one")
    return [_row(fp_index.order_of(t)[0], t, fp_index, sums[t]) for t in tensors]


def write_layers_csv(rows: Iterable[LayerError], path: str | Path) -> Path:
    """One line per tensor: order, tensor, node, op, sqnr_db, cosine (layers.csv)."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([f.name for f in fields(LayerError)])
        for row in rows:
            values = astuple(row)
            writer.writerow([*values[:4], f"{row.sqnr_db:.3f}", f"{row.cosine:.6f}"])
    return path


def worst(rows: Iterable[LayerError], count: int = 5) -> list[LayerError]:
    """The `count` rows with the lowest SQNR."""
    return sorted(rows, key=lambda r: r.sqnr_db)[:count]


def plot_layers(results_by_method: Mapping[str, Sequence[LayerError]], path: str | Path,
                labelled: int = 5) -> Path:
    """SQNR per tensor in graph order, one line per method; the `labelled` worst tensors
    (lowest SQNR over all methods) are named at their lowest point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    orders = sorted({(r.order, r.tensor) for rows in results_by_method.values() for r in rows})
    x_of = {key: i for i, key in enumerate(orders)}
    fig, ax = plt.subplots(figsize=(11, 4.5))
    finite = [r.sqnr_db for rows in results_by_method.values() for r in rows
              if math.isfinite(r.sqnr_db)]
    top = max(finite, default=60.0) + 5
    for method, rows in results_by_method.items():
        ordered = sorted(rows, key=lambda r: (r.order, r.tensor))
        xs = [x_of[(r.order, r.tensor)] for r in ordered]
        ys = [min(r.sqnr_db, top) for r in ordered]
        ax.plot(xs, ys, marker=".", linewidth=1, label=method)
    all_rows = [r for rows in results_by_method.values() for r in rows]
    named: list[LayerError] = []
    for row in worst(all_rows, len(all_rows)):
        if len(named) == labelled:
            break
        if all(row.tensor != n.tensor for n in named):
            named.append(row)
    for k, row in enumerate(sorted(named, key=lambda r: r.order)):  # staggered, no overlap
        ax.annotate(f"{row.node} ({row.sqnr_db:.1f} dB)",
                    (x_of[(row.order, row.tensor)], row.sqnr_db), fontsize=7,
                    xytext=(-120, -14 - 11 * k), textcoords="offset points",
                    arrowprops={"arrowstyle": "-", "linewidth": 0.5, "color": "0.4"})
    low = min(finite, default=0.0)
    ax.set_ylim(low - 8 - 1.5 * len(named), top)
    ax.set_xlabel("quantized tensor (graph order)")
    ax.set_ylabel("SQNR vs FP32 (dB)")
    ax.set_title("Per-tensor quantization error")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
