"""Train, evaluate, export and cross-check one model: the work behind `bench make-default`."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import torch

from bench.atomic import atomic_write_bytes, atomic_write_text
from bench.data.coco import CocoDataset
from bench.data.letterbox import letterbox
from bench.models.evaluate import PROTOCOL, evaluate
from bench.models.export import INPUT_NAME, LAYOUT, OUTPUT_NAME, export_onnx
from bench.models.fuse import fuse
from bench.models.train import TrainConfig, TrainResult, train
from bench.models.train_data import open_split

OPSET = 17


def _log(step: int, loss: float, _model) -> None:
    if step % 100 == 0:
        print(f"  iteration {step}: loss {loss:.4f}", flush=True)


def build(root: Path, config: TrainConfig, onnx_path: Path) -> dict:
    """Train on root's train split, evaluate on its val split, export to ``onnx_path``
    (atomically) and return the manifest's model, training and evaluation records."""
    print(f"training {config.arch} width {config.width} at {config.imgsz}px for "
          f"{config.iterations} iterations on {config.threads} threads", flush=True)
    result, split = train(root, config, progress=_log)
    val = open_split(root, "val")
    torch.set_num_threads(config.threads)
    scores = evaluate(result.model, val, config.imgsz)
    _export_atomic(result.model, onnx_path, config.imgsz, split)
    drift = onnx_vs_torch(onnx_path, result.model, val, config.imgsz)
    return {"schema": 1,
            "onnx": {"file": onnx_path.name, "bytes": onnx_path.stat().st_size, "opset": OPSET,
                     "input": INPUT_NAME, "output": OUTPUT_NAME, "layout": LAYOUT,
                     "max_abs_diff_vs_torch": drift},
            "model": _model_record(result, config, split),
            "classes": [{"index": i, "category_id": c, "name": n}
                        for i, (c, n) in enumerate(zip(split.class_to_category, split.names))],
            "training": _training_record(result, config),
            "evaluation": {"split": "val", "num_images": scores.num_images, "map": scores.map,
                           "map50": scores.map50, "num_detections": scores.num_detections,
                           "protocol": PROTOCOL},
            "environment": {"torch": torch.__version__, "onnx": onnx.__version__}}


def _model_record(result: TrainResult, config: TrainConfig, split: CocoDataset) -> dict:
    return {"arch": config.arch, "width": config.width, "depth": config.depth,
            "imgsz": config.imgsz, "num_classes": split.num_classes,
            "strides": list(result.model.stride),
            "parameters": _count(result.model), "parameters_fused": _count(fuse(result.model))}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _training_record(result: TrainResult, config: TrainConfig) -> dict:
    record = asdict(config)
    record |= {"iterations": result.iterations, "epochs": round(result.epochs, 2),
               "wall_s": round(result.wall_s, 1), "train_images": result.num_train_images,
               "optimizer": "AdamW", "schedule": "linear warm-up, cosine",
               "loss_log": [list(p) for p in result.loss_log]}
    return record


def _export_atomic(model: torch.nn.Module, path: Path, imgsz: int, split: CocoDataset) -> None:
    """Export to bytes, then write them through bench.atomic (the umask's permissions)."""
    names = json.dumps(dict(enumerate(split.names)))
    ids = json.dumps(list(split.class_to_category))
    with tempfile.TemporaryDirectory(prefix=".bench-tmp-", dir=path.parent) as folder:
        scratch = Path(folder) / path.name
        export_onnx(model, scratch, imgsz, OPSET, metadata={"names": names, "category_ids": ids})
        atomic_write_bytes(path, scratch.read_bytes())


def onnx_vs_torch(path: Path, model: torch.nn.Module, val: CocoDataset, imgsz: int,
                  count: int = 4) -> dict:
    """Largest |ONNX Runtime - PyTorch| on a few eval images, for boxes and scores."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.stack([letterbox(val.load_rgb(i), imgsz)[0] for i in val.image_ids[:count]])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(x)).numpy()
    return {"boxes_px": float(np.abs(got[..., :4] - want[..., :4]).max()),
            "scores": float(np.abs(got[..., 4:] - want[..., 4:]).max())}


def write_json_atomic(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
