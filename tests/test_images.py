import io

import numpy as np
import pytest
from PIL import Image

from datadream_core.data.images import ImageProblem, check_image, load_rgb


def _save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_grayscale_palette_rgba_cmyk_become_rgb(tmp_path):
    gray = _save(Image.new("L", (5, 4), 100), tmp_path / "gray.png")
    palette = _save(Image.new("RGB", (5, 4), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE), tmp_path / "pal.png")
    rgba = Image.new("RGBA", (5, 4), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 255, 0))  # fully transparent pixel: composited on white
    rgba = _save(rgba, tmp_path / "rgba.png")
    cmyk = _save(Image.new("CMYK", (5, 4), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=100)
    for path in (gray, palette, rgba, cmyk):
        image = load_rgb(path)
        assert image.mode == "RGB" and image.size == (5, 4), path
    assert load_rgb(gray).getpixel((1, 1)) == (100, 100, 100)
    assert load_rgb(palette).getpixel((1, 1)) == (10, 200, 30)
    assert load_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert load_rgb(rgba).getpixel((1, 1)) == (255, 0, 0)
    red, green, blue = load_rgb(cmyk).getpixel((1, 1))
    assert red > 200 and green < 50 and blue < 50


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    array = np.full((4, 6), 65535, dtype=np.uint16)
    array[0, 0] = 32768
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    image = np.asarray(load_rgb(path))
    assert image.shape == (4, 6, 3)
    assert image[1, 1, 0] == 255 and image[0, 0, 0] == 128


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (6, 3), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=100)
    loaded = load_rgb(path)
    assert loaded.size == (3, 6)


def test_truncated_and_non_image_files_are_reported(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    text = tmp_path / "notes.txt"
    text.write_text("not pixels")
    assert check_image(text) == "not an image file"
    assert check_image(truncated).startswith("unreadable or truncated image")
    with pytest.raises(ImageProblem, match="cut.jpg: unreadable or truncated"):
        load_rgb(truncated)
