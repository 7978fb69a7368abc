"""EXIF: orientation (applied so images display upright), capture time and camera make/model. Broken
metadata reads as absent.

``META_VERSION`` names what this reader extracts; catalog rows carry the version that filled them, so a
newer reader back-fills older rows from the files (no re-embedding: ``indexer.backfill``)."""

from __future__ import annotations

import contextlib
import re
from datetime import datetime
from typing import Final

from PIL import Image

_ORIENTATION_TAG: Final = 0x0112
_DATETIME_TAG: Final = 0x0132
_EXIF_IFD: Final = 0x8769
_DATETIME_ORIGINAL_TAG: Final = 0x9003
_MAKE_TAG: Final = 0x010F
_MODEL_TAG: Final = 0x0110
CAMERA_MAX_CHARS: Final = 64

META_VERSION: Final = 2  # 1: size, format, capture time; 2: + camera make and model

# EXIF orientation -> the transpose that makes the stored pixels look as displayed (as ImageOps.exif_transpose).
ORIENTATION_TRANSPOSE: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_EXIF_DATETIME: Final = re.compile(r"\s*(\d{4})[:\-/](\d{2})[:\-/](\d{2})[ T](\d{2}):(\d{2})(?::(\d{2}))?")


def parse_exif_datetime(value: object) -> datetime | None:
    """'YYYY:MM:DD HH:MM:SS' (as EXIF writes it; '-' and missing seconds tolerated) -> naive datetime."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    match = _EXIF_DATETIME.match(value.strip("\x00 "))
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) if g else 0 for g in match.groups())
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:  # '0000:00:00 00:00:00', Feb 30...
        return None


def exif_text(value: object) -> str | None:
    """An EXIF ASCII field as clean text (NULs and control characters dropped, capped), or None."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = " ".join("".join(ch for ch in value if ch.isprintable()).split())
    return text[:CAMERA_MAX_CHARS] or None


def read_camera(im: Image.Image) -> tuple[str | None, str | None]:
    """(make, model) from EXIF; (None, None) when absent or broken. Reads header data only."""
    try:
        exif = Image.Image.getexif(im)
        return exif_text(exif.get(_MAKE_TAG)), exif_text(exif.get(_MODEL_TAG))
    except Exception:  # noqa: BLE001 - corrupt EXIF is common and harmless
        return None, None


def read_exif(im: Image.Image, *, header_only: bool) -> tuple[int, datetime | None]:
    """(EXIF orientation 1..8, taken_at). Broken metadata never fails the decode: it reads as absent."""
    try:
        if header_only:
            # PngImageFile.getexif() would decode the pixels to find a late eXIf chunk; read what the header has.
            exif = Image.Image.getexif(im)
        else:
            exif = im.getexif()
        orientation = exif.get(_ORIENTATION_TAG, 1)
        taken_at = None
        with contextlib.suppress(Exception):  # a broken Exif IFD is just missing
            taken_at = parse_exif_datetime(exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL_TAG))
        if taken_at is None:
            taken_at = parse_exif_datetime(exif.get(_DATETIME_TAG))
    except Exception:  # noqa: BLE001 - corrupt EXIF is common and harmless
        return 1, None
    if not isinstance(orientation, int) or orientation not in ORIENTATION_TRANSPOSE:
        orientation = 1
    return orientation, taken_at


def displayed_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    width, height = size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def orient(im: Image.Image, orientation: int) -> Image.Image:
    method = ORIENTATION_TRANSPOSE.get(orientation)
    return im if method is None else im.transpose(method)
