import numpy as np
import pytest
from PIL import Image

from bench.data.images import ImageFolder, read_rgb
from bench.errors import InputDataError


def test_folder_is_recursive_sorted_and_filtered(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (8, 6), (255, 0, 0)).save(tmp_path / "b.png")
    Image.new("L", (5, 5), 7).save(tmp_path / "a.JPG")
    Image.new("RGB", (4, 4)).save(tmp_path / "sub" / "c.bmp")
    (tmp_path / "notes.txt").write_text("not an image")
    folder = ImageFolder(tmp_path)
    assert [folder.image_path(i).name for i in folder.image_ids] == ["a.JPG", "b.png", "c.bmp"]
    grey = folder.load_rgb(0)
    assert grey.shape == (5, 5, 3) and grey.dtype == np.uint8  # grey converted to RGB
    assert tuple(folder.load_rgb(1)[0, 0]) == (255, 0, 0)


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(InputDataError, match="no images"):
        ImageFolder(tmp_path)
    with pytest.raises(InputDataError, match="image folder not found"):
        ImageFolder(tmp_path / "missing")


def test_read_rgb_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    with pytest.raises(InputDataError, match="bad.jpg"):
        read_rgb(bad)
    with pytest.raises(InputDataError, match="missing: .*gone.png"):
        read_rgb(tmp_path / "gone.png")
