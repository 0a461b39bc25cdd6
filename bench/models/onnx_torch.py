"""A differentiable interpreter of an ONNX graph in PyTorch.

`OnnxModule(model)` turns the graph's float initializers into nn.Parameters and its nodes
into an execution plan built once (topological order, parsed attributes, one kernel per
node, and when each intermediate tensor can be dropped). QAT trains those parameters with
fake quantization inserted through taps; the PyTorch engine runs the same module; and
`state_to_onnx` writes trained values back into the ONNX initializers.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import onnx
import onnx.inliner
import torch
from onnx import numpy_helper

from bench.errors import ModelError
from bench.models.onnx_ops.context import TORCH_DTYPES, attribute_values, tensor_from_proto
from bench.models.onnx_plan import ShapeWork, Step, build_steps

Tap = Callable[[str, torch.Tensor], torch.Tensor]

GRAPH_OUTPUT = "<graph output>"  # consumer marker for tensors the graph returns
_SHAPE_CACHE_SIZE = 8  # input shapes whose shape-only values a module remembers

# Input slots whose float values configure an op rather than weigh its input: they stay
# buffers so an optimizer never moves them (BatchNormalization statistics, as in torch).
_CONFIG_SLOTS: dict[str, tuple[int, ...]] = {
    "BatchNormalization": (3, 4), "Resize": (1, 2, 3), "Upsample": (1,),
    "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "Clip": (1, 2), "Pad": (1, 2, 3),
    "Range": (0, 1, 2), "ConstantOfShape": (0,),
}


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ModelError("ONNX model imports no default-domain opset; expected an ai.onnx opset")


def _graph_input(graph: onnx.GraphProto, initializers: Mapping[str, object]) -> str:
    names = [i.name for i in graph.input if i.name not in initializers]
    if len(names) != 1:
        raise ModelError(f"ONNX graph has runtime inputs {names}; expected exactly one (images)")
    return names[0]


def _consumers(graph: onnx.GraphProto) -> dict[str, tuple[str, ...]]:
    users: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node.op_type)
    for out in graph.output:
        users.setdefault(out.name, []).append(GRAPH_OUTPUT)
    return {name: tuple(ops) for name, ops in users.items()}


def _config_tensors(graph: onnx.GraphProto) -> set[str]:
    names = set()
    for node in graph.node:
        for slot in _CONFIG_SLOTS.get(node.op_type, ()):
            if slot < len(node.input):
                names.add(node.input[slot])
    return names


def _is_weight(value: torch.Tensor, name: str, config: set[str]) -> bool:
    return value.is_floating_point() and value.dim() >= 1 and name not in config


def _constant_value(node: onnx.NodeProto) -> torch.Tensor:
    attrs = attribute_values(node)
    if "value" in attrs:
        return attrs["value"]
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32),
                       ("value_int", torch.int64), ("value_ints", torch.int64)):
        if key in attrs:
            return torch.tensor(attrs[key], dtype=dtype)
    raise ModelError(f"Constant node '{node.name}': attributes {sorted(attrs)} are not "
                     "supported; expected value, value_float(s) or value_int(s)")


def _attribute_name(tensor_name: str, prefix: str, taken: set[str]) -> str:
    base = prefix + re.sub(r"\W", "_", tensor_name)
    name, n = base, 1
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


class OnnxModule(torch.nn.Module):
    """An ONNX graph as a torch module whose parameters are the graph's float weights.

    Float initializers of rank >= 1 become nn.Parameters (except tensors that configure an
    op: BatchNormalization mean/var, Resize scales, Q/DQ scales and zero points, ...); the
    other initializers and every Constant node become buffers. `param_names` and
    `buffer_names` map initializer names to attribute names.

    Values that depend only on the input's shape (an exporter's Shape/Gather/Concat chains,
    grids from Range) are computed on the first run for each input shape and reused; call
    `clear_shape_cache()` after editing an integer buffer in place.
    """

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        model = _flat(model)
        graph = model.graph
        initializers = {init.name: init for init in graph.initializer}
        self.input_name: str = _graph_input(graph, initializers)
        self.output_names: tuple[str, ...] = tuple(o.name for o in graph.output)
        self._input_dtype = _declared_input_dtype(graph, self.input_name)
        self.input_dims: tuple[int | None, ...] | None = _declared_input_dims(graph,
                                                                               self.input_name)
        self.param_names: dict[str, str] = {}
        self.buffer_names: dict[str, str] = {}
        self._sources: list[tuple[str, str]] = []  # (tensor name, attribute name)
        taken = set(dir(self))  # attribute names a tensor must not shadow
        constants = self._register_constants(graph, taken)
        known = {**self._register_initializers(graph, initializers, taken), **constants}
        nodes = [n for n in graph.node if n.op_type != "Constant"]
        self._plan: tuple[Step, ...] = build_steps(
            nodes, _default_opset(model), known, _consumers(graph), {self.input_name, *known},
            {*known, *self.output_names})
        self.tensor_names: frozenset[str] = frozenset(
            {self.input_name, *known, *(o for n in nodes for o in n.output if o)})
        # Shape work may rely on Constant nodes and integer initializers, never on values
        # a user or optimizer may change (parameters, float buffers such as Q/DQ scales).
        self._fixed = {*constants, *(n for n in self.buffer_names
                                     if not known[n].is_floating_point())}
        self._dtype_probe = next(iter(self.param_names), None)  # a float weight's name
        self._shape_cache: OrderedDict[tuple, dict[str, torch.Tensor]] = OrderedDict()
        self.register_load_state_dict_post_hook(lambda module, _: module.clear_shape_cache())
        self.set_taps(())

    # --- construction -------------------------------------------------------------

    def _register_initializers(self, graph: onnx.GraphProto,
                               initializers: Mapping[str, onnx.TensorProto], taken: set[str]
                               ) -> dict[str, torch.Tensor]:
        config, known = _config_tensors(graph), {}
        for name, proto in initializers.items():
            value = tensor_from_proto(proto, f"initializer '{name}'")
            attr = _attribute_name(name, "", taken)
            if _is_weight(value, name, config):
                self.register_parameter(attr, torch.nn.Parameter(value))
                self.param_names[name] = attr
            else:
                self.register_buffer(attr, value)
                self.buffer_names[name] = attr
            self._sources.append((name, attr))
            known[name] = value
        return known

    def _register_constants(self, graph: onnx.GraphProto, taken: set[str]
                            ) -> dict[str, torch.Tensor]:
        known = {}
        for node in graph.node:
            if node.op_type == "Constant":
                value = _constant_value(node)
                attr = _attribute_name(node.output[0], "const_", taken)
                self.register_buffer(attr, value, persistent=False)
                self._sources.append((node.output[0], attr))
                known[node.output[0]] = value
        return known

    # --- taps, collection and the shape cache ----------------------------------------

    def set_taps(self, names: Iterable[str]) -> None:
        """Declare the tensors (activations or initializers) that forward's tap sees."""
        wanted = self._checked(names, "tap")
        tapped = [tuple(i for i, n in enumerate(step.inputs) if n in wanted)
                  for step in self._plan]
        self._work = ShapeWork.of(self._plan, self._fixed, self.param_names, self.input_name,
                                  self.output_names, wanted)
        self._full_run = tuple(zip(self._plan, tapped, (s.release for s in self._plan)))
        self._lean_run = _without_static(self._plan, tapped, self._work.static)
        self.clear_shape_cache()

    def to_channels_last(self) -> OnnxModule:
        """Keep the 4-D float weights in channels-last memory (same values): oneDNN's CPU
        convolutions train ~1.4x faster so when the input is channels-last too."""
        with torch.no_grad():
            for tensors in (self._parameters, self._buffers):
                for value in tensors.values():
                    if value is not None and value.dim() == 4 and value.is_floating_point():
                        value.data = value.data.contiguous(memory_format=torch.channels_last)
        self.clear_shape_cache()
        return self

    def clear_shape_cache(self) -> None:
        """Forget the shape-only values computed for earlier input shapes."""
        self._shape_cache.clear()

    def _apply(self, fn, *args, **kwargs):
        self.clear_shape_cache()  # .to(), .cuda(), .half() move or retype the constants
        return super()._apply(fn, *args, **kwargs)

    def _checked(self, names: Iterable[str], purpose: str) -> frozenset[str]:
        wanted = frozenset(names)
        unknown = sorted(wanted - self.tensor_names)
        if unknown:
            raise ModelError(f"{purpose} tensor '{unknown[0]}' is not in the ONNX graph; expected "
                             "an activation, initializer or input name")
        return wanted

    def _remember(self, key: tuple, values: dict[str, torch.Tensor]) -> None:
        for name in self._work.host_frontier:  # read as numbers: no device sync later
            values[name] = values[name].cpu()
        self._shape_cache[key] = values
        while len(self._shape_cache) > _SHAPE_CACHE_SIZE:
            self._shape_cache.popitem(last=False)

    # --- running ---------------------------------------------------------------------

    def forward(self, images: torch.Tensor, tap: Tap | None = None) -> tuple[torch.Tensor, ...]:
        """Graph outputs in graph order; `tap(name, tensor)` replaces each tapped input.

        The tap must return a new tensor rather than modify its argument in place.
        """
        return self._run(images, tap, frozenset())[0]

    def forward_collect(self, images: torch.Tensor, names: Iterable[str], tap: Tap | None = None
                        ) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
        """Graph outputs plus the named intermediate tensors (as produced, before taps)."""
        return self._run(images, tap, self._checked(names, "collect"))

    def _check_input(self, images: torch.Tensor) -> None:
        """As ONNX Runtime does: the input must match every dimension the graph fixes."""
        dims = self.input_dims
        if dims is None:
            return
        if len(dims) != images.dim() or any(d is not None and d != n
                                             for d, n in zip(dims, images.shape)):
            expected = ["?" if d is None else d for d in dims]
            raise ModelError(f"input '{self.input_name}' has shape {list(images.shape)}; the "
                             f"graph declares {expected} (a fixed batch must be fed as is)")

    def _environment(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self._check_input(images)
        env = {}
        params, buffers = self._parameters, self._buffers
        for name, attr in self._sources:  # dict look-ups first: getattr is slow per call
            value = params.get(attr)
            if value is None:
                value = buffers.get(attr)
            env[name] = value if value is not None else getattr(self, attr)
        env[self.input_name] = images.to(self._working_dtype(env)) \
            if images.is_floating_point() else images
        return env

    def _working_dtype(self, env: dict[str, torch.Tensor]) -> torch.dtype:
        """The weights' float type (which module.half() changes), else the declared one."""
        if self._dtype_probe is not None:
            return env[self._dtype_probe].dtype
        return self._input_dtype or torch.float32

    def _run(self, images: torch.Tensor, tap: Tap | None, collect: frozenset[str]
             ) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
        env = self._environment(images)
        # Values made under inference_mode cannot join autograd later: keep them apart.
        key = (tuple(images.shape), images.device, env[self.input_name].dtype,
               torch.is_inference_mode_enabled())
        cached = None if collect & self._work.internal else self._shape_cache.get(key)
        if cached is None:
            got, fresh = _execute(self._full_run, env, tap, collect, self._work.frontier)
            self._remember(key, fresh)
        else:
            env.update(cached)
            got, _ = _execute(self._lean_run, env, tap, collect, frozenset())
        return tuple(env[name] for name in self.output_names), got


_Runs = tuple[tuple[Step, tuple[int, ...], tuple[str, ...]], ...]  # step, tapped slots, frees


def _execute(runs: _Runs, env: dict[str, torch.Tensor], tap: Tap | None,
             collect: frozenset[str], frontier: frozenset[str]
             ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Run the steps over `env`; return the collected tensors and the frontier values."""
    got = {name: env[name] for name in collect if name in env}
    fresh: dict[str, torch.Tensor] = {}
    for step, tapped, release in runs:
        args = [env[name] if name else None for name in step.inputs]
        for i in tapped if tap is not None else ():
            args[i] = tap(step.inputs[i], args[i])
        for name, value in zip(step.outputs, _call(step, args)):
            env[name] = value
            if name in collect:
                got[name] = value
            if name in frontier:
                fresh[name] = value
        for name in release:
            env.pop(name, None)
    return got, fresh


def _without_static(plan: tuple[Step, ...], tapped: list[tuple[int, ...]],
                    static: tuple[bool, ...]) -> _Runs:
    """The plan for a run whose shape-only values come from the cache.

    A skipped step's frees move to the last step that still runs before it: no step after
    that one reads those tensors.
    """
    kept: list[tuple[Step, tuple[int, ...], list[str]]] = []
    for step, taps, is_static in zip(plan, tapped, static):
        if not is_static:
            kept.append((step, taps, list(step.release)))
        elif kept:
            kept[-1][2].extend(step.release)
    return tuple((step, taps, tuple(release)) for step, taps, release in kept)


def trunk(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """The part of `model` that computes the named tensors, which become its outputs: the
    nodes they depend on (in graph order), the initializers those read, the image input.
    QAT trains on it, so that what a model does after its head (decoding, an NMS op the
    interpreter lacks, as YOLOv7's --end2end exports have) never has to run. ModelError
    for a name the graph does not have."""
    model = _flat(model)
    graph = model.graph
    wanted = list(dict.fromkeys(names))
    producer = {out: node for node in graph.node for out in node.output if out}
    sources = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    unknown = [n for n in wanted if n not in producer and n not in sources]
    if unknown:
        raise ModelError(f"tensor '{unknown[0]}' is not in the ONNX graph; expected an output"
                         " of one of its nodes")
    needed: set[int] = set()
    stack = [producer[n] for n in wanted if n in producer]
    while stack:
        node = stack.pop()
        if id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(producer[i] for i in node.input if i in producer)
    nodes = [n for n in graph.node if id(n) in needed]
    used = {i for n in nodes for i in n.input} | set(wanted)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    kept_inits = [i for i in graph.initializer if i.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept_inits)
    # an initializer an older exporter also lists as a graph input goes with its initializer
    # (left behind, it would read as a second runtime input)
    dropped = {i.name for i in graph.initializer} - {i.name for i in kept_inits}
    kept_inputs = [i for i in graph.input if i.name not in dropped]
    del out.graph.input[:]
    out.graph.input.extend(kept_inputs)
    del out.graph.output[:]
    out.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in wanted)
    return out


def _flat(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its local functions inlined (the dynamo exporter may keep some)."""
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    for node in model.graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute):
            raise ModelError(f"{node.op_type} node '{node.name}': control flow (subgraphs) is "
                             "not supported; expected a flat graph")
    return model


def _declared_input_dims(graph: onnx.GraphProto, name: str) -> tuple[int | None, ...] | None:
    """The declared input's dims (an int where fixed, None where symbolic); None when the
    graph declares no shape at all."""
    declared = next(i for i in graph.input if i.name == name)
    tensor_type = declared.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                 for d in tensor_type.shape.dim)


def _declared_input_dtype(graph: onnx.GraphProto, name: str) -> torch.dtype | None:
    declared = next(i for i in graph.input if i.name == name)
    dtype = TORCH_DTYPES.get(declared.type.tensor_type.elem_type)
    return dtype if dtype is not None and dtype.is_floating_point else None


def _call(step: Step, args: list[torch.Tensor | None]) -> tuple[torch.Tensor, ...]:
    try:
        out = step.kernel(*args)
    except (RuntimeError, ValueError, IndexError, TypeError) as error:
        shapes = [tuple(a.shape) if a is not None else None for a in args]
        text = str(error).strip()
        first_line = text.splitlines()[0] if text else repr(error)
        raise ModelError(f"{step.label} failed on input shapes {shapes}: {first_line}") from error
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def state_to_onnx(module: OnnxModule, model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose initializers hold the module's current parameter values."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    by_name = {init.name: init for init in out.graph.initializer}
    for init_name, attr in module.param_names.items():
        if init_name not in by_name:
            raise ModelError(f"parameter '{init_name}' has no initializer in the ONNX model; "
                             "expected the model the module was built from")
        old = by_name[init_name]
        value = np.ascontiguousarray(getattr(module, attr).detach().cpu().numpy())
        if tuple(old.dims) != value.shape:
            raise ModelError(f"parameter '{init_name}' has shape {value.shape}; expected "
                             f"{tuple(old.dims)} as in the ONNX initializer")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(old.data_type)
        old.CopyFrom(numpy_helper.from_array(value.astype(dtype), init_name))
    return out
