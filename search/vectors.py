"""The full vectors, one row per FAISS id, in a raw append-only file read through a memory map.

Row ``i`` of the file is the vector of FAISS id ``i``. The writer appends, fsyncs, and only then
commits the catalog rows that point at the new rows; the catalog's ``vector_rows`` says how many rows
are committed, so a torn tail left by a kill is never read and is cut off by the next writer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from search.disk import REAL, Disk
from search.records import Vectors

DTYPES = {"float16": np.float16, "float32": np.float32}


def row_bytes(dim: int, dtype: str) -> int:
    return dim * np.dtype(DTYPES[dtype]).itemsize


def file_rows(path: Path, dim: int, dtype: str) -> int:
    """Complete rows present in the file (a torn last row does not count)."""
    try:
        return path.stat().st_size // row_bytes(dim, dtype)
    except FileNotFoundError:
        return 0


def open_vectors(path: Path, dim: int, dtype: str, rows: int) -> np.ndarray:
    """A read-only (rows, dim) view of the first ``rows`` committed rows; nothing is read until used."""
    if rows == 0:
        return np.zeros((0, dim), dtype=DTYPES[dtype])
    return np.memmap(path, dtype=DTYPES[dtype], mode="r", shape=(rows, dim))


def append_vectors(path: Path, vectors: Vectors, dtype: str, committed_rows: int, disk: Disk = REAL) -> int:
    """Write ``vectors`` after the first ``committed_rows`` rows, durably. Returns the first new row.

    Anything after ``committed_rows`` (a tail from a killed run) is overwritten. The first append also makes
    the file's name durable (``search.disk``): a power cut must not leave committed rows without their file.
    """
    data = np.ascontiguousarray(vectors, dtype=DTYPES[dtype])
    width = row_bytes(vectors.shape[1], dtype)
    created = disk.write_at(path, committed_rows * width, memoryview(data).cast("B"))
    disk.fsync(path)
    if created or committed_rows == 0:
        disk.fsync_dir(path.parent)
    return committed_rows


def fsync_dir(folder: Path) -> None:
    REAL.fsync_dir(folder)
