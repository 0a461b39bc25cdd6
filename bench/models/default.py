"""The embedded default model: a small YOLOv7-tiny trained on the synthetic dataset,
shipped as ONNX with a manifest saying how it was made and what it scored.

Imports neither torch nor onnx, so the suites can locate it anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.cache import file_sha256
from bench.errors import ModelError

DEFAULT_DIR = Path(__file__).resolve().parent / "default"
ONNX_NAME = "yolov7_default.onnx"
MANIFEST_NAME = "manifest.json"


def default_model_path(folder: Path | None = None) -> Path:
    """Path of the shipped default ONNX; ModelError if it is absent."""
    path = Path(folder or DEFAULT_DIR) / ONNX_NAME
    if not path.is_file():
        raise ModelError(f"default model {path}: missing; run `bench make-default` to build it")
    return path


def load_manifest(folder: Path | None = None) -> dict:
    """The default model's manifest.json (classes, imgsz, training record, mAP reached)."""
    path = Path(folder or DEFAULT_DIR) / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"default manifest {path}: missing; run `bench make-default`") from None
    except ValueError as exc:
        raise ModelError(f"default manifest {path}: not valid JSON ({exc})") from exc


def verify_default(folder: Path | None = None) -> dict:
    """Load the manifest and check the ONNX's sha256 against it; returns the manifest."""
    manifest, path = load_manifest(folder), default_model_path(folder)
    expected, actual = manifest["onnx"]["sha256"], file_sha256(path)
    if expected != actual:
        raise ModelError(f"default model {path}: sha256 {actual[:12]}… does not match the "
                         f"manifest's {expected[:12]}…")
    return manifest
