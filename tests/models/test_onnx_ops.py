"""Each ONNX op of the interpreter against ONNX Runtime, at batch 1 and batch 3."""

import numpy as np
import pytest
from onnx import TensorProto, helper
from ort_compare import FLOAT, compare_batches, init, single_input_model

from bench.errors import ModelError
from bench.models.onnx_torch import OnnxModule

N = helper.make_node
I64, I32, BOOL = TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL
INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
RNG = np.random.default_rng(42)


def w(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def i64(*values):
    return np.array(values, dtype=np.int64)


def f32(*values):
    return np.array(values, dtype=np.float32)


# --- convolutions and normalization ----------------------------------------------------

def conv_pads_strides():
    nodes = [N("Conv", ["x", "W", "B"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2],
               kernel_shape=[3, 3])]
    return single_input_model(nodes, [3, 9, 9], {"y": FLOAT},
                              [init("W", w(4, 3, 3, 3)), init("B", w(4))]), [3, 9, 9]


def conv_groups_dilation_asymmetric_pads():
    nodes = [N("Conv", ["x", "W"], ["y"], group=2, dilations=[2, 1], pads=[0, 1, 2, 1],
               strides=[1, 2])]
    return single_input_model(nodes, [4, 9, 10], {"y": FLOAT}, [init("W", w(6, 2, 3, 3))]), \
        [4, 9, 10]


def conv_auto_pad():
    nodes = [N("Conv", ["x", "W", "B"], [f"y_{mode}"], auto_pad=mode, strides=[2, 2])
             for mode in ("SAME_UPPER", "SAME_LOWER", "VALID")]
    outputs = {f"y_{m}": FLOAT for m in ("SAME_UPPER", "SAME_LOWER", "VALID")}
    return single_input_model(nodes, [3, 9, 8], outputs,
                              [init("W", w(4, 3, 3, 3)), init("B", w(4))]), [3, 9, 8]


def conv_1d_depthwise():
    nodes = [N("Conv", ["x", "W", "B"], ["y"], group=3, pads=[1, 1])]
    return single_input_model(nodes, [3, 10], {"y": FLOAT},
                              [init("W", w(3, 1, 3)), init("B", w(3))]), [3, 10]


def conv_transpose_output_padding():
    nodes = [N("ConvTranspose", ["x", "W", "B"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1],
               output_padding=[1, 1])]
    return single_input_model(nodes, [3, 5, 5], {"y": FLOAT},
                              [init("W", w(3, 4, 3, 3)), init("B", w(4))]), [3, 5, 5]


def conv_transpose_groups_asymmetric():
    nodes = [N("ConvTranspose", ["x", "W"], ["y"], group=2, strides=[2, 1],
               pads=[0, 1, 1, 0], dilations=[1, 2])]
    return single_input_model(nodes, [4, 5, 6], {"y": FLOAT}, [init("W", w(4, 3, 3, 3))]), \
        [4, 5, 6]


def conv_transpose_output_shape():
    nodes = [N("ConvTranspose", ["x", "W"], ["y"], strides=[2, 2], output_shape=[10, 11])]
    return single_input_model(nodes, [3, 5, 5], {"y": FLOAT}, [init("W", w(3, 2, 3, 3))]), \
        [3, 5, 5]


def batch_norm():
    var = np.abs(w(4)) + 0.5
    nodes = [N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)]
    inits = [init("s", w(4)), init("b", w(4)), init("m", w(4)), init("v", var)]
    return single_input_model(nodes, [4, 5, 5], {"y": FLOAT}, inits), [4, 5, 5]


def instance_and_layer_norm():
    nodes = [N("InstanceNormalization", ["x", "s", "b"], ["inorm"], epsilon=1e-4),
             N("LayerNormalization", ["x", "g", "b2"], ["lnorm"], axis=-2)]
    inits = [init("s", w(4)), init("b", w(4)), init("g", w(5, 6)), init("b2", w(5, 6))]
    return single_input_model(nodes, [4, 5, 6], {"inorm": FLOAT, "lnorm": FLOAT}, inits), \
        [4, 5, 6]


