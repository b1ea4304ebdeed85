"""One decoder for every image mode: 8-bit modes as PIL converts them, 16- and 32-bit grayscale and
float scaled (PIL's conversion clipped them white), EXIF orientation applied, oversized images
refused with their size; through `data inspect` and evaluation's loader as a user meets them."""

import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from polypsynth.cli import main
from polypsynth.data.images import decode, open_rgb
from polypsynth.errors import DataError
from polypsynth.evaluate.features import load_batch

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "mode, suffix",
    [
        ("L", ".png"),
        ("P", ".png"),
        ("LA", ".png"),
        ("RGBA", ".png"),
        ("1", ".png"),
        ("CMYK", ".tif"),
        ("RGB", ".jpg"),
    ],
)
def test_eight_bit_modes_decode_as_pil_converts_them(tmp_path, mode, suffix):
    source = Image.fromarray(RGB, "RGB")
    image = source.convert("RGBA").convert(mode) if mode in ("LA", "RGBA") else source.convert(mode)
    path = tmp_path / f"x{suffix}"
    image.save(path)
    got = decode(path)
    assert got.mode == mode and got.image.mode == "RGB"
    with Image.open(path) as reference:
        assert np.array_equal(np.asarray(got.image), np.asarray(reference.convert("RGB")))


def test_sixteen_bit_grayscale_is_scaled_not_clipped_white(tmp_path):
    grey16 = RNG.integers(0, 65536, (24, 32), dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode in ("I;16", "I")  # the file really is 16-bit
        assert np.asarray(im.convert("RGB")).mean() > 250  # PIL's conversion: nearly white
    got = decode(tmp_path / "g16.png")
    expected = np.rint(grey16 / 257.0).astype(np.uint8)
    assert np.array_equal(np.asarray(got.image), np.stack([expected] * 3, -1))
    # Evaluation's loader sees the same picture as from an 8-bit copy.
    Image.fromarray(expected, "L").save(tmp_path / "g8.png")
    assert np.array_equal(
        load_batch([tmp_path / "g16.png"], 16).numpy(), load_batch([tmp_path / "g8.png"], 16).numpy()
    )


def test_thirty_two_bit_and_float_images(tmp_path):
    values = RNG.integers(0, 65536, (8, 8)).astype(np.int32)
    Image.fromarray(values, "I").save(tmp_path / "i.tif")
    assert np.array_equal(
        np.asarray(open_rgb(tmp_path / "i.tif"))[..., 0], np.rint(values / 257).astype(np.uint8)
    )
    unit = RNG.random((8, 8)).astype(np.float32)
    Image.fromarray(unit, "F").save(tmp_path / "f.tif")
    assert np.array_equal(
        np.asarray(open_rgb(tmp_path / "f.tif"))[..., 0], np.rint(unit * 255).astype(np.uint8)
    )


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(RGB, "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "r.jpg", exif=exif, quality=100)
    got = open_rgb(tmp_path / "r.jpg")
    assert got.size == (24, 32)  # displayed upright: width and height swapped
    with Image.open(tmp_path / "r.jpg") as raw:
        assert np.array_equal(
            np.asarray(got), np.asarray(raw.convert("RGB").transpose(Image.Transpose.ROTATE_270))
        )


def _png_header_only(path, width, height):
    """A PNG whose header declares width x height (no pixels: nothing is decoded before the check)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_oversized_missing_and_broken_images_are_one_line(tmp_path):
    _png_header_only(tmp_path / "huge.png", 14000, 14000)
    with pytest.raises(
        DataError,
        match=r"image .*huge.png is over the limit of 89 Mpx \(Image size \(196000000 pixels\) exceeds",
    ):
        decode(tmp_path / "huge.png")
    with pytest.raises(DataError, match=r"image not found: .*gone.png"):
        decode(tmp_path / "gone.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot decode image .*bad.png"):
        decode(tmp_path / "bad.png")


def test_data_inspect_lists_the_modes_it_found(tmp_path):
    for split in ("train", "test"):
        for c in ("AD", "NON_AD"):
            folder = tmp_path / "data" / split / c
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(RGB, "RGB").save(folder / f"{i}.png")
    grey16 = RNG.integers(0, 65536, (24, 32), dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "data" / "train" / "AD" / "g16.png")
    _png_header_only(tmp_path / "data" / "train" / "NON_AD" / "huge.png", 14000, 14000)
    result = CliRunner().invoke(main, ["data", "inspect", str(tmp_path / "data"), "--kind", "image_folder"])
    assert result.exit_code == 1, result.output  # an unreadable image stops it unless --skip-bad
    assert (
        "1 image(s) cannot be read, first: " in result.output
        and "resize it first; pass --skip-bad" in result.output
    )
    assert "image modes: RGB (8), I;16 (1, 16-bit: scaled to 8 bits)" in result.output or (
        "image modes: RGB (8), I (1, 16-bit: scaled to 8 bits)" in result.output
    )
    assert "huge.png: image" in result.output and "over the limit of 89 Mpx" in result.output
    assert "Traceback" not in result.output
