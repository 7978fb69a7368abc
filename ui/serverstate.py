"""What ``viewfinder serve`` keeps warm: the library, its searcher and model, its thumbnails, and the
watch that re-reads the catalog when an indexer has committed (``CatalogWatch``: SQLite's
``PRAGMA data_version``, the meta table on PostgreSQL), so a running server sees new index runs."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from search import errors
from search.catalog import meta_fingerprint
from search.library import Library
from search.searcher import Searcher
from search.settings import DEFAULT_MODEL, resolve_model_id
from search.snapshot import catalog_path
from search.thumbs import THUMB_DIR, Thumbnails

log = logging.getLogger("viewfinder.serve")


class CatalogWatch:
    """Tells when another connection (an indexer) has committed to the catalog since the last look.

    SQLite: ``PRAGMA data_version`` on a read-only connection of its own (it moves when any other
    connection commits). A server catalog (PostgreSQL) has no file to watch: there the meta table, which
    every commit writes (``search.catalog.meta_fingerprint``), is read, a few rows per query."""

    def __init__(self, library: Library) -> None:
        self._conn: sqlite3.Connection | None = None
        self._engine = library.engine
        if library.engine.dialect.name == "sqlite":
            self._conn = sqlite3.connect(f"file:{catalog_path(library.home)}?mode=ro", uri=True, check_same_thread=False)
        self._seen = self._version()

    def _version(self) -> object:
        if self._conn is not None:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        with self._engine.connect() as conn:
            return meta_fingerprint(conn)

    def changed(self) -> bool:
        now = self._version()
        changed, self._seen = now != self._seen, now
        return changed

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


@dataclass
class State:
    """What the server keeps warm. ``fresh()`` hands out the library, re-read if an indexer committed."""

    home: Path
    library: Library
    searcher: Searcher
    thumbs: Thumbnails
    watch: CatalogWatch
    model_id: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    queries: int = 0

    @contextmanager
    def fresh(self) -> Iterator[Library]:
        with self.lock:
            if self.watch.changed():
                self.library.refresh()
            yield self.library

    def close(self) -> None:
        self.watch.close()
        self.library.close()


def open_state(home: Path, model: str | None, device: str, *, backend: str = "torch", warm: bool = True) -> State:
    """Open the library and (``warm``) load its model now, so the first query is as fast as the rest.
    A model that cannot load is reported and tried again by the first query that needs it."""
    from search.backends import cache_root, check_backend
    from search.encoder import Encoder

    check_backend(backend)
    requested = resolve_model_id(model) if model else None
    library = Library.open(home, model=requested)
    model_id = library.model or requested or DEFAULT_MODEL
    searcher = Searcher(library, lambda: Encoder.load(model_id, device, backend=backend, cache=cache_root(library.home)))
    if warm and library.model:
        try:
            searcher.encoder  # noqa: B018 (loads it)
        except errors.ModelLoadError as err:
            log.warning("%s", err)
    thumbs = Thumbnails(library.home / THUMB_DIR, library.record)
    return State(home=library.home, library=library, searcher=searcher, thumbs=thumbs,
                 watch=CatalogWatch(library), model_id=model_id)  # fmt: skip