# --- element-wise ----------------------------------------------------------------------

ACTIVATIONS = [("Relu", {}), ("LeakyRelu", {"alpha": 0.1}), ("Sigmoid", {}),
               ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {}), ("Mish", {}),
               ("Tanh", {}), ("Softplus", {}), ("Elu", {"alpha": 0.7}), ("Selu", {}),
               ("Celu", {"alpha": 1.3}), ("Softsign", {}), ("Erf", {}), ("Sign", {}),
               ("ThresholdedRelu", {"alpha": 0.5}), ("Identity", {}), ("Dropout", {})]


def activations():
    nodes = [N(op, ["x"], [f"{op}_y"], **attrs) for op, attrs in ACTIVATIONS]
    nodes.append(N("PRelu", ["x", "slope"], ["prelu"]))
    nodes += [N("Gelu", ["x"], ["gelu"]), N("Gelu", ["x"], ["gelu_t"], approximate="tanh")]
    outputs = {f"{op}_y": FLOAT for op, _ in ACTIVATIONS} | {"prelu": FLOAT, "gelu": FLOAT,
                                                             "gelu_t": FLOAT}
    return single_input_model(nodes, [4, 3, 5], outputs, [init("slope", w(4, 1, 1))],
                              opset=20), [4, 3, 5]


def swish_opset24():
    nodes = [N("Swish", ["x"], ["silu"]), N("Swish", ["x"], ["swish"], alpha=0.7)]
    return single_input_model(nodes, [4, 5], {"silu": FLOAT, "swish": FLOAT}, opset=24), [4, 5]


def clips():
    nodes = [N("Clip", ["x", "lo", "hi"], ["both"]), N("Clip", ["x", "", "hi"], ["upper"]),
             N("Clip", ["x"], ["none"])]
    inits = [init("lo", np.float32(-0.5)), init("hi", np.float32(0.7))]
    return single_input_model(nodes, [4, 5], {"both": FLOAT, "upper": FLOAT, "none": FLOAT},
                              inits, opset=13), [4, 5]


def clip_attributes_opset6():
    nodes = [N("Clip", ["x"], ["y"], min=-0.2, max=0.3)]
    return single_input_model(nodes, [4, 5], {"y": FLOAT}, opset=6), [4, 5]


def arithmetic():
    nodes = [
        N("Mul", ["x", "c"], ["mul"]), N("Add", ["mul", "x"], ["add"]),
        N("Sub", ["add", "c"], ["sub"]), N("Div", ["sub", "pos"], ["div"]),
        N("Abs", ["x"], ["abs"]), N("Add", ["abs", "one"], ["abs1"]),
        N("Pow", ["abs1", "e"], ["pow"]), N("Pow", ["x", "three"], ["pow_int"]),
        N("Sqrt", ["abs"], ["sqrt"]), N("Exp", ["x"], ["exp"]), N("Log", ["abs1"], ["log"]),
        N("Neg", ["x"], ["neg"]), N("Mul", ["x", "three_f"], ["x3"]),
        N("Floor", ["x3"], ["floor"]), N("Ceil", ["x3"], ["ceil"]), N("Round", ["x3"], ["round"]),
        N("Reciprocal", ["abs1"], ["recip"]), N("Min", ["x", "c", "k"], ["min"]),
        N("Max", ["x", "c"], ["max"]), N("Sum", ["x", "c", "k"], ["sum"]),
        N("Mean", ["x", "c"], ["mean"]), N("Mod", ["x3", "pos"], ["fmod"], fmod=1),
        N("Round", ["ties"], ["round_ties"]),
    ]
    inits = [init("c", w(1, 4, 1, 1)), init("pos", np.abs(w(4, 1, 1)) + 0.5),
             init("one", f32(1.0)), init("e", np.float32(2.5)), init("three", i64(3)),
             init("three_f", np.float32(3.0)), init("k", np.float32(0.3)),
             init("ties", f32(0.5, 1.5, 2.5, -0.5, -1.5))]
    names = [n.output[0] for n in nodes if n.output[0] not in ("abs1",)]
    return single_input_model(nodes, [4, 3, 3], {n: FLOAT for n in names}, inits), [4, 3, 3]


