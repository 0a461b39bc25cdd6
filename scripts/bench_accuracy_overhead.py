"""How close does the accuracy pass come to the raw engine's throughput?

    python scripts/bench_accuracy_overhead.py MODEL.onnx [--coco DIR] [--count N] [--batch B]
    python scripts/bench_accuracy_overhead.py --demo      # a small generated model

Runs ONNX Runtime directly on the CPU with one thread. "raw" times session.run on one
staged batch, over and over; "accuracy pass" is bench.eval.accuracy.run_accuracy on the
same number of images (load + letterbox + infer + decode + NMS), before COCOeval; it
runs twice, the second time with the letterboxed images cached as later variants see them.
The dataset defaults to the embedded synthetic one (generated once into the cache).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from bench.data import synthetic
from bench.data.coco import CocoDataset
from bench.data.letterbox import letterbox
from bench.eval.accuracy import LetterboxCache, run_accuracy


def demo_model(
    path: Path, num_classes: int, imgsz: int = 256, width: int = 1, obj_bias: float = -11.0
) -> Path:
    """Three strided convs -> a raw [B, 3*(S/8)^2, 5+C] head with sigmoid, like YOLO's."""
    rng = np.random.default_rng(0)
    row, cells = 5 + num_classes, (imgsz // 8) ** 2
    chans = [3, 16 * width, 32 * width, 64 * width]
    nodes, inits, x = [], [], "images"
    for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:], strict=True)):
        w = rng.normal(0, (2 / (9 * cin)) ** 0.5, (cout, cin, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [
            helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1] * 4, strides=[2, 2]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        x = f"r{i}"
    head = rng.normal(0, 0.05, (3, row, chans[-1], 1, 1)).astype(np.float32)
    head[:, 4] = rng.normal(0, width**-0.5, head[:, 4].shape)  # spread objectness widely
    head = head.reshape(3 * row, chans[-1], 1, 1)
    bias = np.zeros((3, row), np.float32)
    # Hundreds to a few thousand candidates above conf 0.001 per image, as a trained
    # detector gives at that threshold.
    bias[:, 4] = obj_bias
    scale = np.ones((1, 1, row), np.float32)
    scale[..., :4] = [imgsz, imgsz, imgsz / 4, imgsz / 4]
    inits += [
        numpy_helper.from_array(head, "wh"),
        numpy_helper.from_array(bias.reshape(-1), "bh"),
        numpy_helper.from_array(np.array([0, 3, row, cells], np.int64), "s1"),
        numpy_helper.from_array(np.array([0, 3 * cells, row], np.int64), "s2"),
        numpy_helper.from_array(scale, "scale"),
    ]
    nodes += [
        helper.make_node("Conv", [x, "wh", "bh"], ["head"]),
        helper.make_node("Reshape", ["head", "s1"], ["h1"]),
        helper.make_node("Transpose", ["h1"], ["h2"], perm=[0, 1, 3, 2]),
        helper.make_node("Reshape", ["h2", "s2"], ["h3"]),
        helper.make_node("Sigmoid", ["h3"], ["h4"]),
        helper.make_node("Mul", ["h4", "scale"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "demo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, imgsz, imgsz])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3 * cells, row])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def raw_images_per_s(sess, ds: CocoDataset, imgsz: int, batch: int, count: int) -> float:
    ids = ds.image_ids[:batch]
    staged = np.stack([letterbox(ds.load_rgb(i), imgsz)[0] for i in ids])
    staged = np.concatenate([staged] * (batch // len(staged) + 1))[:batch]
    name = sess.get_inputs()[0].name
    for _ in range(3):
        sess.run(None, {name: staged})
    runs = max(1, count // batch)
    start = time.perf_counter()
    for _ in range(runs):
        sess.run(None, {name: staged})
    return runs * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", type=Path, help="ONNX model (or --demo)")
    ap.add_argument("--demo", action="store_true", help="generate a small raw-layout model")
    ap.add_argument("--demo-width", type=int, default=1, help="channel multiplier of --demo")
    ap.add_argument("--coco", type=Path, help="COCO folder (default: the synthetic dataset)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--imgsz", type=int, help="default: the model's input size")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--count", type=int, help="images (default: the whole split)")
    args = ap.parse_args(argv)
    ds = CocoDataset.open(args.coco or synthetic.ensure_default(), args.split)
    model = args.model
    if args.demo or model is None:
        model = demo_model(
            Path(tempfile.mkdtemp()) / "demo.onnx", ds.num_classes, width=args.demo_width
        )
    sess = session(model)
    shape = sess.get_inputs()[0].shape
    imgsz = args.imgsz or int(shape[-1])
    fixed = shape[0] if isinstance(shape[0], int) else None
    batch = fixed or args.batch
    count = min(args.count or len(ds), len(ds))
    names = [o.name for o in sess.get_outputs()]
    in_name = sess.get_inputs()[0].name

    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, sess.run(None, {in_name: x}), strict=True))

    raw = raw_images_per_s(sess, ds, imgsz, batch, count)
    cache = LetterboxCache()
    res, warm = (
        run_accuracy(
            infer,
            ds,
            imgsz=imgsz,
            batch=batch,
            fixed_batch=fixed,
            eval_count=count,
            progress=False,
            cache=cache,
        )
        for _ in range(2)
    )
    print(f"model {model}  imgsz {imgsz}  batch {batch}  images {count}")
    print(f"raw engine      {raw:8.1f} img/s")
    print(f"accuracy pass   {res.images_per_s:8.1f} img/s  ({res.images_per_s / raw:.1%} of raw)")
    engine_only = res.n_images / res.infer_seconds
    print(f"  inside infer  {engine_only:8.1f} img/s;  COCOeval {res.eval_seconds:.2f} s")
    idle = res.input_wait_seconds / (res.n_images / res.images_per_s)
    print(
        f"  engine idle, waiting for input: {res.input_wait_seconds:.2f} s ({idle:.1%} of the pass)"
    )
    print(f"  mAP {res.metrics['map']:.4f}  mAP50 {res.metrics['map50']:.4f}")
    share = warm.images_per_s / raw
    print("second pass, letterbox cache warm (as for every later variant of a session):")
    print(f"accuracy pass   {warm.images_per_s:8.1f} img/s  ({share:.1%} of raw)")


if __name__ == "__main__":
    main()
