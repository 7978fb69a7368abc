"""The writer lock of a library whose catalog is on PostgreSQL: a session advisory lock
(``pg_try_advisory_lock``) held on a connection of its own for the writer's life.

PostgreSQL scopes advisory locks to one database and a library's catalog is one database, so the key is
one number for every library (``KEY``). The server drops the lock when the holder's connection ends, also
when the holder is killed with SIGKILL (the socket closes), like the kernel does for the ``flock`` of a
SQLite library. The holder's pid is read back from ``application_name`` for the refusal message.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from search import catalog_location
from search.errors import LibraryLocked

KEY = zlib.crc32(b"viewfinder library writer")  # < 2^32: a bigint key


class AdvisoryLock:
    """The held lock: its engine (one connection, no pool sharing) and the connection holding it."""

    def __init__(self, engine: Engine, conn: Connection) -> None:
        self.engine, self.conn = engine, conn

    def release(self) -> None:
        try:
            self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": KEY})
            self.conn.commit()
            self.conn.close()
        except OperationalError:
            pass  # the connection is gone, and the lock with it
        finally:
            self.engine.dispose()


def acquire(home: Path, url: URL) -> AdvisoryLock:
    """Take the lock without waiting; ``LibraryLocked`` with the same sentence as the file lock's."""
    engine = catalog_location.connect_server(url, application_name=f"viewfinder-writer {os.getpid()}")
    try:
        conn = engine.connect()
    except OperationalError as err:
        engine.dispose()
        raise catalog_location.unreachable(url, err) from None
    got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": KEY}).scalar()
    conn.commit()  # the session lock outlives the transaction
    if got:
        return AdvisoryLock(engine, conn)
    holder = conn.execute(
        text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) AND l.objid = :k"
        ),
        {"k": KEY},
    ).scalar()
    conn.close()
    engine.dispose()
    pid = str(holder).rsplit(" ", 1)[-1] if holder else "?"
    raise LibraryLocked(f"Another indexer (pid {pid}) is writing to the library in {home}; wait for it to finish.")

