"""Bytes -> RGB images: the one place where untrusted image files are decoded.

Everything here is a small function without side effects on global state: Pillow's
``MAX_IMAGE_PIXELS`` and ``ImageFile.LOAD_TRUNCATED_IMAGES`` are never touched, the
pixel limit is a parameter, and every failure becomes :class:`ImageDecodeError`
with a short lower-case ``reason``. (The one exception: while a decode runs, Pillow's
warnings about the file are filtered out; see ``_PillowWarningSilencer``.) Safe to call from
several threads at once.

Only a fixed set of raster formats is ever handed to Pillow (see ``_DECODABLE_FORMATS``):
nothing that would start Ghostscript (EPS) or another external program on a file found
in a photo folder.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, BinaryIO, Final, TypeAlias, cast

import numpy as np
from PIL import Image, ImageFile

from search.errors import ImageDecodeError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "UNKNOWN_FORMAT",
    "FileSource",
    "ImageInfo",
    "ImageSource",
    "decode_image",
    "is_image_candidate",
    "make_thumbnail",
    "read_image_info",
    "sniff_format",
]

FileSource: TypeAlias = "bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO | IO[bytes]"
"""An encoded image: its bytes, a path (``str`` is a path, not data) or a binary stream."""
ImageSource: TypeAlias = "FileSource | Image.Image"

DEFAULT_MAX_PIXELS: Final[int] = 178_956_970  # == 2 x Image.MAX_IMAGE_PIXELS: where Pillow itself raises
"""Images with more pixels than this are refused before any pixel data is decoded. (Pillow only warns
between its MAX_IMAGE_PIXELS, 89_478_485, and twice that; here there is no warning zone, and a frame
or tile that a plugin finds over twice MAX_IMAGE_PIXELS is refused whatever ``max_pixels`` says.)"""

HEADER_BYTES: Final[int] = 32
"""How many leading bytes :func:`sniff_format` looks at."""

UNKNOWN_FORMAT: Final[str] = "UNKNOWN"
"""``ImageInfo.format`` of an in-memory ``PIL.Image`` that did not come from a file."""

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

# Pillow format names that may be decoded. Anything else Pillow could open is refused as
# 'not an image' (EPS would run Ghostscript; TGA/SPIDER/... have no magic and would claim junk).
_DECODABLE_FORMATS: Final[frozenset[str]] = frozenset(
    {"JPEG", "MPO", "PNG", "GIF", "WEBP", "TIFF", "BMP", "DIB", "ICO", "AVIF", "HEIF", "JPEG2000", "QOI", "PPM"}
)

_ORIENTATION_TAG: Final = 0x0112
_DATETIME_TAG: Final = 0x0132
_EXIF_IFD: Final = 0x8769
_DATETIME_ORIGINAL_TAG: Final = 0x9003

# EXIF orientation -> the transpose that makes the stored pixels look as displayed (as ImageOps.exif_transpose).
_ORIENTATION_TRANSPOSE: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_WHITE: Final = (255, 255, 255)
_HIGH_BIT_MODES: Final = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})

REASON_EMPTY: Final = "empty file"
REASON_NOT_IMAGE: Final = "not an image (unrecognised format)"
REASON_CORRUPT: Final = "truncated or corrupt image data"
REASON_OUT_OF_MEMORY: Final = "out of memory while decoding"


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the catalog stores about an image. Sizes are as displayed (EXIF orientation applied)."""

    width: int
    height: int
    format: str  # Pillow's format name: 'JPEG', 'PNG', 'MPO', 'HEIF'...
    taken_at: datetime | None  # EXIF DateTimeOriginal, else DateTime; naive (no time zone)


# --- recognising image files ------------------------------------------------------------------------

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


# --- opening ------------------------------------------------------------------------------------------


@functools.cache
def _register_optional_plugins() -> None:
    """HEIC/HEIF through pillow-heif when it is installed; never a hard dependency."""
    try:
        from pillow_heif import register_heif_opener  # type: ignore[import-not-found]
    except ImportError:
        return
    register_heif_opener()


