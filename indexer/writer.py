"""The write side of a library: one writer at a time, every step atomic.

Order of every batch: append vectors + fsync, then one SQLite transaction that adds the rows pointing at
them and moves ``vector_rows``. The index is written to a new file and swapped in by the same kind of
transaction. A kill between any two steps leaves the previous committed state, which opens and searches.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from search import ann, catalog
from search.errors import LibraryLocked, ModelMismatch
from search.library import catalog_path, check_model, read_snapshot
from search.records import ImageRecord, IndexParams, Vectors
from search.schema import migrate
from search.vectors import append_vectors, file_rows, fsync_dir, open_vectors

VECTOR_DTYPE = "float16"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class LibraryWriter:
    """Holds the library's lock from ``open`` to ``close``; use as a context manager."""

    def __init__(self, home: Path, lock_fd: int) -> None:
        self.home = home
        self._lock_fd = lock_fd
        self.engine = catalog.connect(catalog_path(home))
        migrate(self.engine, where=str(home))
        self.meta: dict[str, Any] = read_snapshot(self.engine).meta
        self._cleanup()

    @classmethod
    def open(cls, home: Path) -> LibraryWriter:
        home = Path(home).expanduser()
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(home / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LibraryLocked(
                f"Another indexer (pid {holder}) is writing to the library in {home}; wait for it to finish."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return cls(home, fd)

    def close(self) -> None:
        self.engine.dispose()
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> LibraryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- facts ---------------------------------------------------------------------------------------

    @property
    def model(self) -> str | None:
        return self.meta.get("model")

    @property
    def dim(self) -> int | None:
        return self.meta.get("dim")

    @property
    def vector_rows(self) -> int:
        return int(self.meta.get("vector_rows", 0))

    @property
    def vectors_path(self) -> Path:
        return self.home / self.meta.get("vectors_file", "vectors-1.f16")

    def session(self) -> Session:
        return Session(self.engine)

    def _set_meta(self, values: dict[str, Any]) -> None:
        with self.session() as session, session.begin():
            catalog.write_meta(session, values)
        self.meta.update(values)

    def _cleanup(self) -> None:
        """Remove what a killed run left behind: temp files, and vector/index files nothing points to."""
        keep = {self.meta.get("vectors_file"), self.meta.get("index_file")}
        for path in self.home.iterdir():
            stale_temp = path.name.endswith(".tmp")
            orphan = path.name.startswith(("vectors-", "index-")) and path.name not in keep
            if stale_temp or orphan:
                path.unlink(missing_ok=True)

    # --- model ---------------------------------------------------------------------------------------

    def check_model(self, model_id: str) -> None:
        """Refuse, before any work, a model that differs from the library's."""
        check_model(read_snapshot(self.engine), model_id, self.home)

    def bind(self, model_id: str, dim: int) -> None:
        """Record the model and dimension of a new library (once the model has loaded), or check them."""
        self.check_model(model_id)
        if self.dim is None:
            self._set_meta(
                {
                    "model": model_id,
                    "dim": dim,
                    "dtype": VECTOR_DTYPE,
                    "vectors_file": "vectors-1.f16",
                    "vector_rows": 0,
                    "created_at": utcnow().isoformat(),
                }
            )
        elif self.dim != dim:
            raise ModelMismatch(
                f"The model gives {dim}-dimensional vectors but the library in {self.home} holds "
                f"{self.dim}-dimensional ones; index into another --home."
            )

    # --- batches -------------------------------------------------------------------------------------

    def stored(self, faiss_ids: Sequence[int]) -> Vectors:
        assert self.dim is not None
        vectors = open_vectors(self.vectors_path, self.dim, self.meta["dtype"], self.vector_rows)
        return ann.gather(vectors, np.asarray(faiss_ids, dtype=np.int64))

    def commit(self, embedded: Sequence[ImageRecord], vectors: Vectors, skipped: Sequence[ImageRecord]) -> None:
        """One atomic step: ``embedded[i]`` gets the vector ``vectors[i]``; ``skipped`` rows get none."""
        assert len(embedded) == len(vectors)
        first = self.vector_rows
        if len(embedded):
            assert self.dim is not None
            first = append_vectors(self.vectors_path, vectors, self.meta["dtype"], self.vector_rows)
        rows = [replace(rec, faiss_id=first + i) for i, rec in enumerate(embedded)]
        last_rows = first + len(embedded)
        with self.session() as session, session.begin():
            catalog.upsert_records(session, [*rows, *skipped])
            catalog.write_meta(session, {"vector_rows": last_rows})
        self.meta["vector_rows"] = last_rows

    def remove(self, paths: Sequence[str]) -> None:
        with self.session() as session, session.begin():
            catalog.delete_paths(session, list(paths))

    def finish(self, *, flat_below: int = ann.FLAT_BELOW) -> IndexParams | None:
        """Bring the FAISS index up to the catalog (update it, or rebuild it when the rule says so)."""
        if self.dim is None:
            return None
        snapshot = read_snapshot(self.engine)
        live, rows = snapshot.live, self.vector_rows
        vectors = open_vectors(self.vectors_path, self.dim, self.meta["dtype"], rows)
        current = snapshot.index_params
        old_file = self.meta.get("index_file")
        unchanged = rows == self.meta.get("index_rows") and len(live) == self.meta.get("index_live")
        if old_file is not None and unchanged and not ann.needs_rebuild(current, len(live), self.dim, flat_below=flat_below):
            self._set_meta({"last_indexed_at": utcnow().isoformat()})
            return current
        if old_file is None or ann.needs_rebuild(current, len(live), self.dim, flat_below=flat_below):
            params = ann.choose_index_params(len(live), self.dim, flat_below=flat_below)
            index = ann.build_index(params, vectors, live)
        else:
            assert current is not None
            params = current
            index = ann.read_index(self.home / old_file)
            covered = int(self.meta.get("index_rows", 0))
            ann.remove_ids(index, np.setdiff1d(np.arange(covered), live, assume_unique=True))
            ann.add_vectors(index, vectors, live[live >= covered])
        generation = int(self.meta.get("generation", 0)) + 1
        new_file = f"index-{generation}.faiss"
        ann.write_index_atomic(index, self.home / new_file)
        fsync_dir(self.home)
        self._set_meta(
            {
                "generation": generation,
                "index_file": new_file,
                "index_params": params.to_json(),
                "index_rows": rows,
                "index_live": len(live),
                "last_indexed_at": utcnow().isoformat(),
            }
        )
        if old_file and old_file != new_file:
            (self.home / old_file).unlink(missing_ok=True)
        return params

    def garbage_rows(self) -> int:
        """Vector rows no catalog row points to any more (changed or deleted files)."""
        return self.vector_rows - len(read_snapshot(self.engine).live)

    def torn_tail(self) -> int:
        """Rows written after the last commit by a killed run (overwritten by the next append)."""
        if self.dim is None:
            return 0
        return file_rows(self.vectors_path, self.dim, self.meta["dtype"]) - self.vector_rows
