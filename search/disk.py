"""The filesystem steps a library's commits depend on, in one small class: the writer takes a ``Disk``
(default: the real one), so a test can record every step of a real run and rebuild each state a power cut
could leave (tests/test_power.py).

A kill -9 loses nothing the kernel has been given; a power cut loses what was not made durable. What a
commit needs, and where it is made durable:

* the bytes of a file: ``fsync`` of the file (vectors after each append, the index's temp file);
* the *name* of a file, created or renamed: ``fsync_dir`` of its folder. The vectors file's name is synced
  after its first append, before any catalog row points at it; the index file's after its rename, before
  the catalog names it; the catalog's own name (SQLite does not sync the folder when it creates the main
  database file) when a writer opens the library, before the first commit; a new library folder's name in
  its parent when the writer creates it.

Everything else may be lost by a power cut without harm: temp files, the tail of the vectors file after
the committed rows, a removed old index file (a stray, removed by the next writer), thumbnails.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


class Disk:
    """The real filesystem."""

    def write_at(self, path: Path, offset: int, data: memoryview) -> bool:
        """Cut ``path`` to ``offset`` bytes and write ``data`` there (not yet durable). True if it was created."""
        created = not os.path.lexists(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            while data:
                written = os.write(fd, data)
                data = data[written:]
        finally:
            os.close(fd)
        return created

    def write_file(self, path: Path, write: Callable[[str], None]) -> None:
        """A new file written whole by ``write(str(path))`` (e.g. ``faiss.write_index``); not yet durable."""
        write(str(path))

    def fsync(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def fsync_dir(self, folder: Path) -> None:
        """Make the names in ``folder`` (files created, renamed or removed there) durable."""
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def unlink(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def truncate(self, path: Path, size: int) -> None:
        os.truncate(path, size)

    def mkdir(self, folder: Path) -> None:
        """Create ``folder`` (and its parents) and make its name durable in its parent."""
        if folder.is_dir():
            return
        folder.mkdir(parents=True, exist_ok=True)
        try:
            self.fsync_dir(folder.parent)
        except OSError:  # a parent we may not open for reading: the library works, only less durably named
            pass


REAL = Disk()


def atomic_write(target: Path, data: bytes, *, durable: bool = True) -> None:
    """``target`` holds ``data`` whole or keeps what it held: a temp file in the same folder, renamed over
    it. ``durable``: the data and the new name are fsynced (temp file + fsync + rename + fsync of the
    folder); caches (thumbnails) skip that, a power cut may only lose them."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        Disk().fsync_dir(target.parent)
