"""|x| histograms of a model's activations over a calibration set, run with ONNX Runtime (CPU).

The named tensors become extra graph outputs; each batch is run once, every fetched
activation is folded into its tensor's AbsHistogram and released before the next batch,
so memory is O(bins) per tensor plus one batch's activations (not the whole set's, which
is what makes ONNX Runtime's own histogram calibrator need ~10 GB at 640x640).

A model whose batch dimension is fixed (the official exporter's default is 1) is fed
batches of exactly that size whatever size the caller's batches have: images are regrouped,
and a short last group is padded with copies of its own images whose activations are left
out of the histograms.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, shape_inference

from bench.errors import InputDataError, ModelError
from bench.onnx_file import load_model
from bench.progress import bar as progress_bar
from bench.quant.histogram import AbsHistogram

_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
}


def collect_histograms(
    model_path: Path,
    tensor_names: list[str],
    batches: Iterable[np.ndarray],
    *,
    bins: int = 2048,
    progress: bool = True,
    total: int | None = None,
) -> dict[str, AbsHistogram]:
    """Histogram of |x| of each named tensor over all batches (fed to the model's one input).

    A name may be an intermediate tensor or the graph input itself. `total` is the number
    of batches, for the progress bar only.
    """
    names = list(dict.fromkeys(tensor_names))
    session, graph_input = _probing_session(Path(model_path), names)
    fetched = [n for n in names if n != graph_input.name]
    hists = {name: AbsHistogram(bins, name=name) for name in names}
    seen = 0
    bar = progress_bar(batches, total=total, enabled=progress, desc="calibration", unit="batch")
    for batch, real in _fitted(bar, fixed_batch(graph_input)):
        feed = _as_input(batch, graph_input)
        if graph_input.name in hists:
            hists[graph_input.name].update(feed[:real])
        _run_and_update(session, graph_input.name, feed, fetched, hists, real)
        seen += 1
    if seen == 0:
        raise InputDataError(f"empty calibration set: no batches given for {model_path}")
    return hists


def fixed_batch(graph_input: onnx.ValueInfoProto) -> int | None:
    """The input's batch dimension when the model fixes it, else None."""
    dims = graph_input.type.tensor_type.shape.dim
    if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
        return int(dims[0].dim_value)
    return None


def _fitted(batches: Iterable[np.ndarray], size: int | None
            ) -> Iterator[tuple[np.ndarray, int]]:
    """(batch, how many of its leading images are real): as given when the batch is
    dynamic, else regrouped into batches of exactly `size`, the last padded by repetition."""
    if size is None:
        for batch in batches:
            yield batch, len(batch)
        return
    pending: list[np.ndarray] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += len(batch)
        while held >= size:
            joined = np.concatenate(pending)
            yield joined[:size], size
            pending, held = [joined[size:]], held - size
    if held:
        rest = np.concatenate(pending)
        yield np.resize(rest, (size, *rest.shape[1:])), held


def _probing_session(path: Path, names: list[str]) -> tuple[object, onnx.ValueInfoProto]:
    """A session that also outputs the named tensors, and a copy of the model's input.

    Nothing here keeps the ModelProto alive, so only the session holds the weights while
    batches run.
    """
    model = _load(path)
    graph_input = onnx.ValueInfoProto()
    graph_input.CopyFrom(_single_input(model, path))
    _add_outputs(model, [n for n in names if n != graph_input.name], path)
    return _session(model), graph_input


def _load(path: Path) -> onnx.ModelProto:
    return load_model(Path(path))


def _single_input(model: onnx.ModelProto, path: Path) -> onnx.ValueInfoProto:
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise ModelError(f"model {path}: has inputs {names}, expected exactly one image input")
    return inputs[0]


def _add_outputs(model: onnx.ModelProto, names: list[str], path: Path) -> None:
    """Make the named tensors outputs of the graph too, typed from shape inference."""
    _check_activations(model, names, path)
    infos = _value_infos(shape_inference.infer_shapes(model).graph)
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(_float_info(infos.get(name), name, path))


def _float_info(info: onnx.ValueInfoProto | None, name: str, path: Path) -> onnx.ValueInfoProto:
    elem_type = info.type.tensor_type.elem_type if info is not None else None
    if elem_type not in _FLOAT_TYPES:
        found = "unknown" if elem_type is None else onnx.TensorProto.DataType.Name(elem_type)
        raise ModelError(f"tensor {name!r} in {path}: type {found}, expected a float activation")
    return info


def _check_activations(model: onnx.ModelProto, names: list[str], path: Path) -> None:
    produced = {out for node in model.graph.node for out in node.output}
    weights = {init.name for init in model.graph.initializer}
    for name in names:
        if name in weights:
            raise ModelError(f"tensor {name!r} in {path}: is a weight, expected an activation")
        if name not in produced:
            raise ModelError(f"tensor {name!r}: not found in {path} (no node produces it)")


def _value_infos(graph: onnx.GraphProto) -> dict[str, onnx.ValueInfoProto]:
    infos = [*graph.input, *graph.value_info, *graph.output]
    return {v.name: v for v in infos if v.type.HasField("tensor_type")}


def _session(model: onnx.ModelProto):
    import onnxruntime as ort  # lazily: only calibration needs the runtime here

    options = ort.SessionOptions()
    # Without the arena, each batch's activations go back to the OS when released instead
    # of being pooled at their peak size for the rest of the run.
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:
        raise ModelError(f"ONNX Runtime cannot load the calibration model: {err}") from err


def _as_input(batch: np.ndarray, graph_input: onnx.ValueInfoProto) -> np.ndarray:
    tensor_type = graph_input.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
    feed = np.ascontiguousarray(batch, dtype=dtype)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    fits = len(dims) == feed.ndim and all(
        d in (None, n) for d, n in zip(dims, feed.shape, strict=True)
    )
    if not fits:
        expected = ["?" if d is None else d for d in dims]
        raise InputDataError(
            f"calibration batch for input {graph_input.name!r}: shape {list(feed.shape)}, "
            f"expected {expected}"
        )
    return feed


def _run_and_update(
    session, input_name: str, feed: np.ndarray, names: list[str], hists: dict, real: int
) -> None:
    if not names:
        return
    try:
        outputs = session.run(names, {input_name: feed})
    except Exception as err:
        raise ModelError(f"ONNX Runtime failed on a calibration batch: {err}") from err
    # Pop so that each activation is freed as soon as it is counted.
    for name in reversed(names):
        hists[name].update(_real_rows(outputs.pop(), len(feed), real))


def _real_rows(value: np.ndarray, fed: int, real: int) -> np.ndarray:
    """The activation of the real images only, when its first axis is the batch's."""
    if real < fed and value.ndim and value.shape[0] == fed:
        return value[:real]
    return value