def logic_and_cast():
    nodes = [
        N("Greater", ["x", "c"], ["gt"]), N("Less", ["x", "c"], ["lt"]),
        N("GreaterOrEqual", ["x", "c"], ["ge"]), N("LessOrEqual", ["x", "c"], ["le"]),
        N("Mul", ["x", "three"], ["x3"]), N("Cast", ["x3"], ["xi"], to=I64),
        N("Equal", ["xi", "zero"], ["eq"]), N("Not", ["gt"], ["not"]),
        N("And", ["gt", "eq"], ["and"]), N("Or", ["lt", "eq"], ["or"]),
        N("Xor", ["gt", "eq"], ["xor"]), N("Where", ["gt", "x", "c"], ["where"]),
        N("Cast", ["x"], ["xb"], to=BOOL), N("Cast", ["x3"], ["x32"], to=I32),
        N("Cast", ["xi"], ["back"], to=TensorProto.FLOAT), N("CastLike", ["xi", "x"], ["like"]),
    ]
    outputs = {"gt": BOOL, "lt": BOOL, "ge": BOOL, "le": BOOL, "xi": I64, "eq": BOOL,
               "not": BOOL, "and": BOOL, "or": BOOL, "xor": BOOL, "where": FLOAT, "xb": BOOL,
               "x32": I32, "back": FLOAT, "like": FLOAT}
    inits = [init("c", w(4, 1)), init("three", np.float32(3.0)), init("zero", i64(0))]
    return single_input_model(nodes, [4, 5], outputs, inits), [4, 5]


# --- shape and indexing ----------------------------------------------------------------

def concat_and_split_opset11():
    nodes = [N("Split", ["x"], ["s0", "s1", "s2"], axis=1, split=[1, 2, 1]),
             N("Concat", ["s2", "s0"], ["c"], axis=1), N("Split", ["x"], ["e0", "e1"], axis=-1)]
    outputs = {"s0": FLOAT, "s1": FLOAT, "s2": FLOAT, "c": FLOAT, "e0": FLOAT, "e1": FLOAT}
    return single_input_model(nodes, [4, 3, 6], outputs, opset=11), [4, 3, 6]


def split_input_and_num_outputs():
    nodes = [N("Split", ["x", "sizes"], ["a", "b"], axis=1),
             N("Split", ["x"], ["p", "q", "r"], axis=3, num_outputs=3)]
    outputs = {n: FLOAT for n in ("a", "b", "p", "q", "r")}
    return single_input_model(nodes, [4, 3, 5], outputs, [init("sizes", i64(3, 1))],
                              opset=18), [4, 3, 5]


def slices():
    cases = {"fwd": ([1, -3], [INT64_MAX, -1], [1, 3], [1, 2]),
             "rev": ([-1], [INT64_MIN], [2], [-1]), "rev2": ([5], [0], [-1], [-2]),
             "big": ([0], [100], [1], None)}
    nodes, inits = [], []
    for name, (starts, ends, axes, steps) in cases.items():
        inputs = ["x", f"{name}_s", f"{name}_e", f"{name}_a"] + ([f"{name}_t"] if steps else [])
        nodes.append(N("Slice", inputs, [name]))
        inits += [init(f"{name}_s", i64(*starts)), init(f"{name}_e", i64(*ends)),
                  init(f"{name}_a", i64(*axes))] + ([init(f"{name}_t", i64(*steps))]
                                                    if steps else [])
    return single_input_model(nodes, [4, 5, 7], {n: FLOAT for n in cases}, inits), [4, 5, 7]


def slice_attributes_opset9():
    nodes = [N("Slice", ["x"], ["y"], starts=[0, 1], ends=[2, -1], axes=[1, 2])]
    return single_input_model(nodes, [4, 5], {"y": FLOAT}, opset=9), [4, 5]


