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

from PIL import Image, ImageFile

from search.errors import ImageDecodeError
from search.exif import displayed_size, orient, read_camera, read_exif
from search.formats import (
    HEADER_BYTES,
    IMAGE_EXTENSIONS,
    is_image_candidate,
    sniff_format,
)
from search.pixels import to_rgb

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

UNKNOWN_FORMAT: Final[str] = "UNKNOWN"
"""``ImageInfo.format`` of an in-memory ``PIL.Image`` that did not come from a file."""

# Pillow format names that may be decoded. Anything else Pillow could open is refused as
# 'not an image' (EPS would run Ghostscript; TGA/SPIDER/... have no magic and would claim junk).
_DECODABLE_FORMATS: Final[frozenset[str]] = frozenset(
    {"JPEG", "MPO", "PNG", "GIF", "WEBP", "TIFF", "BMP", "DIB", "ICO", "AVIF", "HEIF", "JPEG2000", "QOI", "PPM"}
)

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
    camera_make: str | None = None  # EXIF Make
    camera_model: str | None = None  # EXIF Model


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

def _format_of(im: Image.Image) -> str:
    return im.format or UNKNOWN_FORMAT


# --- pixels -----------------------------------------------------------------------------------------------


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
    orientation, taken_at = read_exif(im, header_only=False)
    info = ImageInfo(*displayed_size(full_size, orientation), _format_of(im), taken_at, *read_camera(im))

    out = to_rgb(im)
    if min_side is not None:
        factor = _reduce_factor(out.size, min_side)
        if factor > 1:
            out = out.reduce(factor)
    out = orient(out, orientation)
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
    orientation, taken_at = read_exif(im, header_only=True)
    return ImageInfo(*displayed_size(im.size, orientation), _format_of(im), taken_at, *read_camera(im))


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
    rgb = to_rgb(image)
    width, height = rgb.size
    longer = max(width, height)
    if longer > max_side:
        scale = max_side / longer
        size = (max(1, min(max_side, round(width * scale))), max(1, min(max_side, round(height * scale))))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
