"""The write side of a library: one writer at a time, every step atomic.

Order of every batch: append vectors + fsync, then one SQLite transaction that adds the rows pointing at
them and moves ``vector_rows``. The index is written to a new file and swapped in by the same kind of
transaction. A kill between any two steps leaves the previous committed state, which opens and searches.
A write that fails (disk full, I/O error) raises ``LibraryWriteError`` and leaves that state as it was.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from indexer import faults, pglock, shards, tagging
from indexer.pglock import AdvisoryLock
from search import ann, catalog, catalog_location, ondisk, recall, tagdb
from search.disk import REAL, Disk
from search.errors import LibraryLocked, LibraryWriteError, ModelMismatch
from search.snapshot import MetaFacts, check_model, open_catalog, read_snapshot
from search.records import ImageRecord, IndexParams, Vectors
from search.recall import RecallCheck
from search.tagdb import LabelSet
from search.vectors import append_vectors, file_rows, open_vectors, row_bytes

VECTOR_DTYPE = "float16"
log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def acquire_lock(home: Path, disk: Disk = REAL) -> int:
    """Take the library's writer lock without waiting; ``LibraryLocked`` (naming the holder's pid) when
    another process has it. The kernel drops the lock when its holder dies, even by SIGKILL."""
    disk.mkdir(home)
    fd = os.open(home / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise LibraryLocked(
            f"Another indexer (pid {holder}) is writing to the library in {home}; wait for it to finish."
        ) from None
    try:  # the holder's pid, for the message above: nice to have, so a full disk does not stop here
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    except OSError:
        pass
    return fd


def release_lock(fd: int | AdvisoryLock) -> None:
    if isinstance(fd, AdvisoryLock):
        fd.release()
        return
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def lock_library(home: Path, catalog_url: str | None = None, disk: Disk = REAL) -> int | AdvisoryLock:
    """The writer lock: a ``flock`` on ``HOME/lock``, or PostgreSQL's advisory lock when the catalog is there."""
    url = catalog_location.server_url(home, catalog_url)
    if url is None:
        return acquire_lock(home, disk)
    disk.mkdir(home)
    return pglock.acquire(home, url)


def write_failure(home: Path, what: str, err: BaseException) -> LibraryWriteError:
    reason = getattr(err, "strerror", None) or str(getattr(err, "orig", None) or err).strip().splitlines()[-1]
    return LibraryWriteError(
        f"Could not write the {what} of the library in {home} ({reason}); everything committed before is kept. "
        "Free some disk space (or fix the disk) and run the same command again."
    )