def gathers():
    nodes = [N("Gather", ["x", "scalar"], ["g0"], axis=1),
             N("Gather", ["x", "idx"], ["g1"], axis=3),
             N("Gather", ["x", "vector"], ["g3"], axis=-1),
             N("GatherElements", ["x", "el"], ["g2"], axis=2)]
    el = RNG.integers(-3, 3, size=(1, 4, 2, 5))
    inits = [init("scalar", np.int64(-2)), init("idx", np.array([[0, -1], [1, 2]])),
             init("vector", i64(4, 0, -5)), init("el", el)]
    outputs = {"g0": FLOAT, "g1": FLOAT, "g2": FLOAT, "g3": FLOAT}
    return single_input_model(nodes, [4, 3, 5], outputs, inits), [4, 3, 5]


def reshape_transpose_flatten():
    nodes = [N("Reshape", ["x", "shape"], ["r"]), N("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
             N("Transpose", ["x"], ["t_default"]), N("Flatten", ["x"], ["f2"], axis=2),
             N("Flatten", ["x"], ["f0"], axis=0), N("Flatten", ["x"], ["f_neg"], axis=-1)]
    outputs = {n: FLOAT for n in ("r", "t", "t_default", "f2", "f0", "f_neg")}
    return single_input_model(nodes, [4, 3, 2], outputs, [init("shape", i64(0, -1, 4))]), \
        [4, 3, 2]


def squeeze_unsqueeze_opset11():
    nodes = [N("Unsqueeze", ["x"], ["u"], axes=[0, -1]), N("Squeeze", ["u"], ["s"], axes=[0]),
             N("Squeeze", ["x"], ["all"])]
    return single_input_model(nodes, [4, 1, 3], {"u": FLOAT, "s": FLOAT, "all": FLOAT},
                              opset=11), [4, 1, 3]


def squeeze_unsqueeze_inputs_opset13():
    nodes = [N("Unsqueeze", ["x", "a"], ["u"]), N("Squeeze", ["u", "a"], ["s"]),
             N("Squeeze", ["x", "one"], ["s1"])]
    inits = [init("a", i64(1, -1)), init("one", i64(2))]
    return single_input_model(nodes, [4, 1, 3], {"u": FLOAT, "s": FLOAT, "s1": FLOAT}, inits,
                              opset=13), [4, 1, 3]


def dynamic_shape_arithmetic():
    nodes = [N("Shape", ["x"], ["shape"]), N("Shape", ["x"], ["mid"], start=1, end=3),
             N("Gather", ["shape", "zero"], ["b"], axis=0),
             N("Unsqueeze", ["b", "axes0"], ["ub"]), N("Concat", ["ub", "minus1"], ["new"], axis=0),
             N("Reshape", ["x", "new"], ["flat"]), N("Size", ["x"], ["size"]),
             N("Div", ["size", "two"], ["half"]), N("Cast", ["mid"], ["midf"], to=FLOAT),
             N("Mul", ["b", "two"], ["b2"]), N("Sub", ["b2", "two"], ["b2m"])]
    inits = [init("zero", np.int64(0)), init("axes0", i64(0)), init("minus1", i64(-1)),
             init("two", np.int64(2))]
    outputs = {"flat": FLOAT, "mid": I64, "size": I64, "half": I64, "midf": FLOAT, "b2m": I64}
    return single_input_model(nodes, [3, 4, 5], outputs, inits, opset=15), [3, 4, 5]


def constants_expand_tile_range():
    nodes = [
        N("Constant", [], ["ct"], value=helper.make_tensor("v", FLOAT, [4, 1, 1],
                                                          w(4).tolist())),
        N("Constant", [], ["cf"], value_float=0.25),
        N("Constant", [], ["cfs"], value_floats=[1.0, 2.0]),
        N("Constant", [], ["ci"], value_int=3),
        N("Constant", [], ["cis"], value_ints=[1, 1, 3, 1]),
        N("Add", ["x", "ct"], ["xa"]), N("Mul", ["xa", "cf"], ["xm"]),
        N("Shape", ["x"], ["shape"]), N("ConstantOfShape", ["shape"], ["full"],
                                        value=helper.make_tensor("v", I64, [1], [7])),
        N("ConstantOfShape", ["shape"], ["zeros"]),
        N("Expand", ["ct", "shape"], ["expanded"]), N("Expand", ["x", "cis"], ["both_ways"]),
        N("Tile", ["x", "reps"], ["tiled"]),
        N("Gather", ["shape", "ci"], ["w_dim"], axis=0), N("Cast", ["w_dim"], ["w_f"], to=FLOAT),
        N("Range", ["start", "w_f", "half"], ["rng_f"]), N("Range", ["zero", "w_dim", "ci"],
                                                           ["rng_i"]),
    ]
    inits = [init("reps", i64(1, 2, 1, 3)), init("start", np.float32(0.0)),
             init("half", np.float32(0.5)), init("zero", np.int64(0))]
    outputs = {"xm": FLOAT, "cfs": FLOAT, "full": I64, "zeros": FLOAT, "expanded": FLOAT,
               "both_ways": FLOAT, "tiled": FLOAT, "rng_f": FLOAT, "rng_i": I64}
    return single_input_model(nodes, [4, 1, 5], outputs, inits), [4, 1, 5]


def pads():
    nodes = [N("Pad", ["x", "p", "v"], ["const"]), N("Pad", ["x", "p2"], ["reflect"],
                                                     mode="reflect"),
             N("Pad", ["x", "p2"], ["edge"], mode="edge"),
             N("Pad", ["x", "p2"], ["wrap"], mode="wrap"),
             N("Pad", ["x", "p0"], ["unpadded"], mode="reflect"),
             N("Pad", ["x", "p_axes", "", "axes"], ["on_axes"])]
    inits = [init("p", i64(0, 0, 1, 2, 0, 1, 2, 1)), init("v", np.float32(1.5)),
             init("p2", i64(0, 0, 2, 1, 0, 0, 1, 2)), init("p_axes", i64(1, 0, 2, 3)),
             init("axes", i64(3, -2)), init("p0", np.zeros(8, np.int64))]
    outputs = {n: FLOAT for n in ("const", "reflect", "edge", "wrap", "unpadded", "on_axes")}
    return single_input_model(nodes, [2, 4, 5], outputs, inits, opset=19), [2, 4, 5]


def scatters():
    nodes = [N("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
             N("Slice", ["t", "s0", "s2", "ax0"], ["part"]), N("Mul", ["part", "two"], ["upd"]),
             N("ScatterND", ["t", "where", "upd"], ["nd"]),
             N("Slice", ["t", "s02", "s21", "ax01"], ["t_part"]),
             N("ScatterElements", ["t", "el", "t_part"], ["el_out"], axis=0)]
    inits = [init("s0", i64(0)), init("s2", i64(2)), init("ax0", i64(0)), init("ax1", i64(1)),
             init("two", np.float32(2.0)), init("where", np.array([[3], [-4]])),
             init("s02", i64(0, 0)), init("s21", i64(2, 1)), init("ax01", i64(0, 1)),
             init("el", np.array([[[0, 1, 2, 3, -1]], [[3, 2, 1, -4, 1]]]))]
    return single_input_model(nodes, [4, 5], {"nd": FLOAT, "el_out": FLOAT}, inits), [4, 5]


# --- pools, resize, softmax, reductions, products ----------------------------------------

def max_pools():
    specs = {"asym": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]),
             "ceil": dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
             "ceil_pad": dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1),
             "sppf": dict(kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]),
             "dilated": dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 1, 2, 1]),
             "same": dict(kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_UPPER")}
    nodes = [N("MaxPool", ["x"], [name], **attrs) for name, attrs in specs.items()]
    return single_input_model(nodes, [2, 7, 8], {n: FLOAT for n in specs}), [2, 7, 8]


def average_pools():
    specs = {"excl": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             "incl": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                          count_include_pad=1),
             "ceil_excl": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 0],
                               ceil_mode=1),
             "ceil_incl": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 0, 0],
                               ceil_mode=1, count_include_pad=1),
             "plain": dict(kernel_shape=[2, 2], strides=[2, 2])}
    nodes = [N("AveragePool", ["x"], [name], **attrs) for name, attrs in specs.items()]
    nodes += [N("GlobalAveragePool", ["x"], ["gap"]), N("GlobalMaxPool", ["x"], ["gmp"])]
    outputs = {n: FLOAT for n in [*specs, "gap", "gmp"]}
    return single_input_model(nodes, [2, 7, 8], outputs), [2, 7, 8]


