"""Results out of the program: links or copies in a folder (``--export``), a CSV file (``--csv``), and
the page's CSV download and ZIP of selected results. Files are written atomically (temp + fsync +
rename); originals are only ever read."""

from __future__ import annotations

import csv
import io
import os
import shutil
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from search.disk import Disk, atomic_write
from search.errors import QueryError
from search.records import Hit

CSV_COLUMNS = ("rank", "score", "path", "width", "height", "format", "taken_at", "camera_make", "camera_model", "size", "group_size")
ZIP_MAX_BYTES = 512 * 1024 * 1024  # the page's ZIP of selected results stops short of this many bytes of originals


def csv_text(hits: Sequence[Hit]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for hit in hits:
        data = hit.to_json()
        writer.writerow([*(data.get(c) if data.get(c) is not None else "" for c in CSV_COLUMNS[:-1]), 1 + len(hit.group)])
    return out.getvalue()


def write_csv(hits: Sequence[Hit], path: Path) -> None:
    try:
        atomic_write(path, csv_text(hits).encode("utf-8"))
    except OSError as err:
        raise QueryError(f"Could not write {path} ({err.strerror or err}).") from err


def export_name(hit: Hit) -> str:
    return f"{hit.rank:04d}_{os.path.basename(hit.path)}"


def export_files(hits: Sequence[Hit], folder: Path, *, copy: bool = False) -> int:
    """Each result as ``NNNN_name`` in ``folder``: a symlink to the original, or a copy. Existing entries
    of the same name are replaced; nothing else in ``folder`` is touched. Returns how many were written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise QueryError(f"Could not create {folder} ({err.strerror or err}).") from err
    done = 0
    for hit in hits:
        target = folder / export_name(hit)
        tmp = folder / f".{target.name}.tmp"
        try:
            tmp.unlink(missing_ok=True)
            if copy:
                shutil.copyfile(hit.path, tmp)
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
            else:
                os.symlink(os.path.abspath(hit.path), tmp)
            os.replace(tmp, target)
            done += 1
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise QueryError(f"Could not export {hit.path} into {folder} ({err.strerror or err}).") from err
    Disk().fsync_dir(folder)
    return done


def zip_selection(hits: Sequence[Hit], max_bytes: int = ZIP_MAX_BYTES) -> tuple[list[Hit], list[Hit]]:
    """(in the ZIP, left out): the results in their order while their originals fit in ``max_bytes``."""
    total, inside = 0, []
    for hit in hits:
        if total + hit.record.size > max_bytes:
            return inside, list(hits[len(inside) :])
        total += hit.record.size
        inside.append(hit)
    return inside, []


class _Sink:
    """An unseekable file for ``zipfile``: it then writes each entry's sizes after its data (a data
    descriptor), so the bytes handed out so far never change and the chunks join into a valid archive."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


def zip_stream(hits: Sequence[Hit]) -> Iterator[bytes]:
    """A ZIP of the results' originals, one chunk per file as it is added (stored, not recompressed:
    images are already compressed). A file that can no longer be read is left out. Cap the selection
    first with ``zip_selection``."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:  # type: ignore[arg-type]
        for hit in hits:
            try:
                archive.write(hit.path, arcname=export_name(hit))
            except OSError:
                continue
            yield sink.take()
    yield sink.take()
