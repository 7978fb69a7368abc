"""Atomicity and refusal: torn tails, orphans from a killed run, locks, schema versions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import Cli, catalog_engine
from sqlalchemy import text
from test_ann import clustered, fill, finish

from indexer.writer import LibraryWriter
from search.errors import LibraryLocked, SchemaTooNew
from search.library import Library

# Every test here runs on the default SQLite catalog and on a PostgreSQL one (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("catalog_backend")


def test_torn_tail_and_orphans_are_ignored_then_cleaned(tmp_path: Path) -> None:
    vectors = clustered(500, 32)
    fill(tmp_path, vectors)
    finish(tmp_path, flat_below=1000)
    vec_file = next(tmp_path.glob("vectors-*.f16"))
    with open(vec_file, "ab") as fh:  # what a kill mid-append leaves: rows no catalog row points to
        fh.write(np.ones((3, 32), dtype=np.float16).tobytes() + b"\x01\x02")
    (tmp_path / "index-99.faiss").write_bytes(b"half-written")
    (tmp_path / "index-7.faiss.tmp").write_bytes(b"half-written")
    lib = Library.open(tmp_path)
    assert len(lib) == 500 and lib.search_vector(vectors[0], k=1)[0].path == "/img/0.jpg"
    with LibraryWriter.open(tmp_path) as writer:
        assert writer.torn_tail() == 3
    assert not (tmp_path / "index-99.faiss").exists() and not (tmp_path / "index-7.faiss.tmp").exists()
    fill(tmp_path, vectors[:10], start=500)  # the next append overwrites the torn tail
    assert vec_file.stat().st_size == 510 * 32 * 2


def test_second_writer_refused(tmp_path: Path) -> None:
    with LibraryWriter.open(tmp_path):
        with pytest.raises(LibraryLocked, match="Another indexer"):
            LibraryWriter.open(tmp_path)
    LibraryWriter.open(tmp_path).close()  # released


def test_reader_sees_last_committed_state_during_a_run(tmp_path: Path) -> None:
    vectors = clustered(300, 32)
    fill(tmp_path, vectors[:200])
    finish(tmp_path, flat_below=1000)
    with LibraryWriter.open(tmp_path) as writer:  # a run in progress, holding the lock
        lib = Library.open(tmp_path)
        assert len(lib) == 200 and lib.search_vector(vectors[5], k=1)[0].path == "/img/5.jpg"


def test_newer_schema_refused(tmp_path: Path) -> None:
    fill(tmp_path, clustered(10, 32))
    engine = catalog_engine(tmp_path)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    with pytest.raises(SchemaTooNew, match="newer Viewfinder"):
        Library.open(tmp_path)


def test_cli_reports_lock(cli: Cli, collection: Path) -> None:
    with LibraryWriter.open(cli.home):
        result = cli("index", str(collection), expect=1)
    assert "Another indexer" in result.stderr