class LibraryWriter(MetaFacts):
    """Holds the library's lock from ``open`` to ``close``; use as a context manager."""

    def __init__(
        self, home: Path, lock_fd: int | AdvisoryLock, disk: Disk = REAL, catalog_url: str | None = None,
        *, ondisk_above: int = ann.ONDISK_ABOVE, shard_runner: shards.Runner | None = None,
    ) -> None:
        self.home = home
        self._lock_fd = lock_fd
        self.disk = disk  # every file step a commit depends on goes through it (search.disk)
        self.ondisk_above = ondisk_above  # the rule's threshold for on-disk lists (search.ann.ONDISK_ABOVE)
        self.shard_runner = shard_runner  # None: Ray tasks when this process runs Ray (--ray), else processes
        self._builds: dict[int, ondisk.Base] = {}  # on-disk bases built by this writer (by id of their view), not committed yet
        # A damaged catalog or a vectors file shorter than the catalog is refused (LibraryCorrupt): appending
        # to a short file would silently give the missing rows zero vectors.
        try:
            self.engine, snapshot = open_catalog(home, catalog_url)
        except OperationalError as err:  # e.g. no room for the write-ahead log
            raise write_failure(home, "catalog", err) from err
        url = catalog_location.server_url(home, catalog_url)
        if url is not None:  # migrated and readable: later commands find it without --catalog
            catalog_location.remember(home, url)
        self.meta: dict[str, Any] = snapshot.meta
        with self._writing("catalog"):
            self.disk.fsync_dir(home)  # a new catalog's name, before any file it names is written
        self._labels: LabelSet | None | bool = False  # False: not read yet
        self._cleanup()

    @classmethod
    def open(
        cls, home: Path, *, disk: Disk = REAL, catalog_url: str | None = None, ondisk_above: int = ann.ONDISK_ABOVE,
        shard_runner: shards.Runner | None = None,
    ) -> LibraryWriter:
        home = Path(home).expanduser()
        fd = lock_library(home, catalog_url, disk)
        try:
            return cls(home, fd, disk, catalog_url, ondisk_above=ondisk_above, shard_runner=shard_runner)
        except BaseException:
            release_lock(fd)
            raise

    def close(self) -> None:
        self.engine.dispose()
        if self._lock_fd is not None and self._lock_fd != -1:
            release_lock(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> LibraryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- facts ---------------------------------------------------------------------------------------

    @property
    def vectors_path(self) -> Path:
        return self.home / self.meta.get("vectors_file", "vectors-1.f16")

    def session(self) -> Session:
        return Session(self.engine)

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """A failed write (disk full, I/O error, read-only disk) becomes ``LibraryWriteError``."""
        try:
            yield
        except (OSError, OperationalError) as err:
            raise write_failure(self.home, what, err) from err

    writing = _writing  # for the other write steps of the indexer package (tags)

    def _set_meta(self, values: dict[str, Any]) -> None:
        with self._writing("catalog"), self.session() as session, session.begin():
            catalog.write_meta(session, values)
        self.meta.update(values)

    def _cleanup(self) -> None:
        """Remove what a killed run left behind: temp files, and vector/index files nothing points to."""
        keep = {self.meta.get("vectors_file")} | ondisk.index_files(self.meta)
        for path in self.home.iterdir():
            stale_temp = path.name.endswith(".tmp")
            orphan = path.name.startswith(("vectors-", "index-")) and path.name not in keep
            if stale_temp or orphan:
                self.disk.unlink(path)

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

    def label_set(self, session: Session) -> LabelSet | None:
        """The library's tag label set, read once per writer (only a writer changes it, under this lock)."""
        if self._labels is False:
            self._labels = tagdb.label_set(session)
        return self._labels  # type: ignore[return-value]

    def forget_label_set(self) -> None:
        self._labels = False

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
            with self._writing("vectors file"):
                faults.reached("vectors.append")
                first = append_vectors(self.vectors_path, vectors, self.meta["dtype"], self.vector_rows, self.disk)
            faults.reached("vectors.appended")
        rows = [replace(rec, faiss_id=first + i) for i, rec in enumerate(embedded)]
        last_rows = first + len(embedded)
        with self._writing("catalog"), self.session() as session, session.begin():
            catalog.upsert_records(session, [*rows, *skipped])
            catalog.write_meta(session, {"vector_rows": last_rows, "committed_at": utcnow().isoformat()})
            tagging.tag_committed(session, self.label_set(session), first, vectors)  # same transaction as the rows
        self.meta["vector_rows"] = last_rows

    def remove(self, paths: Sequence[str]) -> None:
        with self._writing("catalog"), self.session() as session, session.begin():
            catalog.delete_paths(session, list(paths))
            catalog.write_meta(session, {"committed_at": utcnow().isoformat()})  # a removal is a commit (readers' watches)

    def finish(self, *, flat_below: int = ann.FLAT_BELOW, rebuild: bool = False, check: bool = True) -> IndexParams | None:
        """Bring the FAISS index up to the catalog: update it, or rebuild it from the stored vectors when
        the rule says so, when ``rebuild`` is asked for, or when the current index file cannot be read.
        A built IVF-PQ index then gets the recall self-check (``check``; see ``search.ann``)."""
        if self.dim is None:
            return None
        self._cut_torn_tail()
        snapshot = read_snapshot(self.engine)
        live, rows = snapshot.live, self.vector_rows
        vectors = open_vectors(self.vectors_path, self.dim, self.meta["dtype"], rows)
        current = snapshot.index_params
        old_file = self.meta.get("index_file")
        unchanged = rows == self.meta.get("index_rows") and len(live) == self.meta.get("index_live")
        keep = old_file is not None and not ann.needs_rebuild(current, len(live), self.dim, flat_below=flat_below, ondisk_above=self.ondisk_above)
        base = ondisk.base_of(self.meta)
        if base is not None and ann.delta_due(base.count, base.rows, live):
            keep = False  # the delta and the tombstones have grown past their share: a full build folds them in
        if keep and unchanged and not rebuild and (self.home / old_file).is_file():
            self._set_meta({"last_indexed_at": utcnow().isoformat()})
            return current
        faults.reached("index.train")
        index = None
        if keep and not rebuild:
            assert current is not None and old_file is not None
            params = current
            index = self._updated_index(old_file, vectors, live)
        checked: dict[str, Any] = {}
        if index is None:
            params = ann.choose_index_params(len(live), self.dim, flat_below=flat_below, ondisk_above=self.ondisk_above)
            index = self._build(params, vectors, live)
            checked = {"index_check": None}
            if check and params.kind == "ivfpq":
                index, params, result = self._tune(index, params, vectors, live)
                checked = {"index_check": result.to_json()}
        self._commit_index(index, params, rows, len(live), checked)
        return params

    def check(self, *, flat_below: int = ann.FLAT_BELOW) -> RecallCheck | None:
        """The recall self-check on the current IVF-PQ index now, keeping what it chooses (None for an exact
        index): what ``finish`` does after a build, for a library built without it (doctor, bench/ann.py)."""
        self.finish(flat_below=flat_below, check=False)
        snapshot = read_snapshot(self.engine)
        params, name = snapshot.index_params, self.meta.get("index_file")
        if self.dim is None or params is None or params.kind != "ivfpq" or name is None:
            return None
        vectors = open_vectors(self.vectors_path, self.dim, self.meta["dtype"], self.vector_rows)
        index = ondisk.open_index(self.home, self.meta, self.dim)
        tuned, params, result = self._tune(index, params, vectors, snapshot.live)
        values = {"index_params": params.to_json(), "index_check": result.to_json()}
        if result.rebuilds:
            self._commit_index(tuned, params, self.vector_rows, len(snapshot.live), values)
        else:
            self._set_meta(values)
        return result

    def _tune(self, index: faiss.Index, params: IndexParams, vectors: np.ndarray, live: np.ndarray) -> tuple[faiss.Index, IndexParams, RecallCheck]:
        direction = self.meta.get("modality_direction")
        return recall.tune(
            index, params, vectors, live, lambda p: self._build(p, vectors, live),
            direction=None if direction is None else np.asarray(direction, dtype=np.float32),
        )

    def learn_modality(self, encode_text: Callable[[list[str]], Vectors]) -> None:
        """Store the model's modality direction (once), for the text-like queries of the self-check."""
        if self.dim is None or self.vector_rows == 0 or "modality_direction" in self.meta:
            return
        sample = np.unique(np.linspace(0, self.vector_rows - 1, min(self.vector_rows, 1000)).astype(np.int64))
        self.set_modality_direction(recall.modality_direction(encode_text(list(recall.GENERIC_CAPTIONS)), self.stored(sample)))

    def set_modality_direction(self, direction: np.ndarray) -> None:
        self._set_meta({"modality_direction": [round(float(x), 6) for x in np.asarray(direction).reshape(-1)]})

    def _build(self, params: IndexParams, vectors: np.ndarray, live: np.ndarray) -> faiss.Index:
        """A new index over ``live`` by ``params``: in memory, or an on-disk base (its files written, named by
        no catalog row yet) stacked with an empty delta (``search.ondisk``)."""
        if not params.ondisk:
            return ann.build_index(params, vectors, live)
        name = f"index-{int(self.meta.get('generation', 0)) + 1}-{len(self._builds) + 1}{ondisk.BASE_SUFFIX}"
        with self._writing("index"):
            count = shards.build(
                params, self.home, name, self.vectors_path, self.meta["dtype"], self.vector_rows, live,
                runner=self.shard_runner or shards.default_runner(), disk=self.disk,
            )
            base = ondisk.read_base(self.home / name, self.dim)
        view = ondisk.stacked(base, ondisk.empty_delta(base))
        self._builds[id(view)] = ondisk.Base(name=name, rows=self.vector_rows, count=count)  # for _commit_index
        return view

    def _commit_index(self, index: faiss.Index, params: IndexParams, rows: int, live: int, extra: dict[str, Any]) -> None:
        """Write ``index`` to a new file and point the catalog at it (with ``extra`` meta) in one step. For an
        on-disk index the file is its delta; a new base (from ``_build``) is named in the same step."""
        old = ondisk.index_files(self.meta)
        generation = int(self.meta.get("generation", 0)) + 1
        new_file = f"index-{generation}.faiss"
        new_base = self._builds.get(id(index))
        if new_base is not None:
            extra = {**extra, "index_base": new_base.to_json()}
            index = ondisk.delta_of(index)
        elif not params.ondisk:
            extra = {**extra, "index_base": None}
        self._write_index(index, new_file)
        faults.reached("index.renamed")
        self._set_meta(
            {
                "generation": generation,
                "index_file": new_file,
                "index_params": params.to_json(),
                "index_rows": rows,
                "index_live": live,
                "last_indexed_at": utcnow().isoformat(),
                **extra,
            }
        )
        faults.reached("index.committed")
        built = {n for b in self._builds.values() for n in (b.name, b.data_name)}  # a base the self-check replaced
        self._builds.clear()
        for name in sorted((old | built) - ondisk.index_files(self.meta)):  # readers that mapped them keep the mapping
            self.disk.unlink(self.home / name)

    def _updated_index(self, name: str, vectors: np.ndarray, live: np.ndarray) -> faiss.Index | None:
        """The current index brought up to ``live``, or None when its file cannot be read (then it is rebuilt)."""
        try:
            index = ann.read_index(self.home / name, self.dim)
        except ann.UnreadableIndex as err:
            log.warning("The index file %s in %s cannot be read (%s); rebuilding it from the stored vectors.", name, self.home, err)
            return None
        covered = int(self.meta.get("index_rows", 0))
        ann.remove_ids(index, np.setdiff1d(np.arange(covered), live, assume_unique=True))
        ann.add_vectors(index, vectors, live[live >= covered])
        return index

    def _write_index(self, index: faiss.Index, name: str) -> None:
        """Temp file, fsync, rename, fsync the folder. Nothing names the new file until the catalog does,
        so a kill or a full disk at any step leaves at most a stray file for the next run to remove."""
        path = self.home / name
        tmp = path.with_name(path.name + ".tmp")
        try:
            with self._writing("index"):
                faults.reached("index.write")
                try:
                    self.disk.write_file(tmp, lambda target: faiss.write_index(index, target))
                except RuntimeError as err:  # faiss reports a failed write (ENOSPC, EIO) as RuntimeError
                    raise write_failure(self.home, "index", err) from err
                self.disk.fsync(tmp)
                faults.reached("index.tmp_written")
                self.disk.replace(tmp, path)
                self.disk.fsync_dir(self.home)
        except BaseException:
            self.disk.unlink(tmp)
            raise

    def _cut_torn_tail(self) -> None:
        """Drop rows a killed run appended but never committed, so the file holds exactly the committed rows."""
        if self.dim is not None and self.torn_tail() > 0:
            with self._writing("vectors file"):
                self.disk.truncate(self.vectors_path, self.vector_rows * row_bytes(self.dim, self.meta["dtype"]))

    def torn_tail(self) -> int:
        """Rows written after the last commit by a killed run (overwritten by the next append)."""
        if self.dim is None:
            return 0
        return file_rows(self.vectors_path, self.dim, self.meta["dtype"]) - self.vector_rows
