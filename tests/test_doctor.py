"""Damaged libraries: a clear message naming `viewfinder doctor --repair`, never a raw traceback; the
doctor finds what is wrong and repairs what the stored vectors allow; a full disk keeps the last state."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest
from conftest import Cli
from test_kill import BATCH, FLAT_BELOW, Corpus, check_complete, corpus_files, encoder, make_collection, resume  # noqa: F401

from indexer import faults
from indexer.writer import LibraryWriter
from search.errors import LibraryCorrupt, SchemaTooNew
from search.library import Library


@pytest.fixture()
def library(tmp_path: Path, encoder) -> tuple[Corpus, Path]:  # noqa: F811
    """24 images and a broken file, indexed (flat index)."""
    root = make_collection(tmp_path / "photos", 24)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    home = tmp_path / "library"
    resume(home, root, encoder)
    return corpus_files(root), home


def doctor(cli: Cli, *args: str, expect: int) -> dict:
    result = cli("doctor", "--json", *args, expect=expect)
    out = result if isinstance(result, dict) else json.loads(result.stdout)
    assert out["healthy"] is (expect == 0)
    return out


def codes(report: dict) -> list[str]:
    return [f["code"] for f in report["findings"]]


def no_traceback(result: object) -> str:
    text = result.output + (result.stderr if result.stderr_bytes else "")
    assert "Traceback" not in text and "sqlite3." not in text and "sqlalchemy" not in text
    return text


def meta_of(home: Path) -> dict:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}


def test_healthy(library: tuple[Corpus, Path], tiny_clip: Path) -> None:
    _, home = library
    cli = Cli(home, tiny_clip)
    report = doctor(cli, expect=0)
    assert report["findings"] == [] and report["facts"]["indexed"] == 24 and report["facts"]["index_vectors"] == 24
    assert "Healthy: 24 indexed images" in cli("doctor").stdout


def test_missing_index_is_searched_exactly_then_rebuilt(library: tuple[Corpus, Path], tiny_clip: Path, caplog: pytest.LogCaptureFixture) -> None:
    corpus, home = library
    (home / meta_of(home)["index_file"]).unlink()
    lib = Library.open(home)
    with caplog.at_level(logging.WARNING, logger="search.library"):
        row = lib.snapshot.live[3]
        hit = lib.search_vector(lib.vector(int(row)), k=1)[0]
    assert hit.record.faiss_id == row and hit.score == pytest.approx(1.0, abs=1e-3)
    assert f"viewfinder doctor --home {home} --repair" in caplog.text and "missing or damaged" in caplog.text
    cli = Cli(home, tiny_clip)
    assert len(cli("search", "a photo", "--json", "-k", "5")) == 5  # the command works too
    assert codes(doctor(cli, expect=1)) == ["index-missing"]
    fixed = doctor(cli, "--repair", expect=0)
    assert any("rebuilt the index" in r for r in fixed["repaired"]) and fixed["findings"] == []
    check_complete(home, corpus.images, corpus.broken)


def test_missing_index_is_rebuilt_by_the_next_index_run(library: tuple[Corpus, Path], encoder) -> None:  # noqa: F811
    corpus, home = library
    (home / meta_of(home)["index_file"]).unlink()
    resume(home, corpus.root, encoder)  # nothing changed, but the index is written again
    check_complete(home, corpus.images, corpus.broken)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_unreadable_index(damage: str, library: tuple[Corpus, Path], tiny_clip: Path) -> None:
    corpus, home = library
    path = home / meta_of(home)["index_file"]
    if damage == "truncated":
        os.truncate(path, path.stat().st_size // 2)
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(3).bytes(5000))
    else:
        path.write_bytes(b"")
    lib = Library.open(home)
    assert lib.search_vector(lib.vector(5), k=1)[0].record.faiss_id == 5
    cli = Cli(home, tiny_clip)
    assert codes(doctor(cli, expect=1)) == ["index-unreadable"]
    doctor(cli, "--repair", expect=0)
    check_complete(home, corpus.images, corpus.broken)


def test_index_missing_rows_is_found(library: tuple[Corpus, Path], tiny_clip: Path) -> None:
    corpus, home = library
    path = home / meta_of(home)["index_file"]
    index = faiss.read_index(str(path))
    index.remove_ids(np.array([2, 7, 11], dtype=np.int64))
    faiss.write_index(index, str(path))
    cli = Cli(home, tiny_clip)
    report = doctor(cli, expect=1)
    assert codes(report) == ["index-incomplete"] and "lacks 3 indexed images" in report["findings"][0]["message"]
    doctor(cli, "--repair", expect=0)
    check_complete(home, corpus.images, corpus.broken)


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_lost_vectors(damage: str, library: tuple[Corpus, Path], tiny_clip: Path, encoder) -> None:  # noqa: F811
    corpus, home = library
    meta = meta_of(home)
    path = home / meta["vectors_file"]
    keep = 10 if damage == "truncated" else 0
    if damage == "truncated":
        os.truncate(path, keep * meta["dim"] * 2 + 7)
    else:
        path.unlink()
    hint = f"viewfinder doctor --home {home} --repair"
    with pytest.raises(LibraryCorrupt, match="vectors file") as err:
        Library.open(home)
    assert hint in str(err.value)
    cli = Cli(home, tiny_clip)
    assert hint in no_traceback(cli("search", "cat", expect=1))
    assert hint in no_traceback(cli("index", str(corpus.root), expect=1))  # refuses to append to a short file
    report = doctor(cli, expect=1)
    assert codes(report)[0] == "vectors-lost" and f"{24 - keep} indexed images have no stored vector" in report["findings"][0]["message"]
    fixed = doctor(cli, "--repair", expect=0)
    assert f"dropped {24 - keep} catalog rows" in fixed["repaired"][0]
    assert fixed["facts"]["indexed"] == keep
    again = cli("index", str(corpus.root), "--json")
    assert again["indexed"] == 24 - keep and again["unchanged"] == keep + 1  # only the lost ones, re-embedded
    check_complete(home, corpus.images, corpus.broken)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "zero bytes", "deleted"])
def test_damaged_catalog(damage: str, library: tuple[Corpus, Path], tiny_clip: Path) -> None:
    corpus, home = library
    path = home / "catalog.sqlite"
    assert not (home / "catalog.sqlite-wal").exists()
    if damage == "truncated":
        os.truncate(path, path.stat().st_size // 2)
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(4).bytes(20_000))
    elif damage == "zero bytes":
        path.write_bytes(b"")
    else:
        path.unlink()
    hint = f"viewfinder doctor --home {home} --repair"
    with pytest.raises(LibraryCorrupt, match="catalog") as err:
        Library.open(home)
    assert hint in str(err.value)
    cli = Cli(home, tiny_clip)
    assert hint in no_traceback(cli("search", "cat", expect=1))
    assert hint in no_traceback(cli("info", expect=1))
    assert hint in no_traceback(cli("index", str(corpus.root), expect=1))  # never silently starts afresh
    expected = {"truncated": "catalog-damaged", "garbage": "catalog-damaged", "zero bytes": "catalog-emptied", "deleted": "catalog-missing"}
    assert codes(doctor(cli, expect=1)) == [expected[damage]]
    fixed = doctor(cli, "--repair", expect=0)
    assert "set the damaged catalog" in fixed["repaired"][0] and codes(fixed) == ["set-aside"]
    aside = [p for p in home.iterdir() if p.name.startswith("damaged-")]
    assert len(aside) == 1 and any(p.name.startswith("vectors-") for p in aside[0].iterdir())  # kept, not deleted
    assert cli("index", str(corpus.root), "--json")["indexed"] == 24
    check_complete(home, corpus.images, corpus.broken)


def test_newer_schema(library: tuple[Corpus, Path], tiny_clip: Path) -> None:
    corpus, home = library
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999_future'")
    db.close()
    with pytest.raises(SchemaTooNew):
        Library.open(home)
    cli = Cli(home, tiny_clip)
    for args in (("search", "cat"), ("index", str(corpus.root)), ("doctor",), ("doctor", "--repair")):
        assert "written by a newer Viewfinder" in no_traceback(cli(*args, expect=1))
    assert codes(doctor(cli, "--repair", expect=1)) == ["schema-too-new"]


def test_leftovers_of_a_kill_are_notes(library: tuple[Corpus, Path], tiny_clip: Path) -> None:
    corpus, home = library
    assert len(corpus.images) == 24
    meta = meta_of(home)
    with open(home / meta["vectors_file"], "ab") as fh:
        fh.write(np.ones((3, meta["dim"]), np.float16).tobytes() + b"\x01")
    (home / "index-99.faiss").write_bytes(b"half")
    (home / "index-7.faiss.tmp").write_bytes(b"half")
    cli = Cli(home, tiny_clip)
    report = doctor(cli, expect=0)  # healthy: nothing is lost
    assert codes(report) == ["torn-tail", "stray-files"] and {f["severity"] for f in report["findings"]} == {"note"}
    fixed = doctor(cli, "--repair", expect=0)
    assert fixed["findings"] == [] and len(fixed["repaired"]) == 2
    check_complete(home, corpus.images, corpus.broken)


def test_repair_is_refused_while_an_indexer_runs(library: tuple[Corpus, Path], tiny_clip: Path) -> None:
    _, home = library
    (home / meta_of(home)["index_file"]).unlink()
    cli = Cli(home, tiny_clip)
    with LibraryWriter.open(home):
        assert codes(doctor(cli, expect=1)) == ["index-missing"]  # checking needs no lock
        assert "Another indexer" in no_traceback(cli("doctor", "--repair", expect=1))
    doctor(cli, "--repair", expect=0)


# --- a full disk ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["vectors.append:2", "index.write"])
def test_injected_disk_full_keeps_the_last_state(point: str, tmp_path: Path, tiny_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_collection(tmp_path / "photos", 30)
    cli = Cli(tmp_path / "library", tiny_clip)
    cli("index", str(root / "d0"))  # the state to keep
    before = Library.open(cli.home)
    faults.reset()
    monkeypatch.setenv("VIEWFINDER_FAULT", f"enospc@{point}")
    monkeypatch.setenv("VIEWFINDER_FLAT_BELOW", str(FLAT_BELOW))
    text = no_traceback(cli("index", str(root), "--batch-size", str(BATCH), expect=1))
    assert "Could not write the" in text and "No space left on device" in text and "committed before is kept" in text
    monkeypatch.delenv("VIEWFINDER_FAULT")
    after = Library.open(cli.home)
    assert len(after) >= len(before) == 10
    assert after.search_vector(after.vector(int(after.snapshot.live[-1])), k=1)[0].score == pytest.approx(1.0, abs=1e-3)
    assert not list(cli.home.glob("*.tmp"))
    cli("index", str(root))
    corpus = corpus_files(root)
    check_complete(cli.home, corpus.images, corpus.broken)


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up here ({done.stderr.strip() or done.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system holding ``folder`` up to ``leave`` free bytes."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:  # unbuffered: nothing left to flush (and fail) on close
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    stat = os.statvfs(folder)
    os.truncate(filler, max(0, filler.stat().st_size - leave + stat.f_bavail * stat.f_frsize))
    return filler


def test_real_disk_full_keeps_the_last_state(small_disk: Path, tmp_path: Path, tiny_clip: Path) -> None:
    """A library on a 1 MiB tmpfs that fills up in the middle of a run."""
    root = make_collection(tmp_path / "photos", 20)
    cli = Cli(small_disk / "library", tiny_clip)
    cli("index", str(root))
    make_collection(root, 300, start=100)
    filler = fill(small_disk, leave=96 * 1024)
    text = no_traceback(cli("index", str(root), "--batch-size", "8", expect=1))
    assert "Could not write the" in text and "committed before is kept" in text
    lib = Library.open(cli.home)  # the last committed state opens and searches
    assert len(lib) >= 20
    for fid in lib.snapshot.live[:: max(1, len(lib) // 10)]:
        assert lib.search_vector(lib.vector(int(fid)), k=1)[0].record.faiss_id == fid
    lib.close()
    filler.unlink()
    cli("index", str(root))
    corpus = corpus_files(root)
    check_complete(cli.home, corpus.images, corpus.broken)
    assert codes(doctor(cli, expect=0)) == []
