"""The catalog on a PostgreSQL server (search/catalog_location.py, indexer/pglock.py): the same library as
on SQLite, a remembered URL without its password, and one sentence for each bad setup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, Cli, n_images

from search.catalog_location import ENV, URL_FILE


def _search(cli: Cli, query: str) -> list[tuple[str, float]]:
    hits = cli("search", query, "--json", "-k", "5")
    return [(h["path"], round(h["score"], 4)) for h in hits]  # type: ignore[union-attr]


def test_same_files_same_results_on_sqlite_and_postgres(
    tmp_path: Path, tiny_clip: Path, collection: Path, postgres_catalog: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV)  # the URL goes in by --catalog, with a password the server does not need
    with_password = postgres_catalog.replace("postgres@", "postgres:s3cret@")
    pg, lite = Cli(tmp_path / "pg", tiny_clip), Cli(tmp_path / "lite", tiny_clip)
    report = pg("index", str(collection), "--catalog", with_password, "--json")
    lite("index", str(collection), "--json")
    assert report["indexed"] == n_images(collection)  # type: ignore[index]
    kept = (pg.home / URL_FILE).read_text()
    assert "s3cret" not in kept and kept.strip().endswith(postgres_catalog.rsplit("@", 1)[1])
    assert not (pg.home / "catalog.sqlite").exists() and (pg.home / "index-1.faiss").exists()
    for query in ("a photo of the moon", "a red car"):  # later commands find the catalog without --catalog
        assert _search(pg, query) == _search(lite, query)
    again = pg("index", str(collection), "--json")
    assert again["indexed"] == 0  # type: ignore[index]
    assert pg("info", "--json")["images"] == lite("info", "--json")["images"]  # type: ignore[index]


def test_a_url_other_than_the_remembered_one_is_refused(tmp_path: Path, cli: Cli, collection: Path, postgres_catalog: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cli("index", str(collection / "photos"))
    monkeypatch.setenv(ENV, postgres_catalog + "_other")
    result = cli("search", "a photo", expect=1)
    assert "keeps its catalog at" in result.stderr and "Traceback" not in result.output
    monkeypatch.delenv(ENV)
    lite = Cli(tmp_path / "lite", cli.model)
    lite("index", str(collection / "photos"))
    result = lite("index", str(collection / "photos"), "--catalog", postgres_catalog, expect=1)
    assert "catalog.sqlite" in result.stderr


@pytest.mark.parametrize(
    "url, says",
    [
        ("postgresql://postgres@127.0.0.1:1/nothing", "Connection refused"),
        ("not a url at all", "is not a database URL"),
    ],
)
def test_unreachable_or_bad_url_is_one_sentence(cli: Cli, collection: Path, url: str, says: str) -> None:
    result = cli("index", str(collection / "photos"), "--catalog", url, expect=1)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and says in lines[0]


def test_a_refused_login_is_one_sentence(cli: Cli, collection: Path, postgres_server: str) -> None:
    url = postgres_server.replace("postgres@", "nobody_here@") + "/postgres"
    result = cli("index", str(collection / "photos"), "--catalog", url, expect=1)
    assert result.stderr.count("\n") == 1 and 'role "nobody_here" does not exist' in result.stderr


def test_missing_driver_names_the_extra(tmp_path: Path, collection: Path, tiny_clip: Path) -> None:
    """A Python without psycopg (hidden from the import system in a real subprocess)."""
    code = "import sys; sys.modules['psycopg'] = None; from ui.cli import main; sys.argv = sys.argv[1:]; main()"
    argv = [sys.executable, "-c", code, "viewfinder", "index", str(collection / "photos"), "--home", str(tmp_path / "lib"),
            "--model", str(tiny_clip), "--catalog", "postgresql://u@127.0.0.1/db"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (
        "Error: The catalog postgresql+psycopg://u@127.0.0.1/db is on PostgreSQL, which needs the psycopg driver: "
        "pip install 'viewfinder[postgres]'."
    )