def resizes_opset13():
    specs = {
        "torch_nearest": ("nearest", "asymmetric", "floor", "scales2"),
        "half_pixel_nearest": ("nearest", "half_pixel", "round_prefer_floor", "odd"),
        "prefer_ceil": ("nearest", "asymmetric", "round_prefer_ceil", "odd"),
        "ceil": ("nearest", "align_corners", "ceil", "odd"),
        "linear_half_pixel": ("linear", "half_pixel", "floor", "scales2"),
        "linear_pytorch": ("linear", "pytorch_half_pixel", "floor", "odd"),
        "linear_align": ("linear", "align_corners", "floor", "sizes"),
        "nearest_sizes": ("nearest", "half_pixel", "round_prefer_ceil", "sizes"),
        "empty_scales": ("nearest", "asymmetric", "floor", "empty"),
    }
    nodes = [N("Shape", ["x"], ["shape"]), N("Slice", ["shape", "zero", "two", "zero"], ["nc"]),
             N("Concat", ["nc", "hw"], ["sizes"], axis=0)]
    for name, (mode, coords, nearest, how) in specs.items():
        inputs = {"sizes": ["x", "", "", "sizes"], "empty": ["x", "none", "none", "sizes"]
                  }.get(how, ["x", "", how])
        nodes.append(N("Resize", inputs, [name], mode=mode, coordinate_transformation_mode=coords,
                       nearest_mode=nearest))
    inits = [init("scales2", f32(1, 1, 2, 2)), init("odd", f32(1, 1, 1.7, 0.6)),
             init("zero", i64(0)), init("two", i64(2)), init("hw", i64(13, 5)),
             init("none", np.zeros(0, np.float32))]
    return single_input_model(nodes, [2, 7, 8], {n: FLOAT for n in specs}, inits, opset=13), \
        [2, 7, 8]


