"""Kill -9 the indexer at many points, then check that the library opens and a re-run finishes the job.

The indexer runs as a real subprocess (the ``viewfinder index`` command) and dies by SIGKILL, either at a
named point (``VIEWFINDER_FAULT``, see ``indexer/faults.py``) or after a seeded random delay. Children are
forked from a forkserver that has already imported torch and transformers, so each costs about a second
instead of the five a fresh interpreter needs.

After every kill: ``Library.open`` works and searches see only committed rows; the next run completes; then
the catalog has exactly one row per file, every indexed row its own vector row below ``vector_rows``, no
vector rows beyond it, an index holding exactly the indexed rows, and every image finds itself first.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pytest
from conftest import write_image
from sqlalchemy import select
from sqlalchemy.orm import Session

from indexer.run import index_paths
from indexer.writer import LibraryWriter
from search.catalog import FileRow
from search.encoder import Encoder
from search.library import Library
from search.vectors import file_rows

PRELOAD = [
    "numpy",
    "PIL.Image",
    "faiss",
    "torch",
    "transformers",
    "transformers.models.clip.modeling_clip",
    "transformers.models.clip.processing_clip",
    "transformers.models.clip.image_processing_clip",
    "transformers.models.clip.tokenization_clip",
    "sqlalchemy",
    "alembic",
    "typer",
    "ui.cli",
    "indexer.run",
    "indexer.writer",
    "search.encoder",
    "test_kill",
]
FLAT_BELOW = 50  # small enough that the 80-odd images below get a trained IVF-PQ index
BATCH = 8


# --- the harness ------------------------------------------------------------------------------------------


def _cli_child(argv: list[str], env: dict[str, str]) -> None:
    """Runs in the forked child: the real ``viewfinder`` command with the given environment."""
    os.environ.update(env)
    if not os.environ.get("VIEWFINDER_CATALOG_URL"):
        os.environ.pop("VIEWFINDER_CATALOG_URL", None)  # the SQLite catalog
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the report; stderr is kept for a failing test's output
    from ui.cli import app

    app(args=argv, prog_name="viewfinder")


@dataclass
class Forker:
    ctx: multiprocessing.context.ForkServerContext
    model: Path

    def start(self, home: Path, root: Path, env: dict[str, str] | None = None, *, batch: int = BATCH) -> multiprocessing.Process:
        argv = ["index", str(root), "--home", str(home), "--model", str(self.model), "--batch-size", str(batch), "--workers", "2"]
        full_env = {"VIEWFINDER_FLAT_BELOW": str(FLAT_BELOW), "HF_HUB_OFFLINE": "1", **(env or {})}
        # The forkserver's environment is that of its start (maybe during a PostgreSQL test): this test's own.
        full_env.setdefault("VIEWFINDER_CATALOG_URL", os.environ.get("VIEWFINDER_CATALOG_URL", ""))
        proc = self.ctx.Process(target=_cli_child, args=(argv, full_env))
        # The child re-imports the parent's __main__; after AppTest ran in this process, that is the
        # Streamlit script. A bare module keeps the child to the CLI alone.
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            proc.start()
        finally:
            sys.modules["__main__"] = main
        return proc

    def run(self, home: Path, root: Path, env: dict[str, str] | None = None, *, kill_after: float | None = None, timeout: float = 120) -> int | None:
        """Exit code of one ``viewfinder index`` run (-9: killed)."""
        proc = self.start(home, root, env)
        proc.join(kill_after if kill_after is not None else timeout)
        if proc.is_alive():
            assert kill_after is not None, "the indexer hung"
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(30)
        return proc.exitcode


@pytest.fixture(scope="session")
def forker(tiny_clip: Path) -> Iterator[Forker]:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    yield Forker(ctx, tiny_clip)


@pytest.fixture(scope="session")
def encoder(tiny_clip: Path) -> Encoder:
    return Encoder.load(str(tiny_clip), "cpu")


def make_collection(root: Path, n: int, *, start: int = 0) -> Path:
    for i in range(start, start + n):
        write_image(root / f"d{i % 3}" / f"img {i:03d}.png", seed=1000 + i, size=(40, 30))
    return root


def resume(home: Path, root: Path, encoder: Encoder) -> None:
    """What `viewfinder index ROOT` does, in this process: open (taking the lock), run, finish."""
    with LibraryWriter.open(home) as writer:
        index_paths([root], writer, lambda: encoder, model_id=encoder.model_id, batch_size=BATCH, workers=2, flat_below=FLAT_BELOW)


# --- the invariants ---------------------------------------------------------------------------------------


def check_open_after_kill(home: Path) -> None:
    """Right after a kill: the library opens, and a search returns only rows the catalog has committed."""
    if not (home / "catalog.sqlite").exists() and not (home / "catalog.url").exists():
        return  # killed before the catalog was created: nothing was committed
    lib = Library.open(home)
    try:
        if len(lib):
            rows = lib.snapshot.live
            hits = lib.search_vector(lib.vector(int(rows[0])), k=5)
            assert hits and hits[0].score == pytest.approx(1.0, abs=1e-3)
            assert all(h.record.faiss_id in set(rows.tolist()) for h in hits)
    finally:
        lib.close()


def check_complete(home: Path, images: set[str], broken: set[str], *, garbage_ok: bool = False) -> None:
    """After a completed run: one row per file, distinct vector rows, nothing orphaned, an exact index."""
    lib = Library.open(home)
    try:
        with Session(lib.engine) as session:
            rows = list(session.scalars(select(FileRow)))
        paths = [r.path for r in rows]
        assert len(paths) == len(set(paths)) == len(images) + len(broken)
        assert set(paths) == images | broken
        indexed = [r for r in rows if r.status == "indexed"]
        assert {r.path for r in indexed} == images
        assert {r.path for r in rows if r.status == "skipped"} == broken
        ids = [r.faiss_id for r in indexed]
        vector_rows = lib.snapshot.vector_rows
        assert len(set(ids)) == len(ids) and all(i is not None and 0 <= i < vector_rows for i in ids)
        meta = lib.snapshot.meta
        assert file_rows(home / meta["vectors_file"], meta["dim"], meta["dtype"]) == vector_rows  # no torn tail
        if not garbage_ok:
            assert sorted(ids) == list(range(vector_rows))  # no orphan vector rows
        index = faiss.read_index(str(home / meta["index_file"]))
        assert index.ntotal == len(indexed)
        assert meta["index_rows"] == vector_rows
        assert sorted(p.name for p in home.iterdir() if p.name.startswith(("vectors-", "index-")) or p.name.endswith(".tmp")) == sorted(
            [meta["vectors_file"], meta["index_file"]]
        )
        for rec in indexed:
            top = lib.search_vector(lib.vector(rec.faiss_id), k=1)[0]
            assert top.score == pytest.approx(1.0, abs=1e-3)
            assert top.path == rec.path or top.record.content_hash == rec.content_hash  # a duplicate may tie
    finally:
        lib.close()


@dataclass(frozen=True)
class Corpus:
    root: Path
    images: set[str]
    broken: set[str]


def corpus_files(root: Path) -> Corpus:
    files = {str(p) for p in root.rglob("*") if p.is_file()}
    broken = {p for p in files if p.endswith("broken.jpg")}
    return Corpus(root, files - broken, broken)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, encoder: Encoder) -> tuple[Path, Path]:
    """A collection of 84 images (a duplicate and a broken file among them) and a library of it."""
    root = make_collection(tmp_path_factory.mktemp("kill") / "photos", 82)
    shutil.copy(root / "d0" / "img 000.png", root / "d1" / "copy of img 000.png")
    (root / "d2" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00junk" * 30)
    home = root.parent / "library"
    resume(home, root, encoder)
    return root, home


def fresh(tmp_path: Path, base: tuple[Path, Path]) -> tuple[Corpus, Path]:
    root = tmp_path / "photos"
    shutil.copytree(base[0], root, symlinks=True)
    return corpus_files(root), tmp_path / "library"


def changed(tmp_path: Path, base: tuple[Path, Path]) -> tuple[Corpus, Path]:
    """A copy of the indexed library whose collection has since changed: 12 new, 5 deleted, 3 modified,
    2 renamed files (paths in the catalog are absolute, so the collection keeps its place)."""
    root, home = base
    copy = tmp_path / "library"
    shutil.copytree(home, copy)
    work = tmp_path / "photos"
    shutil.copytree(root, work)
    return _rewrite_paths(copy, root, work), copy


def _rewrite_paths(home: Path, old: Path, new: Path) -> Corpus:
    import sqlite3

    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute("UPDATE files SET path = ? || substr(path, ?)", (str(new), len(str(old)) + 1))
    db.close()
    make_collection(new, 12, start=500)
    for i in range(5):
        (new / f"d{(i + 10) % 3}" / f"img {i + 10:03d}.png").unlink()
    for i in range(3):
        write_image(new / f"d{(20 + i) % 3}" / f"img {20 + i:03d}.png", seed=77 + i, size=(40, 30))
        os.utime(new / f"d{(20 + i) % 3}" / f"img {20 + i:03d}.png", ns=(1, 10**18 + i))
    (new / "d0" / "img 030.png").rename(new / "d0" / "renamed 030.png")
    (new / "d1" / "img 031.png").rename(new / "d2" / "moved 031.png")
    return corpus_files(new)


# --- the tests --------------------------------------------------------------------------------------------

FRESH_POINTS = [
    "walk:5",  # during the walk
    "batch.embedded:2",  # mid-batch: the model ran, nothing written
    "vectors.appended:3",  # vectors on disk, catalog rows not committed
    "batch.committed:4",  # after 4 batches committed
    "index.train",  # while the index is being trained
    "index.tmp_written",  # the new index in its temp file, not renamed
    "index.renamed",  # the new index in place, the catalog still naming none
]
CHANGED_POINTS = [
    pytest.param("vectors.appended:1", marks=pytest.mark.slow),  # as in a first run
    "removed",  # deleted files' rows gone, the index not yet updated
    pytest.param("index.train", marks=pytest.mark.slow),  # as in a first run
    "index.committed",  # the catalog names the new index; the old file not yet removed
]


@pytest.mark.parametrize("point", FRESH_POINTS)
def test_kill_first_run_at(point: str, tmp_path: Path, base: tuple[Path, Path], forker: Forker, encoder: Encoder) -> None:
    corpus, home = fresh(tmp_path, base)
    assert forker.run(home, corpus.root, {"VIEWFINDER_FAULT": point}) == -signal.SIGKILL
    check_open_after_kill(home)
    resume(home, corpus.root, encoder)
    check_complete(home, corpus.images, corpus.broken)


@pytest.mark.parametrize("point", ["vectors.appended:3", "batch.committed:4", "index.renamed"])
def test_kill_first_run_on_postgres_at(point: str, tmp_path: Path, base: tuple[Path, Path], forker: Forker, encoder: Encoder, postgres_catalog: str) -> None:
    """The same kills with the catalog on PostgreSQL (a subset of the points: the commit steps)."""
    test_kill_first_run_at(point, tmp_path, base, forker, encoder)


@pytest.mark.parametrize("point", CHANGED_POINTS)
def test_kill_incremental_run_at(point: str, tmp_path: Path, base: tuple[Path, Path], forker: Forker, encoder: Encoder) -> None:
    corpus, home = changed(tmp_path, base)
    assert forker.run(home, corpus.root, {"VIEWFINDER_FAULT": point}) == -signal.SIGKILL
    check_open_after_kill(home)
    resume(home, corpus.root, encoder)
    check_complete(home, corpus.images, corpus.broken, garbage_ok=True)


def test_kill_twice_then_finish(tmp_path: Path, base: tuple[Path, Path], forker: Forker, encoder: Encoder, catalog_backend: str) -> None:
    """A run killed mid-way, a second run killed at another point, a third that finishes."""
    corpus, home = fresh(tmp_path, base)
    assert forker.run(home, corpus.root, {"VIEWFINDER_FAULT": "batch.committed:3"}) == -signal.SIGKILL
    assert forker.run(home, corpus.root, {"VIEWFINDER_FAULT": "vectors.appended:2"}) == -signal.SIGKILL
    check_open_after_kill(home)
    assert forker.run(home, corpus.root) == 0  # the real command, in a subprocess, completes
    check_complete(home, corpus.images, corpus.broken)


@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)])
def test_kill_at_random_moments(seed: int, tmp_path: Path, base: tuple[Path, Path], forker: Forker, encoder: Encoder) -> None:
    """SIGKILL by timer at a seeded random delay (wherever the run happens to be), then a full re-run."""
    corpus, home = fresh(tmp_path, base)
    delay = float(np.random.default_rng(seed).uniform(0.2, 3.0))
    code = forker.run(home, corpus.root, kill_after=delay)
    assert code in (0, -signal.SIGKILL)  # a fast machine may finish first
    check_open_after_kill(home)
    resume(home, corpus.root, encoder)
    check_complete(home, corpus.images, corpus.broken)


def test_unknown_fault_point_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from indexer import faults

    monkeypatch.setenv(faults.ENV, "index.tmp_writen")
    with pytest.raises(ValueError, match="POINT"):
        faults.reached("walk")
