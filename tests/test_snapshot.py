"""A library kept open (as the web page keeps one) while the real indexer re-indexes files: every read of a
query answers from the library's snapshot or refreshes it (issue 8, item 1). Before, "More like this" on a
re-indexed file raised a raw IndexError and hits of re-indexed files were silently dropped."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import Cli, write_image

from search.encoder import Encoder
from search.library import Library
from search.searcher import Searcher


@pytest.fixture()
def indexed(tmp_path: Path, tiny_clip: Path) -> tuple[Cli, Path]:
    root = tmp_path / "photos"
    for i in range(8):
        write_image(root / f"{i}.png", seed=300 + i, size=(48, 40))
    cli = Cli(tmp_path / "library", tiny_clip)
    cli("index", str(root), "--json")
    return cli, root


def test_more_like_a_file_modified_since_the_library_was_opened(indexed: tuple[Cli, Path], tiny_clip: Path) -> None:
    cli, root = indexed
    lib = Library.open(cli.home)
    searcher = Searcher(lib, Encoder.load(str(tiny_clip), "cpu"))
    before = len(lib)
    changed = root / "3.png"
    write_image(changed, seed=999, size=(48, 40))  # new content: re-embedded under a new FAISS id
    assert cli("index", str(root), "--json")["indexed"] == 1
    try:
        hits = searcher.similar(changed, k=8)  # was: IndexError from the memory map of the old snapshot
        assert hits[0].path == str(changed) and hits[0].score == pytest.approx(1.0, abs=1e-3)
        assert len(hits) == before and len({h.path for h in hits}) == before
        fresh = Library.open(cli.home)
        try:
            assert np.allclose(lib.vector_for_path(changed), fresh.vector_for_path(changed))  # the new content
            assert lib.record(changed) == fresh.record(changed)
        finally:
            fresh.close()
    finally:
        lib.close()


def test_hits_of_files_reindexed_since_the_snapshot_are_kept(indexed: tuple[Cli, Path]) -> None:
    cli, root = indexed
    lib = Library.open(cli.home)
    touched, gone = root / "5.png", root / "6.png"
    old, gone_id = lib.record(touched), lib.record(gone).faiss_id
    os.utime(touched, ns=(1, 10**18))  # same content, new mtime: re-indexed under a new FAISS id (reused vector)
    gone.unlink()
    report = cli("index", str(root), "--json")
    assert report["reused"] == 1 and report["removed"] == 1
    try:
        assert len(lib) == 8 and lib.snapshot.live.tolist() == list(range(8))  # still the snapshot it opened
        hits = lib.search_vector(lib.vector(old.faiss_id), k=8)
        assert hits[0].path == str(touched) and hits[0].score == pytest.approx(1.0, abs=1e-3)
        assert hits[0].record.faiss_id == old.faiss_id  # the id this snapshot knows it by ...
        assert hits[0].record.mtime_ns == 10**18  # ... with the file's current record
        assert {h.path for h in hits} == {str(p) for p in root.iterdir()}  # only the removed file is left out
        records = lib.records(lib.snapshot.live)
        assert set(records) == set(range(8)) - {gone_id} and records[old.faiss_id].path == str(touched)
    finally:
        lib.close()
