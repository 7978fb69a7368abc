"""A generated hostile corpus through the real indexing pipeline: every file is indexed correctly or
reported with its reason, never a crash or a hang, with exact counts.

Also: files that vanish or change between the walk and the read, a file unreadable for lack of permission
(read by a child that drops root), names that are not UTF-8, and a very large JPEG that is decoded small.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import Cli, write_image
from PIL import Image, JpegImagePlugin
from sqlalchemy import select
from sqlalchemy.orm import Session

from indexer.load import load_file
from indexer.run import BAD_NAME, index_paths
from indexer.walk import FoundFile
from indexer.writer import LibraryWriter
from search.catalog import FileRow
from search.encoder import Encoder
from search.images import decode_image
from search.library import Library

HAVE_HEIF = importlib.util.find_spec("pillow_heif") is not None
AS_ROOT = os.geteuid() == 0


def gradient(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * rng.uniform(1, 3) + yy * c * 7 + rng.uniform(0, 255)) % 256 for c in range(3)], axis=-1)
    return Image.fromarray(arr.astype(np.uint8))


def encoded(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 80x40, displayed rotated 90° clockwise: 40x80
    return encoded(gradient((80, 40), 5), "JPEG", exif=exif.tobytes())


def animated(fmt: str) -> bytes:
    frames = [gradient((48, 32), seed) for seed in range(3)]
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def palette_transparent() -> bytes:
    im = gradient((40, 30), 9).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encoded(im, "PNG", transparency=0)


def sixteen_bit(fmt: str, seed: int) -> bytes:
    yy, xx = np.mgrid[0:48, 0:64]
    arr = (np.sin(xx * (0.05 + 0.03 * seed) + yy * 0.11 * seed) + 1) * 30000 + 2000
    return encoded(Image.frombytes("I;16", (64, 48), arr.astype("<u2").tobytes()), fmt)


def float_tiff() -> bytes:
    yy, xx = np.mgrid[0:48, 0:64]
    arr = (np.cos(xx * 0.3) * np.sin(yy * 0.2) * 2.0 - 0.5).astype(np.float32)
    return encoded(Image.fromarray(arr), "TIFF")


def heic_or_fake() -> bytes:
    if HAVE_HEIF:
        from pillow_heif import register_heif_opener

        register_heif_opener()
        return encoded(gradient((64, 48), 11), "HEIF")
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)  # a HEIC header, no decoder


@dataclass(frozen=True)
class Case:
    name: str  # path under the corpus root
    make: Callable[[], bytes]
    expect: str  # 'indexed', 'skipped' or 'ignored'
    reason: str = ""  # for 'skipped': the start of the reason
    size: tuple[int, int] | None = None  # for 'indexed': (width, height) as displayed
    fmt: str | None = None


JPEG = lambda size=(64, 48), seed=1: encoded(gradient(size, seed), "JPEG")  # noqa: E731
PNG = lambda size=(64, 48), seed=2: encoded(gradient(size, seed), "PNG")  # noqa: E731
DEEP = "/".join(f"level{i:02d}" for i in range(60))

CASES = [
    # decoded and indexed, whatever their mode, size, animation or name
    Case("modes/cmyk.jpg", lambda: encoded(gradient((64, 48), 3).convert("CMYK"), "JPEG"), "indexed", size=(64, 48), fmt="JPEG"),
    Case("modes/gray16.png", lambda: sixteen_bit("PNG", 1), "indexed", size=(64, 48), fmt="PNG"),
    Case("modes/gray16.tif", lambda: sixteen_bit("TIFF", 2), "indexed", size=(64, 48), fmt="TIFF"),
    Case("modes/float.tif", float_tiff, "indexed", size=(64, 48), fmt="TIFF"),
    Case("modes/palette+transparency.png", palette_transparent, "indexed", size=(40, 30), fmt="PNG"),
    Case("modes/la.png", lambda: encoded(gradient((40, 30), 4).convert("LA"), "PNG"), "indexed", size=(40, 30), fmt="PNG"),
    Case("modes/rgba.png", lambda: encoded(gradient((40, 30), 6).convert("RGBA"), "PNG"), "indexed", size=(40, 30), fmt="PNG"),
    Case("modes/bilevel.bmp", lambda: encoded(gradient((40, 30), 7).convert("1"), "BMP"), "indexed", size=(40, 30), fmt="BMP"),
    Case("animated/anim.gif", lambda: animated("GIF"), "indexed", size=(48, 32), fmt="GIF"),
    Case("animated/anim.webp", lambda: animated("WEBP"), "indexed", size=(48, 32), fmt="WEBP"),
    Case("sizes/1x1.png", lambda: PNG((1, 1)), "indexed", size=(1, 1), fmt="PNG"),
    Case("sizes/8000x60.png", lambda: PNG((8000, 60)), "indexed", size=(8000, 60), fmt="PNG"),
    Case("sizes/60x8000.jpg", lambda: JPEG((60, 8000)), "indexed", size=(60, 8000), fmt="JPEG"),
    Case("exif/rotated.jpg", exif_rotated_jpeg, "indexed", size=(40, 80), fmt="JPEG"),
    Case("mismatch/png data.jpg", PNG, "indexed", fmt="PNG"),
    Case("mismatch/jpeg data.png", JPEG, "indexed", fmt="JPEG"),
    Case("mismatch/webp data.gif", lambda: encoded(gradient((64, 48), 8), "WEBP"), "indexed", fmt="WEBP"),
    Case("mismatch/no extension", lambda: JPEG(seed=12), "indexed", fmt="JPEG"),
    Case("mismatch/UPPER.JPEG", lambda: JPEG(seed=13), "indexed", fmt="JPEG"),
    Case("names/with  spaces .png", lambda: PNG(seed=20), "indexed"),
    Case("names/it's \"quoted\" `x`.png", lambda: PNG(seed=21), "indexed"),
    Case("names/line\nbreak\ttab.png", lambda: PNG(seed=22), "indexed"),
    Case("names/写真 фото Ελλάδα العربية.png", lambda: PNG(seed=23), "indexed"),
    Case("names/-leading-dash.png", lambda: PNG(seed=24), "indexed"),
    Case(f"{DEEP}/deep.png", lambda: PNG(seed=25), "indexed"),
    Case("heic/photo.heic", heic_or_fake, "indexed" if HAVE_HEIF else "skipped", reason="" if HAVE_HEIF else "unsupported format (HEIF)"),
    # reported with a reason, the run goes on
    Case("bad/empty.jpg", lambda: b"", "skipped", reason="empty file"),
    Case("bad/truncated.jpg", lambda: JPEG((256, 256), 30)[:900], "skipped", reason="truncated or corrupt image data"),
    Case("bad/truncated.png", lambda: PNG((256, 256), 31)[:700], "skipped", reason="truncated or corrupt image data"),
    Case("bad/text.png", lambda: b"This is not a picture.\n" * 20, "skipped", reason="not an image"),
    Case("bad/random.jpg", lambda: b"\x01" + np.random.default_rng(5).bytes(4095), "skipped", reason="not an image"),
    Case("bad/jpeg magic then noise.jpg", lambda: b"\xff\xd8\xff\xe0" + np.random.default_rng(6).bytes(4000), "skipped", reason="truncated or corrupt image data"),
    Case("bad/bomb.png", lambda: png_header_only(20_000, 20_000), "skipped", reason="decompression bomb: 20000 x 20000 pixels"),
    # not image files: never opened, never counted
    Case("other/notes.txt", lambda: b"shopping list", "ignored"),
    Case("other/no extension text", lambda: b"plain text, no magic", "ignored"),
]


def build_corpus(root: Path) -> None:
    for case in CASES:
        path = root / case.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(case.make())
    (root / "zlinks").mkdir()
    os.symlink("..", root / "zlinks" / "loop")  # a symlink loop: followed once
    os.symlink(root / "zlinks", root / "zlinks" / "self")  # another loop, absolute
    os.symlink(root / "modes" / "rgba.png", root / "zlinks" / "same as rgba.png")  # the same file twice: one entry
    os.symlink(root / "nowhere.jpg", root / "zlinks" / "dangling.jpg")  # dangling: ignored
    os.symlink("/dev/zero", root / "zlinks" / "endless.jpg")  # a device with an image name: ignored, no hang
    os.mkfifo(root / "zlinks" / "pipe.jpg")  # a FIFO with an image name: ignored, never opened (no hang)
    os.mkfifo(root / "zlinks" / "pipe")


def unreadable_file(root: Path) -> Path:
    """A file with an image name that the operating system refuses to read. Without root: mode 000.
    As root (which reads any mode): a link to /proc/self/mem, whose offset 0 gives EIO."""
    path = root / "bad" / "unreadable.jpg"
    if AS_ROOT:
        os.symlink("/proc/self/mem", path)
    else:
        path.write_bytes(JPEG())
        path.chmod(0)
    return path


class Saboteur:
    """A progress display that, when the run starts reading (after the walk and the plan), deletes one
    file, swaps another for new content and a third for junk: files that change between walk and read."""

    def __init__(self, vanish: Path, change: Path, junk: Path) -> None:
        self.vanish, self.change, self.junk = vanish, change, junk
        self.total = -1

    def stage(self, text: str | None) -> None:
        pass

    def start(self, total: int) -> None:
        self.total = total
        self.vanish.unlink()
        write_image(self.change, seed=999, size=(50, 50))
        self.junk.write_bytes(b"overwritten with text\n")

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass


@pytest.mark.timeout(180)
def test_hostile_corpus(tmp_path: Path, tiny_clip: Path) -> None:
    root = tmp_path / "hostile corpus"
    build_corpus(root)
    unreadable = unreadable_file(root)
    for name in ("vanishes.png", "changes.png", "becomes junk.png"):
        write_image(root / "race" / name, seed=len(name), size=(40, 30))
    bad_name = os.fsdecode(bytes(root / "names") + b"/latin1-caf\xe9.png")
    Path(bad_name).write_bytes(PNG(seed=40))

    indexed = {str(root / c.name): c for c in CASES if c.expect == "indexed"}
    skipped = {str(root / c.name): c.reason for c in CASES if c.expect == "skipped"}
    skipped[str(unreadable)] = "unreadable: " + ("Input/output error" if AS_ROOT else "Permission denied")
    skipped[str(root / "race" / "vanishes.png")] = "unreadable: No such file or directory"
    skipped[str(root / "race" / "becomes junk.png")] = "not an image"
    indexed_paths = set(indexed) | {str(root / "race" / "changes.png")}
    assert len(indexed_paths) == (27 if HAVE_HEIF else 26) and len(skipped) == (10 if HAVE_HEIF else 11)

    home = tmp_path / "library"
    encoder = Encoder.load(str(tiny_clip), "cpu")
    saboteur = Saboteur(root / "race" / "vanishes.png", root / "race" / "changes.png", root / "race" / "becomes junk.png")
    with LibraryWriter.open(home) as writer:
        report = index_paths([root], writer, lambda: encoder, model_id=encoder.model_id, batch_size=4, workers=3, progress=saboteur)

    # exact counts: everything walked is indexed or reported with its reason; nothing else is counted
    assert saboteur.total == len(indexed_paths) + len(skipped)  # the bad name never reaches the plan
    assert report.indexed == len(indexed_paths) and report.reused == 0 and report.removed == 0
    got = {item["path"]: item["reason"] for item in report.skipped}
    shown_bad_name = str(root / "names") + "/latin1-caf\\xe9.png"
    assert len(report.skipped) == len(got) == len(skipped) + 1
    assert got.pop(shown_bad_name) == BAD_NAME
    assert set(got) == set(skipped)
    for path, reason in skipped.items():
        assert got[path].lower().startswith(reason.lower()), (path, got[path])

    lib = Library.open(home)
    with Session(lib.engine) as session:
        rows = {row.path: row for row in session.scalars(select(FileRow))}
    assert set(rows) == indexed_paths | set(skipped)  # one row per file; the bad name has none
    for path, case in indexed.items():
        row = rows[path]
        assert row.status == "indexed", path
        assert case.size is None or (row.width, row.height) == case.size, path
        assert case.fmt is None or row.format == case.fmt, path
    for path in skipped:
        assert rows[path].status == "skipped" and rows[path].faiss_id is None and rows[path].reason == got[path]
    for path in sorted(indexed_paths):  # every image finds itself first
        hits = lib.search_vector(lib.vector(rows[path].faiss_id), k=1)
        assert hits[0].path == path and hits[0].score == pytest.approx(1.0, abs=1e-3)
    changed = encoder.encode_images([decode_image(root / "race" / "changes.png", min_side=64)[0]])[0]
    assert float(changed @ lib.vector(rows[str(root / "race" / "changes.png")].faiss_id)) == pytest.approx(1.0, abs=1e-2)
    lib.close()

    # again through the real command: nothing is embedded twice, the vanished file leaves the catalog
    cli = Cli(home, tiny_clip)
    again = cli("index", str(root), "--json")
    assert again["indexed"] == again["reused"] == 0 and again["removed"] == 1
    retried = {item["path"] for item in again["skipped"]}
    assert shown_bad_name in retried and retried <= {shown_bad_name, str(unreadable)}  # /proc's times may move
    assert again["unchanged"] == len(indexed_paths) + len(skipped) - 1 - (len(retried) - 1)
    assert again["images"] == len(indexed_paths)
    hits = cli("search", "anything", "--json", "-k", "100")
    assert {h["path"] for h in hits} == indexed_paths


def test_permission_denied_is_reported(tmp_path: Path) -> None:
    """A file its reader has no permission for. Root reads any mode, so the read runs in a forked child
    that has dropped to the 'nobody' user."""
    if not AS_ROOT:
        pytest.skip("not root: the corpus test above already has a mode-000 file")
    folder = Path(tempfile.mkdtemp(prefix="vf-perm-"))
    try:
        folder.chmod(0o755)
        path = folder / "secret.jpg"
        path.write_bytes(JPEG())
        path.chmod(0)
        found = FoundFile(path=str(path), size=path.stat().st_size, mtime_ns=path.stat().st_mtime_ns)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: plain file I/O only, then _exit
            try:
                os.setgid(65534)
                os.setuid(65534)
                loaded = load_file(found, {}, lambda: lambda im: np.zeros(1), lambda: 64)
                os.write(write, json.dumps([loaded.reason, loaded.skipped]).encode())
            finally:
                os._exit(0)
        os.close(write)
        answer = os.read(read, 4096)
        os.close(read)
        os.waitpid(pid, 0)
        assert json.loads(answer) == ["unreadable: Permission denied", True]
    finally:
        shutil.rmtree(folder)


def test_large_jpeg_is_decoded_small(tmp_path: Path, tiny_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An 8000x6000 JPEG goes through the real pipeline decoded at 1/8 scale (JPEG draft mode), never at
    full size, and is catalogued with its full size."""
    root = tmp_path / "big"
    root.mkdir()
    big = Image.merge("RGB", [Image.linear_gradient("L").resize((8000, 6000)), Image.new("L", (8000, 6000), 90), Image.linear_gradient("L").rotate(90).resize((8000, 6000))])
    big.save(root / "huge.jpg", quality=80)
    del big
    drafted: list[tuple[tuple[int, int], tuple[int, int]]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> object:
        before = self.size
        result = original(self, mode, size)
        drafted.append((before, self.size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    encoder = Encoder.load(str(tiny_clip), "cpu")
    with LibraryWriter.open(tmp_path / "library") as writer:
        report = index_paths([root], writer, lambda: encoder, model_id=encoder.model_id, batch_size=4, workers=1)
    assert report.indexed == 1 and report.skipped == []
    assert drafted == [((8000, 6000), (1000, 750))]  # DCT scaling by 1/8: 1/64 of the pixels decoded
    decoded, info = decode_image(root / "huge.jpg", min_side=encoder.preprocess.min_side)
    assert (info.width, info.height) == (8000, 6000)
    assert min(decoded.size) >= encoder.preprocess.min_side and max(decoded.size) <= 1000
    lib = Library.open(tmp_path / "library")
    rec = lib.record(root / "huge.jpg")
    assert rec is not None and (rec.width, rec.height) == (8000, 6000)