class _PillowWarningSilencer:
    """Keeps Pillow's warnings about the file being decoded quiet while any thread is decoding here.

    - DecompressionBombWarning: the pixel limit is ``max_pixels``, checked by this module before
      decoding. Pillow's soft limit (``Image.MAX_IMAGE_PIXELS``, 89M pixels) is half the default one and
      some plugins (TIFF, MPO, ICO, GIF) check it again internally: a legitimate 100M-pixel scan would
      warn (or, under an 'error' filter, fail). Pillow's hard limit (twice that) still raises
      DecompressionBombError, which becomes ImageDecodeError.
    - UserWarning from PIL modules: remarks about odd files ('Corrupt EXIF data', 'malformed MPO'...),
      which would otherwise fail a decode wherever warnings are errors (tests, ``-W error``).

    ``warnings.catch_warnings`` is not used: it snapshots and restores the process-wide filter list, which
    goes wrong when the indexer's worker threads overlap. Instead these 'ignore' entries are added while at
    least one decode is running and removed (by value, not by restoring a snapshot) by the last one out.
    An entry that is already there is neither added nor removed.
    """

    _QUIET: Final[tuple[tuple[type[Warning], str], ...]] = (
        (Image.DecompressionBombWarning, ""),
        (UserWarning, r"PIL\."),  # a module regex, as in ``warnings.filterwarnings``
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._installed: list[tuple[object, ...]] = []

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                for category, module in self._QUIET:
                    # The entry filterwarnings() builds: (action, message, category, module, lineno).
                    entry = ("ignore", None, category, re.compile(module) if module else None, 0)
                    if entry not in warnings.filters:
                        warnings.filterwarnings("ignore", category=category, module=module)
                        self._installed.append(entry)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    filters = cast("list[tuple[object, ...]]", warnings.filters)
                    for installed in self._installed:
                        with contextlib.suppress(ValueError):  # gone: someone restored an older snapshot
                            filters.remove(installed)
                    self._installed.clear()


_quiet_pillow_warnings = _PillowWarningSilencer()


def _identify(fp: IO[bytes]) -> tuple[ImageFile.ImageFile | None, str | None]:
    """``Image.open`` restricted to ``_DECODABLE_FORMATS`` and without Pillow's global pixel limit
    (the caller checks its own limit). Returns (image, None) or (None, name of a format Pillow
    recognised but cannot decode here, if any)."""
    _register_optional_plugins()
    fp.seek(0)
    prefix = fp.read(16)
    tried: set[str] = set()
    unsupported: str | None = None
    for loader in (Image.preinit, Image.init):
        loader()
        for fmt in list(Image.ID):
            if fmt in tried or fmt not in _DECODABLE_FORMATS:
                continue
            tried.add(fmt)
            factory, accept = Image.OPEN[fmt]
            verdict = accept(prefix) if accept else True
            if isinstance(verdict, str):  # "recognised, but support is not installed"
                unsupported = fmt
                continue
            if not verdict:
                continue
            fp.seek(0)
            try:
                return factory(fp, ""), None
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue  # not this format after all (Image.open does the same)
    return None, unsupported


def _unrecognised_reason(header: bytes, unsupported: str | None) -> str:
    sniffed = sniff_format(header)
    if unsupported is not None:
        return f"unsupported format ({unsupported})"
    if sniffed is None:
        return REASON_NOT_IMAGE
    if sniffed not in Image.OPEN:  # e.g. HEIF without pillow-heif, JXL
        return f"unsupported format ({sniffed})"
    return REASON_CORRUPT  # the magic is right but the header is not


def _bomb_reason(width: int, height: int, limit: int) -> str:
    return f"decompression bomb: {width} x {height} pixels is over the limit of {limit}"


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageDecodeError(_bomb_reason(width, height, max_pixels))


def _pillow_bomb_reason(exc: BaseException) -> str:
    """Pillow's own limit tripped inside a plugin (a frame or tile bigger than the image)."""
    match = re.search(r"\((\d+) pixels\)", str(exc))
    soft = Image.MAX_IMAGE_PIXELS
    limit = soft if isinstance(exc, Image.DecompressionBombWarning) or soft is None else 2 * soft
    what = f"{match[1]} pixels" if match else "image"
    return f"decompression bomb: {what} is over pillow's limit of {limit}"


def _unreadable(exc: OSError) -> ImageDecodeError:
    message = exc.strerror or str(exc) or type(exc).__name__
    return ImageDecodeError(f"unreadable: {message.lower()}")


def _seekable(stream: IO[bytes]) -> bool:
    seekable = getattr(stream, "seekable", None)
    return bool(seekable()) if callable(seekable) else False


def _read_all(source: FileSource) -> bytes:
    """The whole encoded file, read once. Streams are rewound first when they can be (like Image.open)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            return Path(source).read_bytes()
        except OSError as exc:
            raise _unreadable(exc) from exc
    try:
        if _seekable(source):
            source.seek(0)
        data = source.read()
    except OSError as exc:
        raise _unreadable(exc) from exc
    if not isinstance(data, bytes):
        raise TypeError("decode_image needs a binary stream")
    return data


# --- metadata -------------------------------------------------------------------------------------------

_EXIF_DATETIME: Final = re.compile(r"\s*(\d{4})[:\-/](\d{2})[:\-/](\d{2})[ T](\d{2}):(\d{2})(?::(\d{2}))?")


def _parse_exif_datetime(value: object) -> datetime | None:
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


def _read_exif(im: Image.Image, *, header_only: bool) -> tuple[int, datetime | None]:
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
            taken_at = _parse_exif_datetime(exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL_TAG))
        if taken_at is None:
            taken_at = _parse_exif_datetime(exif.get(_DATETIME_TAG))
    except Exception:  # noqa: BLE001 - corrupt EXIF is common and harmless
        return 1, None
    if not isinstance(orientation, int) or orientation not in _ORIENTATION_TRANSPOSE:
        orientation = 1
    return orientation, taken_at


def _displayed_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    width, height = size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _format_of(im: Image.Image) -> str:
    return im.format or UNKNOWN_FORMAT


# --- pixels -----------------------------------------------------------------------------------------------


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


def _to_rgb(im: Image.Image) -> Image.Image:
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


def _reduce_factor(size: tuple[int, int], min_side: int) -> int:
    """Largest integer factor that keeps the shorter side >= min_side (1 = no reduction)."""
    return max(1, min(size) // min_side)


def _draft_size(size: tuple[int, int], min_side: int) -> tuple[int, int] | None:
    """The size to ask JPEG's draft mode for: DCT scaling by 1/2, 1/4 or 1/8 (rounded up) that keeps
    the shorter side >= min_side. None when no scaling is possible."""
    short = min(size)
    for scale in (8, 4, 2):
        if short >= scale and -(-short // scale) >= min_side:
            # draft picks the largest power of two <= min(w // req_w, h // req_h): exactly `scale` here.
            return (size[0] // scale, size[1] // scale)
    return None


def _orient(im: Image.Image, orientation: int) -> Image.Image:
    method = _ORIENTATION_TRANSPOSE.get(orientation)
    return im if method is None else im.transpose(method)


def _finish(
    im: Image.Image,
    *,
    from_file: bool,
    min_side: int | None,
    max_pixels: int,
) -> tuple[Image.Image, ImageInfo]:
    """Opened (not yet loaded) image -> (RGB image, info). Pillow errors propagate to the caller."""
    full_size = im.size
    _check_pixels(full_size, max_pixels)
    if min_side is not None and from_file and isinstance(im, ImageFile.ImageFile):
        draft = _draft_size(full_size, min_side)
        if draft is not None:
            im.draft("RGB", draft)  # a no-op for everything but JPEG/MPO
    im.load()
    orientation, taken_at = _read_exif(im, header_only=False)
    info = ImageInfo(*_displayed_size(full_size, orientation), format=_format_of(im), taken_at=taken_at)

    out = _to_rgb(im)
    if min_side is not None:
        factor = _reduce_factor(out.size, min_side)
        if factor > 1:
            out = out.reduce(factor)
    out = _orient(out, orientation)
    if out is im:
        out = im.copy()  # never hand back the caller's object or a file-backed ImageFile
    # Drop copied metadata: the orientation is applied now and must not be applied a second time.
    out.info = {}
    return out, info


def decode_image(
    source: ImageSource,
    *,
    min_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[Image.Image, ImageInfo]:
    """Decode an image file (path, bytes or binary stream) or convert a PIL image.

    Returns a new 8-bit RGB image, EXIF orientation applied, transparency composited on white, the
    first frame of an animation; plus :class:`ImageInfo` of the full-size image. With ``min_side`` the
    image may come back smaller (JPEG draft mode, else ``Image.reduce``) but its shorter side is still
    >= ``min_side`` (or untouched when it already is shorter). Images with more than ``max_pixels``
    pixels are refused before their pixel data is decoded.

    A path is read once, whole. A stream is rewound (if seekable) and read to its end; it is not closed.

    :raises ImageDecodeError: for every reason the source is not a decodable image.
    """
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be >= 1, got {min_side}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")

    if isinstance(source, Image.Image):
        im: Image.Image | None = source
        data = b""
    else:
        data = _read_all(source)
        if not data:
            raise ImageDecodeError(REASON_EMPTY)
        im = None

    with _quiet_pillow_warnings():
        try:
            if im is None:
                im, unsupported = _identify(io.BytesIO(data))
                if im is None:
                    raise ImageDecodeError(_unrecognised_reason(data[:HEADER_BYTES], unsupported))
                return _finish(im, from_file=True, min_side=min_side, max_pixels=max_pixels)
            return _finish(im, from_file=False, min_side=min_side, max_pixels=max_pixels)
        except ImageDecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageDecodeError(_pillow_bomb_reason(exc)) from exc
        except MemoryError as exc:
            raise ImageDecodeError(REASON_OUT_OF_MEMORY) from exc
        except Exception as exc:  # untrusted input: Pillow raises many kinds
            raise ImageDecodeError(REASON_CORRUPT) from exc


def _info_from_open(im: Image.Image) -> ImageInfo:
    orientation, taken_at = _read_exif(im, header_only=True)
    return ImageInfo(*_displayed_size(im.size, orientation), format=_format_of(im), taken_at=taken_at)


def read_image_info(source: ImageSource) -> ImageInfo:
    """:class:`ImageInfo` from the file's header, without decoding pixel data.

    No pixel limit applies (nothing is decoded); Pillow's own checks inside a plugin still raise.

    :raises ImageDecodeError: as :func:`decode_image`.
    """
    if isinstance(source, Image.Image):
        with _quiet_pillow_warnings():
            return _info_from_open(source)

    fp: IO[bytes]
    if isinstance(source, (bytes, bytearray, memoryview)):
        fp = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        try:
            fp = open(source, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise _unreadable(exc) from exc
    elif _seekable(source):
        fp = source
    else:
        fp = io.BytesIO(_read_all(source))

    try:
        with _quiet_pillow_warnings():
            try:
                fp.seek(0)
                header = fp.read(HEADER_BYTES)
                if not header:
                    raise ImageDecodeError(REASON_EMPTY)
                im, unsupported = _identify(fp)
                if im is None:
                    raise ImageDecodeError(_unrecognised_reason(header, unsupported))
                return _info_from_open(im)
            except ImageDecodeError:
                raise
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ImageDecodeError(_pillow_bomb_reason(exc)) from exc
            except MemoryError as exc:
                raise ImageDecodeError(REASON_OUT_OF_MEMORY) from exc
            except OSError as exc:
                if isinstance(source, (str, os.PathLike)) and exc.strerror:
                    raise _unreadable(exc) from exc
                raise ImageDecodeError(REASON_CORRUPT) from exc
            except Exception as exc:
                raise ImageDecodeError(REASON_CORRUPT) from exc
    finally:
        if fp is not source:
            fp.close()


# --- output -------------------------------------------------------------------------------------------------


def make_thumbnail(image: Image.Image, max_side: int = 256, *, quality: int = 85) -> bytes:
    """JPEG bytes of ``image`` shrunk so that its longer side is <= ``max_side`` (never enlarged).

    ``image`` is taken as displayed (pass :func:`decode_image`'s result); transparency becomes white.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    rgb = _to_rgb(image)
    width, height = rgb.size
    longer = max(width, height)
    if longer > max_side:
        scale = max_side / longer
        size = (max(1, min(max_side, round(width * scale))), max(1, min(max_side, round(height * scale))))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
