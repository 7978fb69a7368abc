"""Searches while an indexer runs, and a second indexer on the same library."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import Cli, catalog_engine
from test_kill import Forker, check_complete, corpus_files, encoder, forker, make_collection, resume  # noqa: F401

from indexer.writer import LibraryWriter
from search.errors import LibraryLocked
from search.library import Library

# Every test here runs on the default SQLite catalog and on a PostgreSQL one (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("catalog_backend")


@pytest.mark.timeout(300)
def test_searches_during_a_run_see_the_last_committed_state(
    tmp_path: Path, forker: Forker, encoder, tiny_clip: Path, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    root = make_collection(tmp_path / "photos", 60)
    home = tmp_path / "library"
    resume(home, root, encoder)  # 60 images, flat index
    make_collection(root, 360, start=1000)  # the run adds 360: batches, then a retrained IVF-PQ index
    early = Library.open(home)  # opened before the run, searched after it replaced the index file
    cli = Cli(home, tiny_clip)
    rng = np.random.default_rng(0)
    sizes: list[int] = []
    commands = refusals = 0
    proc = forker.start(home, root, batch=2)  # 180 commits
    deadline = time.monotonic() + 240
    while proc.is_alive() and time.monotonic() < deadline and len(sizes) < 3000:
        lib = Library.open(home)
        live = lib.snapshot.live
        fid = int(live[rng.integers(len(live))])
        hits = lib.search_vector(lib.vector(fid), k=5)
        assert len(hits) == 5 and hits[0].record.faiss_id == fid and hits[0].score == pytest.approx(1.0, abs=1e-3)
        assert {h.record.faiss_id for h in hits} <= set(live.tolist())  # only committed rows
        sizes.append(len(lib))
        lib.close()
        if not 60 < sizes[-1] < 420 or len(set(sizes)) < 3:
            continue  # until the run is well under way (and seen to be), nothing slow here
        if commands < 2 and (commands == 0 or len(sizes) % 10 == 0):  # now and then, the real command
            assert len(cli("search", "a photo", "--json", "-k", "3")) == 3
            commands += 1
        if refusals == 0:  # the run holds the lock: a second indexer is refused
            try:
                LibraryWriter.open(home).close()  # only possible if the run has just ended
            except LibraryLocked as err:
                assert "Another indexer" in str(err) and "wait for it to finish" in str(err)
                result = cli("index", str(root), expect=1)
                refusals += "Another indexer" in result.stderr
    proc.join(60)
    assert proc.exitcode == 0
    assert sizes == sorted(sizes) and sizes[0] >= 60  # never a step back, never half a batch
    assert len(set(sizes)) >= 3, f"the searches did not overlap the run: {sorted(set(sizes))}"
    assert refusals == 1 and commands >= 1
    with caplog.at_level(logging.INFO, logger="search.library"):
        top = early.search_vector(early.vector(int(early.snapshot.live[7])), k=1)[0]
    assert top.record.faiss_id == early.snapshot.live[7] and len(early) == 60
    assert "replaced by a newer one" in caplog.text and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    corpus = corpus_files(root)
    check_complete(home, corpus.images, corpus.broken)


def test_a_snapshot_is_one_moment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch committed between the two reads of a snapshot (metadata, then live ids) is not half seen:
    deterministic version of the race the test above found."""
    from test_ann import clustered, fill

    from search import catalog, snapshot

    vectors = clustered(30, 16)
    fill(tmp_path, vectors[:20])
    read_meta = catalog.read_meta
    landed: list[int] = []

    def meta_then_a_commit(session: object) -> dict:
        meta = read_meta(session)
        if not landed:
            landed.append(1)
            fill(tmp_path, vectors[20:], start=20)  # another connection commits 10 more rows right now
        return meta

    monkeypatch.setattr(catalog, "read_meta", meta_then_a_commit)
    snap = snapshot.read_snapshot(catalog_engine(tmp_path))
    assert landed and snap.vector_rows == 20 and snap.live.tolist() == list(range(20))
