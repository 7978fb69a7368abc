"""Where a library's catalog lives: the SQLite file in the library folder (the default), or a database
server named by a SQLAlchemy URL (PostgreSQL: ``--catalog URL`` on ``index`` or ``$VIEWFINDER_CATALOG_URL``).

The vectors and index files stay in the library folder either way. A library on a server remembers the
URL in ``HOME/catalog.url`` *without its password*, so later commands need no ``--catalog``; the password
comes from the URL given, ``$VIEWFINDER_CATALOG_URL``, or libpq's own ``$PGPASSWORD`` / ``~/.pgpass``.
Precedence: the URL given, then the environment, then the remembered one; a URL that names another
catalog than the one the library remembers (or a server URL for a library whose catalog is its SQLite
file) is refused, so one library never mixes two catalogs.

PostgreSQL is reached through psycopg 3 (``pip install 'viewfinder[postgres]'``): the engine and its
driver, not code of ours, give the transactions, the snapshot reads (REPEATABLE READ) and the writer
lock (``pg_try_advisory_lock``, dropped by the server when the holder's connection dies, even by SIGKILL).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from search.errors import CatalogUnavailable

ENV = "VIEWFINDER_CATALOG_URL"
URL_FILE = "catalog.url"
INSTALL = "pip install 'viewfinder[postgres]'"


def remembered(home: Path) -> str | None:
    try:
        return (home / URL_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CatalogUnavailable(f"'{url}' is not a database URL (e.g. postgresql://user@host/dbname).") from None
    if parsed.drivername in ("postgresql", "postgres"):  # SQLAlchemy's default would be psycopg2
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def shown(url: str | URL) -> str:
    """The URL without its password: what is remembered and printed."""
    parsed = url if isinstance(url, URL) else parse(url)
    bare = URL.create(parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, parsed.query)
    return bare.render_as_string(hide_password=False)


def server_url(home: Path, given: str | None = None) -> URL | None:
    """The server catalog's URL for ``home`` (with a password where one was given), or None for SQLite."""
    home = Path(home).expanduser()
    wanted = given or os.environ.get(ENV) or None
    kept = remembered(home)
    if wanted is None:
        return parse(kept) if kept else None
    url = parse(wanted)
    if url.get_backend_name() == "sqlite":
        raise CatalogUnavailable(f"--catalog takes a database server's URL; a SQLite catalog lives in {home} itself (leave --catalog out).")
    if kept is not None and shown(url) != shown(kept):
        raise CatalogUnavailable(f"The library in {home} keeps its catalog at {shown(kept)}, not {shown(url)}; give that URL or another --home.")
    if kept is None and (home / "catalog.sqlite").is_file():
        raise CatalogUnavailable(f"The library in {home} keeps its catalog in {home / 'catalog.sqlite'}; leave out --catalog (and {ENV}) or use another --home.")
    return url


def remember(home: Path, url: URL) -> None:
    """Write ``HOME/catalog.url`` (no password) atomically: temp file, fsync, rename."""
    text = shown(url)
    if remembered(home) == text:
        return
    tmp = home / f".{URL_FILE}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, home / URL_FILE)


def connect_server(url: URL, application_name: str = "viewfinder") -> Engine:
    """An engine on the server catalog; one sentence when the driver is missing."""
    try:
        return create_engine(url, pool_pre_ping=True, connect_args={"application_name": application_name})
    except ImportError:
        raise CatalogUnavailable(
            f"The catalog {shown(url)} is on PostgreSQL, which needs the psycopg driver: {INSTALL}."
        ) from None


def unreachable(url: URL, err: BaseException) -> CatalogUnavailable:
    reason = str(getattr(err, "orig", None) or err).strip().splitlines()
    why = reason[0] if reason else type(err).__name__
    return CatalogUnavailable(
        f"Cannot open the catalog database {shown(url)} ({why}); check the URL, that the server is running, "
        "and the password (in the URL, $PGPASSWORD or ~/.pgpass)."
    )
