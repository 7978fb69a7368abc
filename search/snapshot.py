"""Opening a library's catalog: the snapshot that one read transaction sees, and the checks that tell a
damaged or half-made library apart, each a ``LibraryCorrupt`` that names ``viewfinder doctor --repair``
(never a raw SQLite error). ``search.library`` (the read side) and ``indexer`` (the writer, doctor) open
catalogs through here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session

from search import catalog, catalog_location
from search.errors import LibraryCorrupt, ModelMismatch
from search.records import IndexParams
from search.schema import migrate
from search.vectors import file_rows


class MetaFacts:
    """The library's facts as its catalog's meta table (``meta``) holds them: read by the snapshot and
    by the writer (``indexer.writer.LibraryWriter``) alike."""

    __slots__ = ()
    meta: dict[str, Any]

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
    def index_params(self) -> IndexParams | None:
        raw = self.meta.get("index_params")
        return IndexParams.from_json(raw) if raw else None


@dataclass(frozen=True, slots=True)
class Snapshot(MetaFacts):
    """What one read transaction of the catalog saw."""

    meta: dict[str, Any]
    live: np.ndarray  # sorted FAISS ids of committed, indexed rows
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint32))  # catalog row id of each live id


def catalog_path(home: Path) -> Path:
    return home / catalog.CATALOG_FILE


def repair_hint(home: Path, *, start: bool = False) -> str:
    return f"{'R' if start else 'r'}un `viewfinder doctor --home {home} --repair`"


def sqlite_damage(err: BaseException) -> str | None:
    """The SQLite error name when ``err`` says the catalog file itself is damaged, else None."""
    name = getattr(getattr(err, "orig", err), "sqlite_errorname", None) or ""
    return name if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) else None


@contextmanager
def catalog_damage(home: Path) -> Iterator[None]:
    """A damaged catalog file becomes ``LibraryCorrupt``; other database errors pass through."""
    try:
        yield
    except (DatabaseError, sqlite3.DatabaseError) as err:
        if sqlite_damage(err) is None:
            raise
        raise LibraryCorrupt(
            f"The catalog {catalog_path(home)} is damaged ({sqlite_damage(err)}) and the files in it cannot be "
            f"rebuilt from the stored vectors; {repair_hint(home)} to set it aside, then index your folders again."
        ) from err


def leftover_files(home: Path) -> list[Path]:
    """Vectors and index files in ``home`` (whatever the catalog says of them)."""
    if not home.is_dir():
        return []
    return sorted(p for p in home.iterdir() if p.is_file() and p.name.startswith(("vectors-", "index-")))


def open_catalog(home: Path, given: str | None = None) -> tuple[Engine, Snapshot]:
    """Connect, migrate and read a snapshot; ``LibraryCorrupt`` when the catalog file is damaged or has
    lost what the vectors next to it need (an emptied catalog would otherwise look like a new library).
    The catalog is the SQLite file in ``home`` or the server database ``search.catalog_location`` names."""
    url = catalog_location.server_url(home, given)
    leftovers = leftover_files(home)
    if leftovers and url is None and not catalog_path(home).is_file():
        raise missing_catalog(home)  # not a new library: do not create an empty catalog next to its vectors
    had_vectors = any(p.name.startswith("vectors-") for p in leftovers)  # read before the snapshot: no race
    engine = catalog.connect(catalog_path(home)) if url is None else catalog_location.connect_server(url)
    try:
        with catalog_damage(home):
            if url is not None:
                try:
                    migrate(engine, where=str(home))
                except OperationalError as err:
                    raise catalog_location.unreachable(url, err) from None
            else:
                migrate(engine, where=str(home))
            snapshot = read_snapshot(engine)
        if snapshot.dim is None and had_vectors:
            raise LibraryCorrupt(
                f"The catalog {catalog_path(home)} has lost its contents but the library's vectors are still there; "
                f"{repair_hint(home)} to set them aside, then index your folders again."
            )
        check_vectors_file(home, snapshot)
    except BaseException:
        engine.dispose()
        raise
    return engine, snapshot


def missing_catalog(home: Path) -> LibraryCorrupt:
    return LibraryCorrupt(
        f"The catalog {catalog_path(home)} is missing; the vectors next to it cannot say which image each "
        f"belongs to. {repair_hint(home, start=True)} to set them aside, then index your folders again."
    )


def check_vectors_file(home: Path, snapshot: Snapshot) -> None:
    """The vectors file must hold at least the rows the catalog has committed (a longer file is fine:
    a torn tail from a killed run, never read)."""
    if snapshot.dim is None or snapshot.vector_rows == 0:
        return
    path = home / snapshot.meta["vectors_file"]
    found = file_rows(path, snapshot.dim, snapshot.meta["dtype"])
    if found < snapshot.vector_rows:
        what = "is missing" if not path.exists() else f"holds {found} vectors where the catalog has {snapshot.vector_rows}"
        raise LibraryCorrupt(
            f"The vectors file {path} {what}; {repair_hint(home)} (the images whose vectors are lost are "
            f"embedded again by the next `viewfinder index`)."
        )


def read_snapshot(engine: Engine) -> Snapshot:
    """The metadata and the live ids as of one moment. Python's sqlite3 starts no transaction for a SELECT,
    so without the explicit BEGIN each query would see its own moment, and a commit landing between them
    would give ids past ``vector_rows`` (found by tests/test_concurrency.py)."""
    with Session(engine) as session, session.begin():
        if engine.dialect.name != "sqlite":  # a server: one REPEATABLE READ transaction is one snapshot
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        else:
            dbapi = session.connection().connection.dbapi_connection
            if dbapi is not None and not dbapi.in_transaction:
                dbapi.execute("BEGIN")  # committed (a no-op for a read) when the session's transaction ends
        meta = catalog.read_meta(session)
        live, rows = catalog.live_ids_and_rows(session)
    return Snapshot(meta=meta, live=live, rows=rows)


def check_model(snapshot: Snapshot, model: str | None, home: Path) -> None:
    if model is not None and snapshot.model is not None and snapshot.model != model:
        raise ModelMismatch(
            f"The library in {home} was built with the model '{snapshot.model}', not '{model}': "
            f"leave out --model to use the library's model, or index into another --home."
        )
