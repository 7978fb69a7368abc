"""search.images: decoding untrusted files into RGB. Every image here is generated in the test."""

from __future__ import annotations

import io
import os
import resource
import struct
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from search.errors import ImageDecodeError
from search.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageInfo,
    decode_image,
    is_image_candidate,
    make_thumbnail,
    read_image_info,
    sniff_format,
)

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
PILLOW_LIMIT = Image.MAX_IMAGE_PIXELS


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def px(im: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = im.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def marked(size: tuple[int, int], marker: int = 10) -> Image.Image:
    """Green image with a red square in the top-left corner (to check orientation)."""
    im = Image.new("RGB", size, GREEN)
    im.paste(RED, (0, 0, marker, marker))
    return im


def reason_of(source: object, **kwargs: object) -> str:
    with pytest.raises(ImageDecodeError) as err:
        decode_image(source, **kwargs)  # type: ignore[arg-type]
    return err.value.reason


@pytest.fixture(autouse=True)
def _no_warnings_escape() -> object:
    """Nothing in this module may leak a warning (DecompressionBombWarning above all)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --- constants and sniffing ---------------------------------------------------------------------------


def test_constants() -> None:
    assert DEFAULT_MAX_PIXELS == 178_956_970
    assert {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".png",
        ".gif",
        ".webp",
        ".bmp",
        ".tif",
        ".tiff",
        ".heic",
        ".avif",
    } <= IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)
    assert ".txt" not in IMAGE_EXTENSIONS and ".pdf" not in IMAGE_EXTENSIONS


@pytest.mark.parametrize(
    ("fmt", "params", "expected"),
    [
        ("JPEG", {}, "JPEG"),
        ("PNG", {}, "PNG"),
        ("GIF", {}, "GIF"),
        ("WEBP", {"lossless": True}, "WEBP"),
        ("TIFF", {}, "TIFF"),
        ("TIFF", {"big_tiff": True}, "TIFF"),
        ("BMP", {}, "BMP"),
        ("ICO", {}, "ICO"),
        ("JPEG2000", {}, "JPEG2000"),
        ("PPM", {}, "PPM"),
        ("QOI", {}, "QOI"),
    ],
)
def test_sniff_format_of_pillow_output(fmt: str, params: dict[str, object], expected: str) -> None:
    data = encode(marked((16, 16)), fmt, **params)
    assert sniff_format(data[:32]) == expected
    assert sniff_format(data) == expected  # only the first 32 bytes matter


def test_sniff_format_of_avif() -> None:
    data = encode(marked((16, 16)), "AVIF", quality=50, speed=10)
    assert sniff_format(data[:32]) == "AVIF"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIF"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "HEIF"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "AVIF"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1avif", "AVIF"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", None),  # an MP4 video
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n\x00\x00\x00\x14ftypjxl ", "JXL"),
        (b"\xff\x0a\xfa\x7f", "JXL"),
        (b"", None),
        (b"\xff\xd8", None),  # too short to tell
        (b"hello, world: just some text\n", None),
        (b"BMW is a car brand, not a bitmap", None),
        (b"P6\n4 4\n255\n", "PPM"),
        (b"%PDF-1.7\n", None),
    ],
)
def test_sniff_format_handmade_headers(header: bytes, expected: str | None) -> None:
    assert sniff_format(header) == expected


def test_is_image_candidate(tmp_path: Path) -> None:
    upper = tmp_path / "PHOTO.JPG"
    upper.write_bytes(b"not even read")
    assert is_image_candidate(upper)

    bare_jpeg = tmp_path / "IMG_0001"
    bare_jpeg.write_bytes(encode(marked((8, 8)), "JPEG"))
    assert is_image_candidate(bare_jpeg)

    text = tmp_path / "notes.txt"
    text.write_text("shopping list: eggs, milk\n")
    assert not is_image_candidate(text)

    png_as_txt = tmp_path / "oops.txt"
    png_as_txt.write_bytes(encode(marked((8, 8)), "PNG"))
    assert is_image_candidate(png_as_txt)

    # The header given by the caller wins over the file (which is then not read at all).
    assert is_image_candidate(tmp_path / "does-not-exist", header=b"\x89PNG\r\n\x1a\n" + bytes(24))
    assert not is_image_candidate(bare_jpeg, header=b"plain text")

    # Unreadable: only the extension counts.
    assert is_image_candidate(tmp_path / "vanished.heic")
    assert not is_image_candidate(tmp_path / "vanished")
    assert not is_image_candidate(tmp_path)  # a directory


# --- modes -> RGB -----------------------------------------------------------------------------------------


def test_rgb_png_roundtrip_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, size=(23, 37, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(arr).save(path)
    im, info = decode_image(path)
    assert im.mode == "RGB" and im.size == (37, 23)
    assert np.array_equal(np.asarray(im), arr)
    assert info == ImageInfo(width=37, height=23, format="PNG", taken_at=None)


def test_rgba_composited_on_white() -> None:
    arr = np.zeros((2, 3, 4), dtype=np.uint8)
    arr[0, 0] = (255, 0, 0, 0)  # invisible red -> white
    arr[0, 1] = (255, 0, 0, 255)  # opaque red
    arr[0, 2] = (255, 0, 0, 128)  # half red on white
    arr[1, :] = (0, 0, 255, 255)
    im, info = decode_image(encode(Image.fromarray(arr), "PNG"))  # RGBA from the shape: no deprecated mode argument
    assert im.mode == "RGB"
    assert px(im, (0, 0)) == WHITE
    assert px(im, (1, 0)) == RED
    assert close_to(px(im, (2, 0)), (255, 127, 127), tol=2)
    assert px(im, (0, 1)) == BLUE
    assert info.format == "PNG"


def test_la_composited_on_white() -> None:
    im = Image.new("LA", (2, 1), (0, 0))  # black, fully transparent
    im.putpixel((1, 0), (0, 255))  # black, opaque
    out, _ = decode_image(encode(im, "PNG"))
    assert px(out, (0, 0)) == WHITE
    assert px(out, (1, 0)) == (0, 0, 0)


def test_premultiplied_modes() -> None:
    out, _ = decode_image(Image.new("RGBa", (1, 1), (0, 0, 0, 0)))
    assert px(out, (0, 0)) == WHITE
    out, _ = decode_image(Image.new("La", (1, 1), (0, 0)))
    assert px(out, (0, 0)) == WHITE


def test_palette_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    im.putpixel((0, 0), 0)  # red, transparent
    im.putpixel((1, 0), 1)  # blue
    path = tmp_path / "p.png"
    im.save(path, transparency=0)
    with Image.open(path) as check:
        assert check.mode == "P" and "transparency" in check.info
    out, _ = decode_image(path)
    assert px(out, (0, 0)) == WHITE
    assert px(out, (1, 0)) == BLUE


def test_palette_without_transparency_and_pa() -> None:
    im = Image.new("P", (1, 1))
    im.putpalette([10, 20, 30] + [0] * 765)
    out, _ = decode_image(encode(im, "PNG"))
    assert px(out, (0, 0)) == (10, 20, 30)

    pa = Image.new("PA", (2, 1))
    pa.putpalette([0, 128, 0] + [0] * 765)
    pa.putpixel((0, 0), (0, 0))
    pa.putpixel((1, 0), (0, 255))
    out, _ = decode_image(pa)
    assert px(out, (0, 0)) == WHITE
    assert px(out, (1, 0)) == (0, 128, 0)


def test_bilevel(tmp_path: Path) -> None:
    im = Image.new("1", (4, 1), 0)
    im.putpixel((2, 0), 1)
    path = tmp_path / "bits.png"
    im.save(path)
    out, _ = decode_image(path)
    assert [px(out, (x, 0)) for x in range(4)] == [(0, 0, 0), (0, 0, 0), WHITE, (0, 0, 0)]


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk_cyan(fmt: str) -> None:
    im = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    out, info = decode_image(encode(im, fmt))
    assert info.format == fmt
    assert close_to(px(out, (4, 4)), (0, 255, 255), tol=6)


def test_ycbcr_lab_hsv() -> None:
    ycc = Image.new("RGB", (1, 1), (200, 30, 90)).convert("YCbCr")
    assert close_to(px(decode_image(ycc)[0], (0, 0)), (200, 30, 90), tol=3)

    hsv = Image.new("HSV", (1, 1), (0, 255, 255))  # hue 0 = pure red
    assert px(decode_image(hsv)[0], (0, 0)) == RED

    white_lab = Image.new("LAB", (1, 1), (255, 128, 128))  # L=100, a=b=0
    assert close_to(px(decode_image(white_lab)[0], (0, 0)), WHITE, tol=4)
    black_lab = Image.new("LAB", (1, 1), (0, 128, 128))
    assert close_to(px(decode_image(black_lab)[0], (0, 0)), (0, 0, 0), tol=4)


def _gradient16(width: int = 256) -> np.ndarray:
    return np.tile(np.linspace(0, 65535, width).astype(np.uint16), (4, 1))


def test_16bit_png_gradient_spans_full_range(tmp_path: Path) -> None:
    arr = _gradient16()
    im16 = Image.frombytes("I;16", (arr.shape[1], arr.shape[0]), arr.astype("<u2").tobytes())
    path = tmp_path / "deep.png"
    im16.save(path)
    out, _ = decode_image(path)
    row = np.asarray(out)[0, :, 0]
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row.astype(int)) >= 0)  # monotonic, not clipped to a plateau
    assert len(np.unique(row)) > 200


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16bit_modes_scale_by_actual_range(mode: str) -> None:
    arr = np.tile(np.arange(1000, 5096, 16, dtype=np.uint16), (2, 1))  # a 12-bit-ish range, not 0..65535
    raw = arr.astype("<u2" if mode == "I;16" else ">u2").tobytes()
    im = Image.frombytes(mode, (arr.shape[1], arr.shape[0]), raw)
    assert im.mode == mode
    row = np.asarray(decode_image(im)[0])[0, :, 1]
    assert row[0] == 0 and row[-1] == 255
    assert abs(int(row[len(row) // 2]) - 128) <= 2


def test_32bit_int_and_float_tiff() -> None:
    ints = np.array([[-70000, 0, 70000]], dtype=np.int32)
    out, info = decode_image(encode(Image.fromarray(ints), "TIFF"))
    assert info.format == "TIFF"
    assert [px(out, (x, 0))[0] for x in range(3)] == [0, 128, 255]

    floats = np.array([[-1.0, 0.0, 3.0]], dtype=np.float32)
    im = Image.fromarray(floats)
    assert im.mode == "F"
    out, _ = decode_image(encode(im, "TIFF"))
    assert [px(out, (x, 0)) for x in range(3)] == [(0, 0, 0), (64, 64, 64), WHITE]  # 1/4 of the way


def test_float_nan_and_constant_images() -> None:
    out, _ = decode_image(Image.fromarray(np.array([[np.nan, 0.0, 1.0]], dtype=np.float32)))
    assert [px(out, (x, 0))[0] for x in range(3)] == [0, 0, 255]
    all_nan = Image.fromarray(np.full((2, 2), np.nan, np.float32))
    assert px(decode_image(all_nan)[0], (0, 0)) == (0, 0, 0)
    constant_white = Image.frombytes("I;16", (2, 2), np.full((2, 2), 65535, "<u2").tobytes())
    assert px(decode_image(constant_white)[0], (1, 1)) == WHITE
    constant_black = Image.fromarray(np.zeros((2, 2), np.float32))
    assert px(decode_image(constant_black)[0], (1, 1)) == (0, 0, 0)


def test_pil_source_is_copied_not_mutated() -> None:
    src = Image.new("RGB", (3, 3), RED)
    out, info = decode_image(src)
    assert out is not src
    out.putpixel((0, 0), BLUE)
    assert px(src, (0, 0)) == RED
    assert info == ImageInfo(3, 3, "UNKNOWN", None)


# --- orientation and metadata ----------------------------------------------------------------------------


def _exif(orientation: int | None = None, original: str | None = None, plain: str | None = None) -> Image.Exif:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if plain is not None:
        exif[0x0132] = plain
    if original is not None:
        exif.get_ifd(0x8769)[0x9003] = original
    return exif


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_orientation_6_rotates_clockwise(fmt: str) -> None:
    stored = marked((40, 20), marker=10)  # red square top-left of a landscape image
    data = encode(stored, fmt, exif=_exif(orientation=6), **({"quality": 95} if fmt != "PNG" else {}))
    out, info = decode_image(data)
    assert out.size == (20, 40)
    assert (info.width, info.height) == (20, 40)
    assert info.format == fmt
    # Rotating 90 degrees clockwise puts the top-left corner at the top right.
    assert close_to(px(out, (15, 4)), RED, tol=40)
    assert close_to(px(out, (4, 4)), GREEN, tol=40)
    assert close_to(px(out, (15, 34)), GREEN, tol=40)
    # The orientation is spent: decoding the result again must not rotate it a second time.
    again, again_info = decode_image(out)
    assert again.size == (20, 40) and (again_info.width, again_info.height) == (20, 40)
    assert read_image_info(data) == info


@pytest.mark.parametrize(
    ("orientation", "size", "red_at"),
    [(1, (40, 20), (4, 4)), (3, (40, 20), (35, 15)), (8, (20, 40), (4, 35)), (2, (40, 20), (35, 4))],
)
def test_other_orientations(orientation: int, size: tuple[int, int], red_at: tuple[int, int]) -> None:
    out, info = decode_image(encode(marked((40, 20)), "PNG", exif=_exif(orientation=orientation)))
    assert out.size == size == (info.width, info.height)
    assert px(out, red_at) == RED


def test_taken_at_from_datetime_original() -> None:
    data = encode(marked((8, 8)), "JPEG", exif=_exif(original="2021:07:04 12:34:56", plain="2020:01:01 00:00:00"))
    assert decode_image(data)[1].taken_at == datetime(2021, 7, 4, 12, 34, 56)
    assert read_image_info(data).taken_at == datetime(2021, 7, 4, 12, 34, 56)


def test_taken_at_falls_back_to_datetime_and_tolerates_junk() -> None:
    plain_only = encode(marked((8, 8)), "JPEG", exif=_exif(plain="2019:12:31 23:59:58"))
    assert decode_image(plain_only)[1].taken_at == datetime(2019, 12, 31, 23, 59, 58)
    zeros = encode(marked((8, 8)), "JPEG", exif=_exif(original="0000:00:00 00:00:00"))
    assert decode_image(zeros)[1].taken_at is None
    junk = encode(marked((8, 8)), "PNG", exif=_exif(original="yesterday-ish", plain="2018:02:30 10:00:00"))
    assert decode_image(junk)[1].taken_at is None
    assert decode_image(encode(marked((8, 8)), "JPEG"))[1].taken_at is None


def test_corrupt_exif_is_ignored_not_fatal() -> None:
    data = encode(marked((8, 8)), "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    out, info = decode_image(data)
    assert out.size == (8, 8) and info.taken_at is None


# --- animations -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "params"), [("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True})])
def test_animation_gives_first_frame(fmt: str, params: dict[str, object]) -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in (RED, BLUE, GREEN)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **params)
    with Image.open(io.BytesIO(data)) as check:
        assert getattr(check, "n_frames", 1) == 3
    out, info = decode_image(data)
    assert info.format == fmt
    assert close_to(px(out, (5, 5)), RED, tol=3)


# --- failures -----------------------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert reason_of(path) == "empty file"
    assert reason_of(b"") == "empty file"
    with pytest.raises(ImageDecodeError, match="empty file"):
        read_image_info(path)


def test_not_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert reason_of(noise) == "not an image (unrecognised format)"

    text = tmp_path / "readme.png"
    text.write_text("This is not a PNG, it is a text file.\n" * 20)
    assert reason_of(text) == "not an image (unrecognised format)"
    with pytest.raises(ImageDecodeError) as err:
        read_image_info(text)
    assert err.value.reason == "not an image (unrecognised format)"


def test_formats_outside_the_allow_list_are_refused() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    assert reason_of(eps) == "not an image (unrecognised format)"
    tga = encode(marked((8, 8)), "TGA")  # Pillow could read it, but TGA has no magic bytes
    assert reason_of(tga) == "not an image (unrecognised format)"


def test_unsupported_but_recognised_formats() -> None:
    try:
        import pillow_heif  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
        assert reason_of(heic) == "unsupported format (HEIF)"
    jxl = b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(64)
    assert reason_of(jxl) == "unsupported format (JXL)"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF"])
def test_truncated(fmt: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(arr), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    assert reason_of(path) == "truncated or corrupt image data"
    # Pillow's switch for tolerating truncation is left alone.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_header_only_png_is_corrupt_not_unknown() -> None:
    assert reason_of(b"\x89PNG\r\n\x1a\n") == "truncated or corrupt image data"


def test_corrupt_middle_of_png() -> None:
    data = bytearray(encode(marked((64, 64)), "PNG"))
    data[60:80] = bytes(20)  # smash the IDAT data (and its CRC check)
    assert reason_of(bytes(data)) == "truncated or corrupt image data"


def test_unreadable_paths(tmp_path: Path) -> None:
    vanished = tmp_path / "gone.jpg"
    assert reason_of(vanished) == "unreadable: no such file or directory"
    with pytest.raises(ImageDecodeError, match="^unreadable: no such file"):
        read_image_info(vanished)
    assert reason_of(tmp_path).startswith("unreadable: ")  # a directory


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a chmod-000 file")
def test_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(encode(marked((4, 4)), "PNG"))
    path.chmod(0)
    try:
        assert reason_of(path) == "unreadable: permission denied"
    finally:
        path.chmod(0o644)


def test_errors_chain_the_pillow_cause() -> None:
    with pytest.raises(ImageDecodeError) as err:
        decode_image(encode(marked((64, 64)), "JPEG")[:300])
    assert err.value.__cause__ is not None
    assert str(err.value) == err.value.reason


# --- decompression bombs ---------------------------------------------------------------------------------


def _forbid_loading(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make decoding pixel data fail, and record every attempt (in case the failure is swallowed)."""
    calls: list[str] = []

    def no_load(self: ImageFile.ImageFile) -> None:
        calls.append(str(self.format))
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    return calls


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size: IHDR, a tiny IDAT and IEND (the pixels are never there)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def test_bomb_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _png_header_only(20_000, 20_000)
    loads = _forbid_loading(monkeypatch)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reason_of(data, max_pixels=10_000_000) == (
            "decompression bomb: 20000 x 20000 pixels is over the limit of 10000000"
        )
        # Over the default limit too (400M > 178M, where Pillow itself would raise a different error).
        assert reason_of(data) == f"decompression bomb: 20000 x 20000 pixels is over the limit of {DEFAULT_MAX_PIXELS}"
    assert time.perf_counter() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100_000  # KiB: nothing allocated
    assert loads == []


def test_pillow_warning_zone_leaks_no_warning() -> None:
    # 10000 x 10000 = 100M: over Pillow's MAX_IMAGE_PIXELS (89M), under twice that, where Image.open would
    # only warn. Here only max_pixels decides, and nothing is warned either way.
    data = _png_header_only(10_000, 10_000)
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < 100_000_000 <= DEFAULT_MAX_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image_info(data) == ImageInfo(10_000, 10_000, "PNG", None)
        assert reason_of(data, max_pixels=99_999_999) == (
            "decompression bomb: 10000 x 10000 pixels is over the limit of 99999999"
        )


def test_limit_is_inclusive_and_per_call() -> None:
    data = encode(marked((100, 100)), "PNG")
    assert decode_image(data, max_pixels=10_000)[0].size == (100, 100)
    assert reason_of(data, max_pixels=9_999) == "decompression bomb: 100 x 100 pixels is over the limit of 9999"
    assert Image.MAX_IMAGE_PIXELS == PILLOW_LIMIT  # the global is untouched


def _gif_with_oversized_frame() -> bytes:
    """A GIF whose 64 x 64 frame is larger than its 8 x 8 logical screen: Pillow grows the canvas to
    4096 pixels and checks that size itself, inside the plugin."""
    gif = bytearray(encode(Image.new("P", (64, 64)), "GIF"))
    gif[6:10] = struct.pack("<HH", 8, 8)
    return bytes(gif)


def test_pillow_internal_hard_limit_becomes_decode_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 > 2 x 1000: DecompressionBombError
    assert reason_of(_gif_with_oversized_frame()) == "decompression bomb: 4096 pixels is over pillow's limit of 2000"


def test_pillow_internal_soft_limit_neither_warns_nor_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # Between Pillow's soft and hard limits only max_pixels decides (the autouse fixture makes warnings errors).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    out, info = decode_image(_gif_with_oversized_frame())
    assert out.size == (64, 64) and info.format == "GIF"
    tiff = encode(marked((60, 40)), "TIFF")  # 2400 px; TIFF's load checks its tile size again
    assert decode_image(tiff)[0].size == (60, 40)
    assert reason_of(tiff, max_pixels=2000) == "decompression bomb: 60 x 40 pixels is over the limit of 2000"


def test_warning_filters_are_left_as_found() -> None:
    before = list(warnings.filters)
    decode_image(encode(marked((8, 8)), "PNG"))
    assert warnings.filters == before
    # A caller's own filter of the same kind is not taken away.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    mine = list(warnings.filters)
    decode_image(encode(marked((8, 8)), "PNG"))
    assert warnings.filters == mine


def test_concurrent_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # every GIF below trips Pillow's soft limit
    sources = [
        encode(marked((300, 200)), "JPEG", exif=_exif(orientation=6)),
        _gif_with_oversized_frame(),
        encode(Image.new("RGBA", (50, 50), (255, 0, 0, 0)), "PNG"),
        b"junk" * 100,
    ] * 25
    before = list(warnings.filters)

    def run(source: bytes) -> tuple[int, int] | str:
        try:
            return decode_image(source, min_side=150)[0].size
        except ImageDecodeError as err:
            return err.reason

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, sources))
    assert results == [(200, 300), (64, 64), (50, 50), "not an image (unrecognised format)"] * 25
    assert warnings.filters == before


