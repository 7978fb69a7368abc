"""Recognising image files: by extension (any case) or by the magic bytes at their start. Pure."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

HEADER_BYTES: Final[int] = 32
"""How many leading bytes :func:`sniff_format` looks at."""

IMAGE_EXTENSIONS: Final[frozenset[str]] = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif",  # JPEG (and camera MPO files)
        ".png", ".apng",
        ".gif",
        ".webp",
        ".bmp", ".dib",
        ".tif", ".tiff",
        ".heic", ".heif", ".hif",  # decodable only when pillow-heif is installed
        ".avif",
        ".jp2", ".j2k", ".jpf", ".jpx",
        ".jxl",  # recognised, but Pillow cannot decode it yet: reported as unsupported
        ".qoi",
        ".ico",
        ".ppm", ".pgm", ".pbm", ".pnm",
    }
)  # fmt: skip
"""Lower-case file extensions (with the dot) of the image formats this module recognises."""

# --- ------------------------------------------------------------------------

_HEIF_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1", b"mif2"}
)
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
_BMP_HEADER_SIZES: Final = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_PPM_MAGIC: Final = re.compile(rb"P[1-6][ \t\r\n#]")


def _sniff_isobmff(h: bytes) -> str | None:
    """HEIF/AVIF: an ISO base media 'ftyp' box; AVIF if any brand in view says so."""
    major = h[8:12]
    if major in _AVIF_BRANDS:
        return "AVIF"
    box_end = min(int.from_bytes(h[0:4], "big"), len(h))
    compatible = {h[i : i + 4] for i in range(16, box_end - 3, 4)}
    if compatible & _AVIF_BRANDS and (major in _AVIF_BRANDS or major in {b"mif1", b"msf1"}):
        return "AVIF"
    if major in _HEIF_BRANDS or compatible & _HEIF_BRANDS - {b"mif1", b"msf1"}:
        return "HEIF"
    return None


def sniff_format(header: bytes) -> str | None:
    """The image format named by the magic bytes at the start of a file (Pillow's names), or None.

    Pure: looks at the first ``HEADER_BYTES`` bytes only. Recognises JPEG, PNG, GIF, WEBP,
    TIFF (and so TIFF-based camera raw files), BMP, ICO, HEIF, AVIF, JPEG2000, JXL, QOI, PPM.
    """
    h = bytes(header[:HEADER_BYTES])
    if h.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if h.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if h[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if h[:4] == b"RIFF" and h[8:12] == b"WEBP":
        return "WEBP"
    if h[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if len(h) >= 12 and h[4:8] == b"ftyp":
        return _sniff_isobmff(h)
    if h.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):  # JP2 box, raw codestream
        return "JPEG2000"
    if h.startswith((b"\x00\x00\x00\x0cJXL \r\n\x87\n", b"\xff\x0a")):  # container, raw codestream
        return "JXL"
    if h[:4] == b"qoif":
        return "QOI"
    if h[:2] == b"BM" and len(h) >= 18 and int.from_bytes(h[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    if h[:4] == b"\x00\x00\x01\x00" and len(h) >= 6 and h[4:6] != b"\x00\x00":
        return "ICO"
    if _PPM_MAGIC.match(h):
        return "PPM"
    return None


def is_image_candidate(path: Path, header: bytes | None = None) -> bool:
    """Whether the indexer should try to decode ``path``.

    True if the extension (any case) is in :data:`IMAGE_EXTENSIONS` (without reading the file),
    else if ``header`` (or, when None, the file's first bytes) sniffs as an image.
    An unreadable file without an image extension is not a candidate.
    """
    if Path(path).suffix.lower() in IMAGE_EXTENSIONS:
        return True
    if header is None:
        try:
            with open(path, "rb") as fp:
                header = fp.read(HEADER_BYTES)
        except OSError:
            return False
    return sniff_format(header) is not None
