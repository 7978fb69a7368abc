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


def zip_stream(hits: Sequence[Hit], *, max_bytes: int = ZIP_MAX_BYTES) -> Iterator[bytes]:
    """A ZIP of the results' originals, produced in chunks (stored, not recompressed: images are already
    compressed); stops adding files once ``max_bytes`` of originals would be passed."""
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for hit in hits:
            size = hit.record.size
            if total + size > max_bytes:
                break
            try:
                archive.write(hit.path, arcname=export_name(hit))
            except OSError:
                continue
            total += size
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
