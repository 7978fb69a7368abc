"""Any Pillow mode -> 8-bit RGB: high bit depths stretched by their real range, alpha composited on white."""

from __future__ import annotations

from typing import Final

import numpy as np
from PIL import Image

from search.errors import ImageDecodeError

_WHITE: Final = (255, 255, 255)
_HIGH_BIT_MODES: Final = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})

def _scale_to_8bit(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float greyscale -> 'L', stretching the actual min..max to 0..255.

    A constant image keeps its level relative to the nominal range (0..65535 for integers, 0..1 for floats).
    """
    values = np.asarray(im).astype(np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        return Image.new("L", im.size, 0)
    lo = float(values[finite].min())
    hi = float(values[finite].max())
    if hi > lo:
        scaled = (values - lo) * (255.0 / (hi - lo))
    else:
        full_scale = 1.0 if im.mode == "F" else 65535.0
        scaled = np.full_like(values, min(max(lo / full_scale, 0.0), 1.0) * 255.0)
    scaled[~finite] = 0.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _composite_on_white(im: Image.Image) -> Image.Image:
    rgba = im if im.mode == "RGBA" else im.convert("RGBA")
    out = Image.new("RGB", rgba.size, _WHITE)
    out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return out


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Returns ``im`` itself when it is already RGB without transparency."""
    mode = im.mode
    if mode in _HIGH_BIT_MODES:
        return _scale_to_8bit(im).convert("RGB")
    if mode == "La":  # premultiplied; Pillow converts it to LA only
        im = im.convert("LA")
    if im.has_transparency_data:  # RGBA, LA, PA, RGBa, P/L/RGB with a transparent colour
        return _composite_on_white(im)
    if im.mode == "RGB":
        return im
    try:
        return im.convert("RGB")  # L, P, 1, CMYK, YCbCr, LAB, HSV
    except ValueError as exc:
        raise ImageDecodeError(f"unsupported pixel mode {mode}") from exc
