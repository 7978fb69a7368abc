"""Query power through the parts and through the real CLI (issue 9): terms and weights, filters, sort,
cutoff, pages, grouping, export, long texts, and one clear sentence for each kind of bad input.
Mechanics only here (random-weight model); meaning is in tests/test_query_semantics.py."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import Cli, write_image
from PIL import Image

from search import ranking
from search.errors import QueryError
from search.query import Cutoff, Query, Term, parse_term
from search.records import ImageRecord, Status
from search.texts import word_windows

ROOT = Path(__file__).resolve().parent.parent


# --- pure parts ---------------------------------------------------------------------------------------


def test_terms_parse_weights_and_kinds(tmp_path: Path) -> None:
    image = write_image(tmp_path / "sunset.jpg", seed=1, fmt="JPEG")
    assert parse_term("beach") == Term("text", "beach", 1.0)
    assert parse_term("0.5:boats", negate=True) == Term("text", "boats", -0.5)
    assert parse_term(f"2:{image}") == Term("image", str(image), 2.0)
    assert parse_term(str(image)) == Term("image", str(image), 1.0)
    assert parse_term("time: 10:30") == Term("text", "time: 10:30", 1.0)  # not a number before the colon
    with pytest.raises(QueryError, match="not a number"):
        parse_term("1.x:boats")
    with pytest.raises(QueryError, match="is a folder"):
        parse_term(str(tmp_path))
    with pytest.raises(QueryError, match="empty"):
        parse_term("2:")


def test_queries_refuse_what_cannot_be_searched() -> None:
    with pytest.raises(QueryError, match="empty"):
        Query(terms=())
    with pytest.raises(QueryError, match="nothing to look for"):
        Query(terms=(Term("text", "people", -1.0),))
    with pytest.raises(QueryError, match="Unknown sort"):
        Query(terms=(Term("text", "x"),), sort="size")  # type: ignore[arg-type]
    assert Cutoff.parse("AUTO").mode == "auto" and Cutoff.parse("0.25").score == 0.25
    with pytest.raises(QueryError, match="outside"):
        Cutoff.parse("1.5")
    with pytest.raises(QueryError, match="not auto"):
        Cutoff.parse("high")
    q = Query(terms=(Term("text", "cat"),), k=10).with_page(3)
    assert q.offset == 20 and Query.from_json(q.to_json()) == q
    assert not q.ensemble and Query.from_json({**q.to_json(), "ensemble": True}).ensemble
    legacy = {k: v for k, v in q.to_json().items() if k != "ensemble"}  # a client from before the default changed
    assert Query.from_json({**legacy, "raw": False}).ensemble and not Query.from_json({**legacy, "raw": True}).ensemble
    assert not Query.from_json(legacy).ensemble


def test_combine_is_the_normalised_weighted_sum() -> None:
    a, b = np.eye(2, dtype=np.float32)
    out = ranking.combine(np.stack([a, b]), [1.0, -0.5])
    assert np.allclose(out, np.array([1, -0.5]) / np.linalg.norm([1, -0.5]))
    with pytest.raises(QueryError, match="cancel"):
        ranking.combine(np.stack([a, a]), [1.0, -1.0])


def test_grouping_collapses_near_duplicates_into_the_best() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 16)).astype(np.float32)
    rows = np.stack([base[0], base[1], base[0] + 0.01, base[2], base[1] + 0.01])
    assert ranking.group_near_duplicates(rows) == [[0, 2], [1, 4], [3]]


def test_sort_orders_by_capture_date_then_file_time() -> None:
    from datetime import datetime

    def rec(name: str, taken: datetime | None, mtime_s: int) -> ImageRecord:
        return ImageRecord(path=name, size=1, mtime_ns=mtime_s * 10**9, status=Status.INDEXED, taken_at=taken)

    recs = [rec("a", datetime(2020, 1, 1), 5), rec("b", None, 2_000_000_000), rec("c", datetime(2010, 1, 1), 9)]
    assert ranking.sort_order(recs, "newest") == [1, 0, 2]
    assert ranking.sort_order(recs, "oldest") == [2, 0, 1]
    assert ranking.sort_order(recs, "modified") == [1, 2, 0]
    assert ranking.sort_order(recs, "relevance") == [0, 1, 2]


def test_long_texts_are_split_into_windows_that_fit() -> None:
    words = [f"w{i}" for i in range(10)]
    assert word_windows(words, [3] * 10, 7) == ["w0 w1", "w2 w3", "w4 w5", "w6 w7", "w8 w9"]
    assert word_windows(["huge", "a"], [100, 1], 7) == ["huge", "a"]


# --- through the CLI ------------------------------------------------------------------------------------


@pytest.fixture()
def indexed(cli: Cli, collection: Path) -> tuple[Cli, Path]:
    shutil.copy(collection / "photos" / "chelsea.png", collection / "chelsea-copy.png")
    cli("index", str(collection), "--json")
    return cli, collection


def paths_of(hits: object) -> list[str]:
    assert isinstance(hits, list)
    return [h["path"] for h in hits]


def test_search_combines_terms_and_filters(indexed: tuple[Cli, Path]) -> None:
    cli, root = indexed
    chelsea = str(root / "photos" / "chelsea.png")
    mixed = cli("search", "a cat", "--and", f"3:{chelsea}", "--not", "0.5:a dog", "--json", "-k", "5")
    assert paths_of(mixed)[0] in (chelsea, str(root / "chelsea-copy.png"))  # the image term weighs most
    pngs = cli("search", "a cat", "--format", "png", "--json", "-k", "50")
    assert pngs and all(h["format"] == "PNG" for h in pngs)  # type: ignore[union-attr]
    wide = cli("search", "a cat", "--min-width", "500", "--json", "-k", "50")
    assert all(h["width"] >= 500 for h in wide)  # type: ignore[union-attr]
    below = cli("search", "a cat", "--folder", str(root / "space"), "--json", "-k", "50")
    assert below and all(p.startswith(str(root / "space") + "/") for p in paths_of(below))
    globbed = cli("search", "a cat", "--glob", "*.JPG", "--json")
    assert paths_of(globbed) == [str(root / "generated" / "UPPER.JPG")]
    dated = cli("search", "a cat", "--after", "2001-01-01", "--json", "-k", "50")
    assert dated and all(h["taken_at"] >= "2001-01-01" for h in dated)  # type: ignore[union-attr]
    assert cli("search", "a cat", "--before", "1900-12-31", "--json") == []


def test_pages_are_stable_and_sort_by_date(indexed: tuple[Cli, Path]) -> None:
    cli, root = indexed
    whole = paths_of(cli("search", "a rocket", "-k", "9", "--json"))
    pages = [paths_of(cli("search", "a rocket", "-k", "3", "--page", str(p), "--json")) for p in (1, 2, 3)]
    assert sum(pages, []) == whole
    assert paths_of(cli("search", "a rocket", "-k", "3", "--offset", "3", "--json")) == pages[1]
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for age, path in enumerate(files):
        os.utime(path, ns=(10**18 - age * 10**12, 10**18 - age * 10**12))  # files later in the list are older
    newest = cli("search", "a rocket", "-k", "5", "--sort", "newest", "--json")
    times = [h["mtime_ns"] for h in newest]  # type: ignore[union-attr]
    assert times == sorted(times, reverse=True)


def test_group_cutoff_export_and_csv(indexed: tuple[Cli, Path], tmp_path: Path) -> None:
    cli, root = indexed
    chelsea = str(root / "photos" / "chelsea.png")
    grouped = cli("similar", chelsea, "--group", "-k", "3", "--json")
    assert grouped[0]["path"] == chelsea  # type: ignore[index]
    members = {g["path"]: g["score"] for g in grouped[0]["group"]}  # type: ignore[index]
    assert members[str(root / "chelsea-copy.png")] == pytest.approx(1.0, abs=1e-3)  # random weights: others may join
    assert all(score >= ranking.GROUP_THRESHOLD for score in members.values())
    assert str(root / "chelsea-copy.png") not in paths_of(grouped)
    cut = cli("similar", chelsea, "--cutoff", "0.999", "-k", "10", "--json")
    assert sorted(paths_of(cut)) == sorted([chelsea, str(root / "chelsea-copy.png")])
    out = cli("similar", chelsea, "--cutoff", "0.999", "-k", "10")
    assert "8 result(s) below the relevance cutoff were hidden" in out.stderr  # type: ignore[attr-defined]
    export, table = tmp_path / "picked", tmp_path / "hits.csv"
    cli("search", "a cat", "-k", "4", "--export", str(export), "--csv", str(table))
    linked = sorted(export.iterdir())
    assert [p.name[:5] for p in linked] == ["0001_", "0002_", "0003_", "0004_"] and all(p.is_symlink() for p in linked)
    rows = list(csv.DictReader(table.open()))
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"] and all(Path(r["path"]).is_file() for r in rows)
    cli("search", "a cat", "-k", "2", "--export", str(tmp_path / "copies"), "--copy")
    copies = sorted((tmp_path / "copies").iterdir())
    assert len(copies) == 2 and not copies[0].is_symlink() and copies[0].read_bytes() == Path(rows[0]["path"]).read_bytes()


def test_a_text_past_the_token_limit_is_read_whole(indexed: tuple[Cli, Path]) -> None:
    cli, _ = indexed
    text = " ".join(["a", "tabby", "cat", "on", "a", "sofa"] * 1667)  # 10,002 words
    result = cli("search", text, "-k", "3")
    assert "longer than the model's" in result.stderr  # type: ignore[attr-defined]
    assert result.stdout.count("\n") == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "args,message",
    [
        (["search", "x", "--format", "xyz"], "Unknown image format 'xyz'"),
        (["search", "x", "--after", "last week"], "'last week' is not a date"),
        (["search", "x", "--not", "1.x:boats"], "is not a number"),
        (["search", "x", "--and", "{notes}"], "cannot be used"),
        (["search", "x", "--not", "x"], "cancel each other out"),
        (["search", "   "], "empty"),
        (["search", "x", "--cutoff", "2"], "outside [-1, 1]"),
        (["search", "x", "--sort", "size"], "Unknown sort"),
        (["search", "x", "--after", "2024-05-01", "--before", "2024-01-01"], "date range is empty"),
    ],
)
def test_bad_input_gets_one_sentence(indexed: tuple[Cli, Path], args: list[str], message: str) -> None:
    cli, root = indexed
    args = [a.replace("{notes}", str(root / "generated" / "notes.txt")) for a in args]
    result = cli(*args, expect=1)
    err = result.stderr  # type: ignore[attr-defined]
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_search_while_the_first_run_has_committed_nothing(cli: Cli) -> None:
    """An indexer holds the lock and has committed nothing: no results, exit 0, a notice on stderr."""
    from indexer.writer import LibraryWriter

    with LibraryWriter.open(cli.home):
        assert cli("search", "a cat", "--json") == []
        result = cli("search", "a cat")
        assert result.stdout == "No results.\n"  # type: ignore[attr-defined]
        assert "has not committed any image yet" in result.stderr  # type: ignore[attr-defined]
    cli("search", "a cat", expect=1)  # no indexer: the usual "run viewfinder index" error


def test_the_console_script_runs_a_combined_query(indexed: tuple[Cli, Path]) -> None:
    cli, root = indexed
    script = Path(sys.executable).with_name("viewfinder")
    argv = [str(script), "search", "a cat", "--not", "0.3:a dog", "--format", "PNG", "--group", "-k", "4", "--json", "--no-server", "--home", str(cli.home)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    assert 1 <= len(hits) <= 4 and all(h["format"] == "PNG" for h in hits)


def test_camera_columns_are_back_filled_without_re_embedding(cli: Cli, tmp_path: Path) -> None:
    """Rows written before the camera columns existed (meta_version NULL) are read again from the files."""
    import sqlite3

    folder = tmp_path / "cams"
    folder.mkdir()
    for i, (make, model) in enumerate([("Canon", "EOS R5"), ("NIKON CORPORATION", "Z 6")]):
        image = Image.new("RGB", (64, 48), (40 * i, 90, 200))
        exif = Image.Exif()
        exif[0x010F], exif[0x0110] = make, model
        image.save(folder / f"{i}.jpg", exif=exif)
    cli("index", str(folder), "--json")
    catalog = cli.home / "catalog.sqlite"
    with sqlite3.connect(catalog) as db:
        assert db.execute("select count(*) from files where camera_make is not null").fetchone() == (2,)
        db.execute("update files set camera_make = null, camera_model = null, meta_version = null")  # as 0001 left them
    vectors = {p.name: p.read_bytes() for p in cli.home.glob("vectors-*")}
    report = cli("index", str(folder), "--json")
    assert report["indexed"] == 0 and report["backfilled"] == 2  # type: ignore[index]
    assert {p.name: p.read_bytes() for p in cli.home.glob("vectors-*")} == vectors
    assert paths_of(cli("search", "x", "--camera", "nikon", "--json")) == [str(folder / "1.jpg")]
    assert cli("index", str(folder), "--json")["backfilled"] == 0  # type: ignore[index]


def test_the_pages_zip_holds_the_originals_and_stops_at_its_cap(indexed: tuple[Cli, Path], tmp_path: Path) -> None:
    """ui.export's ZIP of selected results (the page's "ZIP of N selected"): a valid archive whose files
    are the originals byte for byte, made chunk by chunk; a cap leaves the rest out and says which."""
    import io
    import zipfile
    from dataclasses import replace

    from search.library import Library
    from search.searcher import Searcher
    from ui.export import export_name, zip_selection, zip_stream

    cli, root = indexed
    library = Library.open(cli.home)
    hits = Searcher(library, lambda: pytest.fail("an indexed image needs no model")).similar(root / "photos" / "chelsea.png", k=6)
    chunks = list(zip_stream(hits))
    assert len(chunks) == len(hits) + 1  # one per file, then the central directory
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == [export_name(h) for h in hits]
        assert all(archive.read(export_name(h)) == Path(h.path).read_bytes() for h in hits)
    sizes = [h.record.size for h in hits]
    inside, left_out = zip_selection(hits, max_bytes=sum(sizes[:3]) + sizes[3] - 1)
    assert inside == hits[:3] and left_out == hits[3:]
    gone = tmp_path / "gone.png"
    shutil.copy(hits[0].path, gone)
    vanished = [replace(hits[0], record=replace(hits[0].record, path=str(gone))), *hits[1:3]]
    gone.unlink()  # a file deleted since it was found is left out, the archive stays valid
    with zipfile.ZipFile(io.BytesIO(b"".join(zip_stream(vanished)))) as archive:
        assert archive.testzip() is None and len(archive.namelist()) == 2
    library.close()
