"""A library on disk, opened for reading: catalog + stored vectors + FAISS index, searched by vector.

Layout of ``home``::

    catalog.sqlite        files and metadata (the source of truth)
    vectors-<gen>.f16     full vectors, row i = FAISS id i (raw, memory-mapped)
    index-<gen>.faiss     FAISS index over the committed rows (may lag; the lag is added on open)
    index-<g>-<k>.base    an on-disk index's base (+ ``.ivfdata``: its lists, memory-mapped); ``index-<gen>.faiss``
                          is then the delta added since (``search.ondisk``)
    lock                  held by the one indexer allowed to write

Opening reads one consistent snapshot of the catalog (the rows committed so far), so a search that
runs while an indexer is writing sees the last committed state, never half a batch. A library stays on
its snapshot until ``refresh()`` (the web page keeps one open); the reads that go back to the catalog
answer as of that snapshot: a file re-indexed since keeps the FAISS id the snapshot knew it by
(``records``), and a path whose row has moved past the snapshot refreshes it first (``record``), so its
vector and its record agree.

A damaged library raises ``LibraryCorrupt`` (naming ``viewfinder doctor --repair``), never a raw SQLite
or NumPy error; opening the catalog and reading a snapshot are ``search.snapshot``'s. A missing or unreadable index file is not fatal: the search scans the stored vectors
exactly instead, and the hint is logged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import faiss
import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from search import ann, catalog, catalog_location, ondisk
from search.errors import LibraryCorrupt, LibraryNotFound, QueryError
from search.records import Hit, ImageRecord, IndexParams, LibraryInfo, Vectors
from search.selection import filtered_candidates
from search.snapshot import Snapshot, catalog_path, check_model, leftover_files, missing_catalog, open_catalog, read_snapshot, repair_hint
from search.vectors import open_vectors

log = logging.getLogger(__name__)

class Library:
    """Read side of one library. Cheap to open; the index is loaded on the first search."""

    def __init__(self, home: Path, engine: Engine, snapshot: Snapshot) -> None:
        self.home = home
        self.engine = engine
        self.snapshot = snapshot
        self._vectors: np.ndarray | None = None
        self._index: faiss.Index | None = None
        self._allowed: np.ndarray | None = None
        self._exact = False  # True when the index file could not be read and the vectors are scanned instead

    @classmethod
    def open(cls, home: Path, *, model: str | None = None) -> Library:
        home = Path(home).expanduser()
        if catalog_location.server_url(home) is not None:
            if not (home / catalog_location.URL_FILE).is_file():
                raise LibraryNotFound(
                    f"There is no Viewfinder library in {home}: run `viewfinder index FOLDER --home {home}` first."
                )
        elif not catalog_path(home).is_file():
            if leftover_files(home):
                raise missing_catalog(home)
            raise LibraryNotFound(
                f"There is no Viewfinder library in {home}: run `viewfinder index FOLDER --home {home}` first."
            )
        engine, snapshot = open_catalog(home)
        try:
            check_model(snapshot, model, home)
        except BaseException:
            engine.dispose()
            raise
        return cls(home, engine, snapshot)

    def refresh(self) -> None:
        """Take a new snapshot (after an indexer has committed more); drops the loaded index."""
        self.snapshot = read_snapshot(self.engine)
        self._vectors = self._index = self._allowed = None
        self._exact = False

    def close(self) -> None:
        self._vectors = self._index = None
        self.engine.dispose()

    # --- facts ---------------------------------------------------------------------------------------

    @property
    def model(self) -> str | None:
        return self.snapshot.model

    @property
    def dim(self) -> int | None:
        return self.snapshot.dim

    def __len__(self) -> int:
        return len(self.snapshot.live)

    def info(self) -> LibraryInfo:
        with Session(self.engine) as session:
            counts = catalog.counts(session)
        sizes = {p.name: p.stat().st_size for p in sorted(self.home.iterdir()) if p.is_file()}
        last = self.snapshot.meta.get("last_indexed_at")
        return LibraryInfo(
            home=str(self.home),
            model=self.model or "",
            dim=self.dim or 0,
            images=counts["indexed"],
            skipped=counts["skipped"],
            index=self.snapshot.index_params,
            last_indexed_at=datetime.fromisoformat(last) if last else None,
            bytes_on_disk={"total": sum(sizes.values()), **sizes},
            index_check=self.snapshot.meta.get("index_check"),
            pending=self.pending(),
            last_committed_at=_when(self.snapshot.meta.get("committed_at")),
        )

    def pending(self) -> int:
        """Indexed images of this snapshot that the index file does not hold yet (an interrupted run
        commits batches but never writes the index; searches add them from the stored vectors)."""
        covered = int(self.snapshot.meta.get("index_rows", 0)) if self.snapshot.meta.get("index_file") else 0
        return int(np.count_nonzero(self.snapshot.live >= covered))

    def record(self, path: str | Path) -> ImageRecord | None:
        """The catalog row of ``path``. When it was re-indexed after this snapshot (its FAISS id is not
        in it yet), the snapshot is refreshed first, so the record's vector is there to read."""
        with self.engine.connect() as conn:
            rec = catalog.record_by_path(conn, str(path))
        if rec is not None and rec.faiss_id is not None and not self.visible(rec.faiss_id):
            self.refresh()  # read after the record: the new snapshot holds its row
        return rec

    def visible(self, faiss_id: int) -> bool:
        """Whether ``faiss_id`` is an indexed row of this snapshot."""
        return 0 <= faiss_id < len(self.allowed) and bool(self.allowed[faiss_id])

    def records(self, faiss_ids: np.ndarray) -> dict[int, ImageRecord]:
        """The records of FAISS ids of this snapshot, keyed by those ids. A file re-indexed since the snapshot
        is found by its row id and returned with the id the snapshot knows it by (its current size, time and
        hash); only a file removed from the library since is left out."""
        ids = [int(i) for i in np.asarray(faiss_ids).reshape(-1)]
        with self.engine.connect() as conn:  # pooled; the read ends with the block (no pinned WAL snapshot)
            found = catalog.records_by_faiss_id(conn, ids)
            moved = [i for i in ids if i not in found and self.visible(i)]
            if moved:
                rows = self.snapshot.rows[np.searchsorted(self.snapshot.live, moved)]
                now = catalog.records_by_row_id(conn, rows.tolist())
                found.update((i, replace(now[int(r)], faiss_id=i)) for i, r in zip(moved, rows, strict=True) if int(r) in now)
        return found

    # --- vectors and index ----------------------------------------------------------------------------

    @property
    def vectors(self) -> np.ndarray:
        if self._vectors is None:
            snap = self.snapshot
            if snap.dim is None or snap.vector_rows == 0:
                self._vectors = np.zeros((0, snap.dim or 0), dtype=np.float16)
            else:
                path = self.home / snap.meta["vectors_file"]
                try:
                    self._vectors = open_vectors(path, snap.dim, snap.meta["dtype"], snap.vector_rows)
                except (FileNotFoundError, ValueError) as err:
                    raise LibraryCorrupt(
                        f"The vectors file of the library in {self.home} is missing or shorter than the "
                        f"catalog says ({err}); {repair_hint(self.home)}."
                    ) from err
        return self._vectors

    def vector(self, faiss_id: int) -> Vectors:
        return ann.gather(self.vectors, np.array([faiss_id]))[0]

    def vector_for_path(self, path: str | Path) -> Vectors | None:
        rec = self.record(path)
        if rec is None or rec.faiss_id is None:
            return None
        return self.vector(rec.faiss_id)

    @property
    def allowed(self) -> np.ndarray:
        """Boolean mask over FAISS ids: True for rows the snapshot's catalog holds."""
        if self._allowed is None:
            mask = np.zeros(self.snapshot.vector_rows, dtype=bool)
            mask[self.snapshot.live[self.snapshot.live < len(mask)]] = True
            self._allowed = mask
        return self._allowed

    @property
    def index(self) -> faiss.Index:
        if self._index is None:
            self._index = self._load_index()
        return self._index

    def _load_index(self) -> faiss.Index:
        snap = self.snapshot
        params = snap.index_params
        name = snap.meta.get("index_file")
        covered = int(snap.meta.get("index_rows", 0))
        mapped = None
        if params is None or name is None:
            params = ann.choose_index_params(0, snap.dim or 0)
            index, covered = ann.new_index(params), 0
        else:
            base = ondisk.base_of(snap.meta)
            try:
                index = ann.read_index(self.home / name, snap.dim)
                mapped = None if base is None else ondisk.read_base(self.home / base.name, snap.dim)
            except ann.UnreadableIndex as err:
                self._log_unreadable_index(name, err)
                self._exact = True
                index, covered, mapped = ann.new_index(ann.choose_index_params(0, snap.dim or 0)), 0, None
        tail = snap.live[snap.live >= covered]  # committed after the index was last written
        ann.add_vectors(index, self.vectors, tail)  # (into the delta of an on-disk index)
        return index if mapped is None else ondisk.stacked(mapped, index)

    def _log_unreadable_index(self, name: str, err: BaseException) -> None:
        """Say why the stored vectors are scanned instead: damage (with the way out), or only that an
        indexer has swapped in a newer index since this library was opened (then nothing is wrong)."""
        with Session(self.engine) as session:
            current = catalog.read_meta(session).get("index_file")
        if current is not None and current != name:
            log.info("The index %s was replaced by a newer one since %s was opened; scanning its vectors.", name, self.home)
            return
        log.warning(
            "The index file %s of the library in %s is missing or damaged (%s); searching the stored vectors "
            "exactly instead, which is slower. %s to rebuild it.",
            name, self.home, err, repair_hint(self.home, start=True),
        )

    def index_params(self) -> IndexParams:
        if self._exact:
            return ann.choose_index_params(0, self.dim or 0)
        return self.snapshot.index_params or ann.choose_index_params(0, self.dim or 0)

    def ensure_searchable(self) -> None:
        """``QueryError`` when nothing is indexed, unless an indexer is at work on its first batch (then
        the query is answered with no results and a notice: ``search.querying``)."""
        if len(self) == 0 and not writer_running(self.home):
            raise QueryError(f"The library in {self.home} has no indexed images yet: run `viewfinder index FOLDER --home {self.home}`.")

    # --- search ---------------------------------------------------------------------------------------

    def search_vector(self, query: Vectors, k: int = 20, allowed: np.ndarray | None = None) -> list[Hit]:
        """The ``k`` nearest indexed images to a unit query vector, exactly re-ranked, best first.

        ``allowed`` (a boolean mask over FAISS ids) narrows the search, e.g. to a folder.
        """
        ids, scores = self.rank(query, k, allowed)
        return self.hits(ids, scores)

    def rank(self, query: Vectors, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(FAISS ids, exact scores) of the ``k`` best indexed images for a query vector, best first.
        A filter (``allowed``) never costs results: see ``search.selection``."""
        if k < 1:
            raise QueryError("The number of results must be at least 1.")
        self.ensure_searchable()
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != self.dim:
            raise QueryError(f"The query has {query.shape[1]} dimensions; the library's vectors have {self.dim}.")
        mask = self.allowed if allowed is None else self.allowed & _fit(allowed, len(self.allowed))
        stale = max(0, self.index.ntotal - len(self))  # rows removed since the index was written (tombstones)
        params = self.index_params()  # after loading the index: an unreadable one means an exact scan
        depth = max(params.rerank, 10 * k) if params.kind == "ivfpq" else k
        if allowed is None and stale <= depth:  # a few removed rows: fetch that many more; many: skip them in faiss
            candidates = ann.candidates(self.index, params, query, depth + stale)
        else:
            candidates = filtered_candidates(self.index, params, query, depth, mask)
        return ann.rerank(query, candidates, self.vectors, mask, k)

    def hits(self, ids: np.ndarray, scores: np.ndarray, *, first_rank: int = 1) -> list[Hit]:
        """Ranked hits with their catalog records (ids without a record in this snapshot are left out)."""
        records = self.records(ids)
        found = [(records[int(fid)], float(score)) for fid, score in zip(ids, scores, strict=True) if int(fid) in records]
        return [Hit(rank=rank, score=score, record=rec) for rank, (rec, score) in enumerate(found, start=first_rank)]


def _when(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso) if iso else None


def writer_running(home: Path) -> bool:
    """Whether a process holds the library's writer lock (``indexer.writer.acquire_lock``: a ``flock``).
    Read from /proc/locks without touching the lock (a probe could make a starting indexer fail); where
    that file does not exist, whether the pid the holder wrote in the lock file is alive."""
    lock = home / "lock"
    try:
        ino = lock.stat().st_ino
        table = Path("/proc/locks").read_text()
    except FileNotFoundError:
        return _pid_alive(lock) if lock.exists() else False
    except OSError:
        return False
    return any(
        len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(ino)
        for fields in (line.split() for line in table.splitlines())
    )


def _pid_alive(lock: Path) -> bool:
    try:
        pid = int(lock.read_text().strip() or 0)
        if pid > 0:
            os.kill(pid, 0)
            return True
    except (OSError, ValueError):
        pass
    return False


def _fit(mask: np.ndarray, length: int) -> np.ndarray:
    """A boolean mask cut or padded (with False) to ``length``."""
    out = np.zeros(length, dtype=bool)
    out[: min(length, len(mask))] = mask[:length]
    return out