# --- reduced decoding -------------------------------------------------------------------------------------


def test_jpeg_draft_keeps_short_side_and_reports_full_size(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    marked((4000, 3000), marker=800).save(path, quality=90)
    out, info = decode_image(path, min_side=224)
    assert 224 <= min(out.size) < 3000
    assert out.size == (500, 375)  # 1/8 DCT scaling: the largest that keeps 375 >= 224
    assert (info.width, info.height) == (4000, 3000)
    assert close_to(px(out, (20, 20)), RED, tol=30) and close_to(px(out, (400, 300)), GREEN, tol=30)

    full, _ = decode_image(path)
    assert full.size == (4000, 3000)
    assert decode_image(path, min_side=1000)[0].size == (2000, 1500)
    assert decode_image(path, min_side=3000)[0].size == (4000, 3000)
    assert decode_image(path, min_side=5000)[0].size == (4000, 3000)  # never enlarged


def test_jpeg_draft_with_orientation() -> None:
    data = encode(marked((4000, 3000), marker=800), "JPEG", quality=90, exif=_exif(orientation=6))
    out, info = decode_image(data, min_side=224)
    assert out.size == (375, 500)
    assert (info.width, info.height) == (3000, 4000)
    assert close_to(px(out, (350, 20)), RED, tol=30)  # top-left went to the top right
    assert close_to(px(out, (20, 20)), GREEN, tol=30)


def test_png_reduce_keeps_short_side() -> None:
    data = encode(marked((1000, 700), marker=200), "PNG")
    out, info = decode_image(data, min_side=224)
    assert out.size == (334, 234)  # factor 3 (700 // 224); reduce rounds up
    assert min(out.size) >= 224
    assert (info.width, info.height) == (1000, 700)
    assert px(out, (10, 10)) == RED and px(out, (300, 200)) == GREEN


def test_reduce_applies_to_pil_sources_and_small_images_are_left_alone() -> None:
    out, info = decode_image(Image.new("L", (900, 450), 77), min_side=100)
    assert out.size == (225, 113) and out.mode == "RGB" and px(out, (0, 0)) == (77, 77, 77)
    assert (info.width, info.height) == (900, 450)
    wide, info = decode_image(encode(marked((8000, 60)), "PNG"), min_side=224)
    assert wide.size == (8000, 60) and (info.width, info.height) == (8000, 60)


def test_tiny_images() -> None:
    out, info = decode_image(encode(Image.new("RGB", (1, 1), BLUE), "PNG"), min_side=224)
    assert out.size == (1, 1) and px(out, (0, 0)) == BLUE
    assert info == ImageInfo(1, 1, "PNG", None)
    out, _ = decode_image(encode(Image.new("RGB", (1, 1), BLUE), "JPEG"), min_side=1)
    assert out.size == (1, 1)


def test_min_side_and_max_pixels_validated() -> None:
    with pytest.raises(ValueError):
        decode_image(Image.new("RGB", (1, 1)), min_side=0)
    with pytest.raises(ValueError):
        decode_image(Image.new("RGB", (1, 1)), max_pixels=0)


# --- sources --------------------------------------------------------------------------------------------------


def test_png_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "liar.jpg"
    path.write_bytes(encode(marked((12, 6)), "PNG"))
    out, info = decode_image(path)
    assert info.format == "PNG" and out.size == (12, 6)
    assert read_image_info(path).format == "PNG"


def test_stream_and_str_sources(tmp_path: Path) -> None:
    data = encode(marked((12, 6)), "PNG")
    stream = io.BytesIO(data)
    stream.seek(5)  # rewound like Image.open does
    assert decode_image(stream)[1].width == 12
    assert not stream.closed
    path = tmp_path / "x.png"
    path.write_bytes(data)
    assert decode_image(str(path))[1] == ImageInfo(12, 6, "PNG", None)
    assert decode_image(bytearray(data))[0].size == (12, 6)
    assert read_image_info(io.BytesIO(data)) == ImageInfo(12, 6, "PNG", None)
    assert read_image_info(str(path)) == ImageInfo(12, 6, "PNG", None)

    class Pipe:  # a stream that can only be read, like a socket or a pipe
        def __init__(self, payload: bytes) -> None:
            self._buf = io.BytesIO(payload)

        def read(self, n: int = -1) -> bytes:
            return self._buf.read(n)

    assert decode_image(Pipe(data))[1] == ImageInfo(12, 6, "PNG", None)  # type: ignore[arg-type]
    assert read_image_info(Pipe(data)) == ImageInfo(12, 6, "PNG", None)  # type: ignore[arg-type]


def test_output_is_detached_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    marked((32, 16)).save(path)
    out, _ = decode_image(path)
    assert type(out) is Image.Image  # not an ImageFile holding a file or the encoded bytes
    assert out.info == {}
    path.unlink()
    assert out.resize((4, 2)).size == (4, 2)


def test_read_image_info_does_not_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    jpeg = encode(marked((40, 20)), "JPEG", exif=_exif(orientation=6, original="2001:02:03 04:05:06"))
    png = encode(marked((40, 20)), "PNG", exif=_exif(orientation=8))
    loads = _forbid_loading(monkeypatch)
    assert read_image_info(jpeg) == ImageInfo(20, 40, "JPEG", datetime(2001, 2, 3, 4, 5, 6))
    assert read_image_info(png) == ImageInfo(20, 40, "PNG", None)
    huge = _png_header_only(20_000, 20_000)  # describing is not decoding: no pixel limit here
    assert read_image_info(huge) == ImageInfo(20_000, 20_000, "PNG", None)
    assert loads == []


# --- thumbnails ---------------------------------------------------------------------------------------------


def test_make_thumbnail() -> None:
    thumb = make_thumbnail(Image.new("RGBA", (1000, 500), (255, 0, 0, 0)))
    assert thumb[:3] == b"\xff\xd8\xff"
    with Image.open(io.BytesIO(thumb)) as im:
        assert im.format == "JPEG" and im.size == (256, 128) and im.mode == "RGB"
        assert close_to(px(im, (128, 64)), WHITE, tol=3)  # transparent -> white

    with Image.open(io.BytesIO(make_thumbnail(marked((300, 900)), max_side=90))) as im:
        assert im.size == (30, 90)
    with Image.open(io.BytesIO(make_thumbnail(Image.new("RGB", (100, 50), BLUE)))) as im:
        assert im.size == (100, 50)  # never enlarged
        assert close_to(px(im, (50, 25)), BLUE, tol=6)
    src = Image.new("RGB", (600, 600), GREEN)
    make_thumbnail(src, max_side=64)
    assert src.size == (600, 600)  # input untouched
    with pytest.raises(ValueError):
        make_thumbnail(src, max_side=0)
