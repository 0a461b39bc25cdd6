"""Reading images, and a plain image folder as a source (for `--calib DIR`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.errors import InputDataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_rgb(path: Path) -> np.ndarray:
    """The image at path as an HxWx3 uint8 RGB array; InputDataError if missing or unreadable."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise InputDataError(f"image file missing: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputDataError(f"unreadable or corrupt image {path}: {exc}") from None


class ImageFolder:
    """Every jpg/jpeg/png/bmp under a folder (recursive), in sorted path order.

    Image ids are positions 0..n-1 in that order, so the interface matches CocoDataset.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputDataError(f"image folder not found: {self.root}")
        self._paths = sorted(
            p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not self._paths:
            raise InputDataError(
                f"no images ({'/'.join(s[1:] for s in IMAGE_SUFFIXES)}) under {self.root}"
            )

    @property
    def image_ids(self) -> list[int]:
        return list(range(len(self._paths)))

    def image_path(self, image_id: int) -> Path:
        return self._paths[image_id]

    def load_rgb(self, image_id: int) -> np.ndarray:
        return read_rgb(self._paths[image_id])

    def __len__(self) -> int:
        return len(self._paths)

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, {len(self)} images)"