def resize_legacy_torch_export_opset11():
    nodes = [N("Resize", ["x", "roi", "scales"], ["y"], mode="nearest",
               coordinate_transformation_mode="asymmetric", nearest_mode="floor")]
    inits = [init("roi", np.zeros(0, np.float32)), init("scales", f32(1, 1, 2, 2))]
    return single_input_model(nodes, [3, 4, 5], {"y": FLOAT}, inits, opset=11), [3, 4, 5]


def resize_axes_and_symmetric_opset19():
    nodes = [N("Resize", ["x", "", "s"], ["axes"], axes=[2, 3], mode="nearest"),
             N("Resize", ["x", "", "s4"], ["sym"], mode="linear",
               coordinate_transformation_mode="half_pixel_symmetric")]
    inits = [init("s", f32(2.0, 0.5)), init("s4", f32(1, 1, 1.5, 0.7))]
    return single_input_model(nodes, [2, 6, 7], {"axes": FLOAT, "sym": FLOAT}, inits,
                              opset=19), [2, 6, 7]


def resize_opset10():
    nodes = [N("Resize", ["x", "s"], ["near"]), N("Resize", ["x", "s"], ["lin"], mode="linear")]
    return single_input_model(nodes, [2, 4, 5], {"near": FLOAT, "lin": FLOAT},
                              [init("s", f32(1, 1, 2, 1.5))], opset=10), [2, 4, 5]


