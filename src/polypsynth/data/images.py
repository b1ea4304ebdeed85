"""The one image decoder of data, training and evaluation: any file PIL reads becomes 8-bit RGB.

PIL's own `convert("RGB")` is right for 8-bit modes (L, P, PA, LA, RGBA, CMYK, YCbCr, 1), but it
clips 16- and 32-bit grayscale (I;16, I;16B, I) at 255, which turns a 16-bit frame white, and it
does not apply a camera's EXIF orientation. Here:

- I;16 / I;16B / I;16L / I;16N and I: scaled from 0..65535 to 0..255 (rounded), then grey to RGB;
- F (float): 0..1 scaled to 0..255 when the image lies in [0, 1], else clipped to 0..255;
- every other mode: PIL's conversion (alpha dropped, palettes and CMYK resolved);
- EXIF orientation applied first (ImageOps.exif_transpose).

An image over PIL's limit (Image.MAX_IMAGE_PIXELS, 89 Mpx: 0.25 GB of 24-bit RGB) is refused with
its size before it is decoded (PIL raised DecompressionBombError as a traceback past twice the
limit, and only warned below that)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from polypsynth.errors import DataError

SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass(frozen=True)
class Decoded:
    image: Image.Image  # mode RGB, 8 bits per channel
    mode: str  # the file's own mode, e.g. "I;16", "P", "RGB"


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in SIXTEEN_BIT:
        grey = np.asarray(im, dtype=np.float64)
        grey = np.clip(np.rint(grey / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "F":
        values = np.asarray(im, dtype=np.float64)
        scale = 255.0 if values.size and values.min() >= 0.0 and values.max() <= 1.0 else 1.0
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return im.convert("RGB")


def decode(path: str | Path) -> Decoded:
    """The image at `path` as 8-bit RGB, with its original mode; a DataError naming the file when
    is missing, cannot be decoded or is over PIL's size limit."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                mode = im.mode
                im.load()
                return Decoded(_to_rgb(ImageOps.exif_transpose(im)), mode)
    except FileNotFoundError as exc:
        raise DataError(f"image not found: {path}") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"image {path} is over the limit of {(Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} Mpx ({exc}): resize it first"
        ) from None  # the whole reason is in this message (data inspect shows an error's cause otherwise)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}") from exc


def open_rgb(path: str | Path) -> Image.Image:
    """Decode an image as 8-bit RGB (module docstring)."""
    return decode(path).image
