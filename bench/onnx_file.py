"""The one ONNX loader: every model file is read here, and every failure is a ModelError
that names the file and what was wrong with it."""

from __future__ import annotations

from pathlib import Path

import onnx

from bench.errors import ModelError, first_line


def check_model_file(path: Path, what: str = "model") -> Path:
    """The path, if it can be an ONNX file; else a ModelError saying why it cannot."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{what} {path}: file not found; expected an ONNX file")
    if path.is_dir():
        raise ModelError(f"{what} {path}: is a directory; expected an ONNX file")
    if path.stat().st_size == 0:
        raise ModelError(f"{what} {path}: empty file (0 bytes); expected an ONNX model")
    return path


def load_model(path: Path, *, weights: bool = True, what: str = "model") -> onnx.ModelProto:
    """The ModelProto of `path`; weights=False leaves external weight files unread."""
    check_model_file(path, what)
    try:
        return onnx.load(str(path), load_external_data=weights)
    except Exception as exc:  # onnx raises DecodeError and others for a corrupt file
        raise ModelError(f"{what} {path}: not a readable ONNX file ({first_line(exc)})") \
            from None