def upsample_opset9():
    nodes = [N("Upsample", ["x", "s"], ["y"], mode="nearest")]
    return single_input_model(nodes, [2, 4, 5], {"y": FLOAT}, [init("s", f32(1, 1, 2, 2))],
                              opset=9), [2, 4, 5]


def upsample_attribute_opset7():
    nodes = [N("Upsample", ["x"], ["y"], mode="linear", scales=[1.0, 1.0, 2.0, 3.0])]
    return single_input_model(nodes, [2, 4, 5], {"y": FLOAT}, opset=7), [2, 4, 5]


def quantize_per_axis_and_default_uint8():
    nodes = [N("QuantizeLinear", ["x", "s", "zp"], ["codes"], axis=1),
             N("DequantizeLinear", ["codes", "s", "zp"], ["values"], axis=1),
             N("QuantizeLinear", ["x", "s0"], ["u8"]),
             N("DequantizeLinear", ["u8", "s0"], ["u8_values"])]
    inits = [init("s", f32(0.01, 0.02, 0.05)), init("zp", np.array([0, 10, -20], np.int8)),
             init("s0", np.float32(0.01))]
    outputs = {"codes": TensorProto.INT8, "values": FLOAT, "u8": TensorProto.UINT8,
               "u8_values": FLOAT}
    return single_input_model(nodes, [3, 4, 5], outputs, inits, opset=13), [3, 4, 5]


def softmaxes():
    nodes = [N("Softmax", ["x"], ["sm1"], axis=1), N("LogSoftmax", ["x"], ["lsm"]),
             N("Softmax", ["x"], ["sm_last"])]
    return single_input_model(nodes, [4, 3, 5], {"sm1": FLOAT, "lsm": FLOAT, "sm_last": FLOAT}), \
        [4, 3, 5]


def softmax_coerced_opset11():
    nodes = [N("Softmax", ["x"], ["y"], axis=1)]
    return single_input_model(nodes, [4, 3, 5], {"y": FLOAT}, opset=11), [4, 3, 5]


def reductions_opset13():
    nodes = [N("ReduceMean", ["x"], ["mean"], axes=[2, 3]),
             N("ReduceSum", ["x", "ax1"], ["sum"], keepdims=0),
             N("ReduceMax", ["x"], ["max"], axes=[-1], keepdims=0),
             N("ReduceMin", ["x"], ["min"], axes=[1]), N("ReduceProd", ["x"], ["prod"], axes=[1]),
             N("ReduceL2", ["x"], ["l2"], axes=[2]), N("ReduceL1", ["x"], ["l1"], axes=[3]),
             N("ReduceSumSquare", ["x"], ["ss"], axes=[1, 2]), N("ReduceSum", ["x"], ["all"])]
    outputs = {n.output[0]: FLOAT for n in nodes}
    return single_input_model(nodes, [3, 4, 5], outputs, [init("ax1", i64(1))], opset=13), \
        [3, 4, 5]


def reductions_opset18():
    nodes = [N("ReduceMax", ["x", "axes"], ["max"]), N("ReduceMean", ["x"], ["mean_all"]),
             N("ReduceMean", ["x"], ["noop"], noop_with_empty_axes=1)]
    outputs = {"max": FLOAT, "mean_all": FLOAT, "noop": FLOAT}
    return single_input_model(nodes, [3, 4, 5], outputs, [init("axes", i64(1, 3))],
                              opset=18), [3, 4, 5]


