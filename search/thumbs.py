"""Thumbnails of library images: made on first view, kept on disk inside the library folder.

Layout: ``HOME/thumbs/<first 2 hex digits>/<content hash>-<max side>.jpg``, each written atomically
(temp file, then ``os.replace``), so a reader never sees half a file and two writers cannot clash.
Keys are content hashes, so renamed or duplicated files share one thumbnail.

Only files that the catalog lists as indexed are ever read: a path the catalog does not hold is refused
with ``QueryError`` before anything touches the disk. A file that changed since it was indexed is shown
as it is now but not cached (its hash is not the catalog's any more).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from search.disk import atomic_write
from search.errors import QueryError
from search.images import decode_image, make_thumbnail
from search.records import ImageRecord, Status

THUMB_DIR = "thumbs"
GRID_SIDE = 320  # longer side of a grid thumbnail, pixels
PREVIEW_SIDE = 1280  # longer side of the larger view
_HEX = re.compile(r"[0-9a-f]{16,128}")

Lookup = Callable[[str], ImageRecord | None]


def cache_key(record: ImageRecord) -> str:
    """The record's content hash, or (for a row without one) a hash of its path, size and mtime."""
    if record.content_hash and _HEX.fullmatch(record.content_hash):
        return record.content_hash
    ident = f"{record.path}\0{record.size}\0{record.mtime_ns}".encode("utf-8", "surrogateescape")
    return hashlib.blake2b(ident, digest_size=16).hexdigest()


def render(path: str, max_side: int) -> bytes:
    """JPEG bytes of the image at ``path``, longer side <= ``max_side``. Raises ``ImageDecodeError``."""
    image, _ = decode_image(path, min_side=max_side)
    return make_thumbnail(image, max_side)


def write_atomic(target: Path, data: bytes) -> None:
    atomic_write(target, data, durable=False)  # a cache: a power cut may lose it, never tear it


def unchanged_since_indexed(record: ImageRecord) -> bool:
    try:
        st = os.stat(record.path)
    except OSError:
        return False
    return st.st_size == record.size and st.st_mtime_ns == record.mtime_ns


class Thumbnails:
    """``Thumbnails(HOME / THUMB_DIR, library.record)``: ``get(path)`` -> JPEG bytes of a small copy."""

    def __init__(self, folder: Path, lookup: Lookup) -> None:
        self.folder = Path(folder)
        self._lookup = lookup

    def record(self, path: str) -> ImageRecord:
        """The catalog's record of an indexed image; ``QueryError`` for any other path."""
        record = self._lookup(str(path))
        if record is None or record.status != Status.INDEXED:
            raise QueryError(f"{path} is not an indexed image of this library.")
        return record

    def file_for(self, record: ImageRecord, max_side: int) -> Path:
        key = cache_key(record)
        return self.folder / key[:2] / f"{key}-{max_side}.jpg"

    def get(self, path: str, max_side: int = GRID_SIDE) -> bytes:
        """The thumbnail of an indexed image, from the cache or made now (and cached).

        Raises ``QueryError`` for a path the library does not hold and ``ImageDecodeError`` when the
        file can no longer be read or decoded."""
        if max_side < 1:
            raise ValueError(f"max_side must be >= 1, got {max_side}")
        record = self.record(path)
        cached = self.file_for(record, max_side)
        try:
            return cached.read_bytes()
        except OSError:
            pass
        data = render(record.path, max_side)
        if unchanged_since_indexed(record):
            try:
                write_atomic(cached, data)
            except OSError:  # a read-only library still shows its thumbnails, made each time
                pass
        return data
