"""Peak memory of calibration histogram collection (bench.quant.collect).

Collects |x| histograms of every Conv input of an ONNX model over N random images at a
given size and prints the process's peak RSS, the growth during collection and the time.
Without --onnx it builds a YOLOv7-sized stack of Conv+SiLU layers (~80M activation values
per 640x640 image across its Conv inputs). The issue's target: <= 3 GiB at 640x640
(ONNX Runtime's own histogram calibrator needed ~10.5 GB).

    python scripts/bench_calibration_memory.py --imgsz 640 --images 8
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.quant.collect import collect_histograms
from bench.quant.histogram import AbsHistogram

# (output channels, kernel, stride, repeats): the stem, then four downsampling stages with
# cheap 1x1 convs, sized like YOLOv7's backbone + head by activation volume.
_STAGES = [
    (32, 3, 1, 1),
    (64, 3, 2, 2),
    (128, 3, 2, 9),
    (256, 3, 2, 7),
    (512, 3, 2, 7),
    (1024, 3, 2, 5),
]


def build_conv_stack(path: Path, imgsz: int) -> Path:
    """A chain of Conv + SiLU (Sigmoid * x): stride-2 3x3 convs open each stage, 1x1 follow."""
    nodes, weights, previous, channels = [], [], "images", 3
    for out_channels, kernel, stride, repeats in _STAGES:
        for r in range(repeats):
            k, s = (kernel, stride) if r == 0 else (1, 1)
            name = f"conv{len(weights)}"
            w = np.random.default_rng(len(weights)).standard_normal(
                (out_channels, channels, k, k), dtype=np.float32
            ) * np.float32(1.0 / np.sqrt(channels * k * k))
            weights.append(numpy_helper.from_array(w, f"{name}.w"))
            nodes += _conv_silu(name, previous, k, s)
            previous, channels = f"{name}.act", out_channels
    graph = helper.make_graph(
        nodes,
        "conv_stack",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [None, 3, imgsz, imgsz])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, None)],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _conv_silu(name: str, source: str, kernel: int, stride: int) -> list[onnx.NodeProto]:
    pad = kernel // 2
    return [
        helper.make_node(
            "Conv",
            [source, f"{name}.w"],
            [f"{name}.out"],
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad] * 4,
        ),
        helper.make_node("Sigmoid", [f"{name}.out"], [f"{name}.gate"]),
        helper.make_node("Mul", [f"{name}.out", f"{name}.gate"], [f"{name}.act"]),
    ]


def conv_inputs(path: Path) -> list[str]:
    """The activation input of every Conv node."""
    model = onnx.load(str(path), load_external_data=False)
    return list(dict.fromkeys(n.input[0] for n in model.graph.node if n.op_type == "Conv"))


def _rss_now_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _random_images(count: int, batch: int, imgsz: int):
    rng = np.random.default_rng(0)
    for _ in range(count):  # generated one at a time, like a real calibration loader
        yield rng.random((batch, 3, imgsz, imgsz), dtype=np.float32)


def _histogram_speed() -> float:
    """ns per element of AbsHistogram.update on one 64x320x320 activation."""
    x = np.random.default_rng(1).standard_normal((1, 64, 320, 320), dtype=np.float32)
    hist = AbsHistogram()
    hist.update(x)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        hist.update(x)
        best = min(best, time.perf_counter() - start)
    return best / x.size * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, help="model (default: a generated conv stack)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--images", type=int, default=8, help="calibration batches")
    parser.add_argument("--batch", type=int, default=1, help="images per batch")
    parser.add_argument("--bins", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.onnx or build_conv_stack(Path(tmp) / "conv_stack.onnx", args.imgsz)
        names = conv_inputs(path)
        before = _rss_now_mib()
        start = time.perf_counter()
        hists = collect_histograms(
            path, names, _random_images(args.images, args.batch, args.imgsz), bins=args.bins
        )
        elapsed = time.perf_counter() - start
    values = sum(h.total for h in hists.values()) / args.images
    print(f"model: {path.name if args.onnx else 'generated conv stack'}, {len(names)} Conv inputs")
    mib = values * 4 / 2**20
    print(f"activations histogrammed per batch: {values / 1e6:.1f} M values ({mib:.0f} MiB fp32)")
    print(f"RSS before collection: {before:.0f} MiB")
    print(
        f"peak RSS: {_peak_rss_mib():.0f} MiB ({_peak_rss_mib() / 1024:.2f} GiB); target <= 3 GiB"
    )
    print(f"time: {elapsed:.1f} s for {args.images} batches of {args.batch}")
    print(f"histogram update: {_histogram_speed():.2f} ns/element")


if __name__ == "__main__":
    main()