def products_and_selection():
    nodes = [N("MatMul", ["x", "W"], ["mm"]), N("Flatten", ["x"], ["f"]),
             N("Gemm", ["f", "W2", "C"], ["gemm"], transB=1, alpha=0.5, beta=2.0),
             N("Einsum", ["x", "E"], ["ein"], equation="bchw,hk->bckw"),
             N("TopK", ["x", "k"], ["top_v", "top_i"], axis=-1),
             N("TopK", ["x", "k"], ["low_v", "low_i"], axis=1, largest=0),
             N("ArgMax", ["x"], ["amax"], axis=1, keepdims=0),
             N("ArgMin", ["x"], ["amin"], axis=-1, select_last_index=1)]
    inits = [init("W", w(5, 6)), init("W2", w(7, 60)), init("C", w(7)), init("E", w(4, 2)),
             init("k", i64(2))]
    outputs = {"mm": FLOAT, "gemm": FLOAT, "ein": FLOAT, "top_v": FLOAT, "top_i": I64,
               "low_v": FLOAT, "low_i": I64, "amax": I64, "amin": I64}
    return single_input_model(nodes, [3, 4, 5], outputs, inits), [3, 4, 5]


CASES = [swish_opset24, conv_pads_strides, conv_groups_dilation_asymmetric_pads, conv_auto_pad,
         conv_1d_depthwise, conv_transpose_output_padding, conv_transpose_groups_asymmetric,
         conv_transpose_output_shape, batch_norm, instance_and_layer_norm, activations, clips,
         clip_attributes_opset6, arithmetic, logic_and_cast, concat_and_split_opset11,
         split_input_and_num_outputs, slices, slice_attributes_opset9, gathers,
         reshape_transpose_flatten, squeeze_unsqueeze_opset11, squeeze_unsqueeze_inputs_opset13,
         dynamic_shape_arithmetic, constants_expand_tile_range, pads, scatters, max_pools,
         average_pools, resizes_opset13, resize_legacy_torch_export_opset11,
         resize_axes_and_symmetric_opset19, resize_opset10, upsample_opset9,
         upsample_attribute_opset7, quantize_per_axis_and_default_uint8, softmaxes,
         softmax_coerced_opset11, reductions_opset13, reductions_opset18, products_and_selection]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_op_matches_onnxruntime_at_batch_1_and_3(case):
    model, shape = case()
    compare_batches(model, shape)


# --- refusals at construction --------------------------------------------------------------

def _refused(node, opset=17, inits=()) -> str:
    x = helper.make_tensor_value_info("x", FLOAT, ["N", 3, 4, 4])
    y = helper.make_tensor_value_info("y", FLOAT, None)
    graph = helper.make_graph([node], "g", [x], [y], list(inits))
    imports = [helper.make_opsetid("", opset)]
    if node.domain:
        imports.append(helper.make_opsetid(node.domain, 1))
    with pytest.raises(ModelError) as info:
        OnnxModule(helper.make_model(graph, opset_imports=imports))
    return str(info.value)


def test_unsupported_op_is_refused_at_construction_naming_op_and_node():
    message = _refused(N("Hardmax", ["x"], ["y"], name="head/hardmax_7"))
    assert "Hardmax" in message and "head/hardmax_7" in message


def test_custom_domain_op_is_refused_naming_domain():
    message = _refused(N("FusedConv", ["x"], ["y"], name="fused0", domain="com.microsoft"))
    assert "com.microsoft.FusedConv" in message and "fused0" in message


def test_unused_extra_output_is_tolerated_but_a_used_one_is_refused():
    pool = N("MaxPool", ["x"], ["y", "indices"], kernel_shape=[2, 2], name="pool_idx")
    model = single_input_model([pool], [3, 4, 4], {"y": FLOAT})
    compare_batches(model, [3, 4, 4])
    used = single_input_model([pool], [3, 4, 4], {"y": FLOAT, "indices": I64})
    with pytest.raises(ModelError, match="pool_idx"):
        OnnxModule(used)


@pytest.mark.parametrize("attrs, word", [({"mode": "cubic"}, "cubic"),
                                         ({"coordinate_transformation_mode":
                                           "tf_crop_and_resize"}, "tf_crop_and_resize"),
                                         ({"antialias": 1}, "antialias")])
def test_unsupported_resize_attribute_is_refused(attrs, word):
    node = N("Resize", ["x", "", "s"], ["y"], name="up1", **attrs)
    message = _refused(node, opset=18, inits=[init("s", f32(1, 1, 2, 2))])
    assert word in message and "up1" in message
