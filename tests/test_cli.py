"""End to end through the real CLI: index -> search -> similar -> info, and every incremental case."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Cli, n_images, write_image


def test_index_search_similar_info(cli: Cli, collection: Path) -> None:
    report = cli("index", str(collection), "--json")
    expected = n_images(collection)
    assert report["indexed"] == expected
    assert report["unchanged"] == report["reused"] == report["removed"] == 0
    assert report["images"] == expected
    assert [s["path"] for s in report["skipped"]] == [str(collection / "generated" / "broken.jpg")]
    assert report["skipped"][0]["reason"]
    assert report["index"]["kind"] == "flat"

    hits = cli("search", "a cat on a sofa", "--json", "-k", "5")
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert {"path", "score", "width", "height", "format", "content_hash", "faiss_id"} <= set(hits[0])
    assert all(Path(h["path"]).is_file() for h in hits)

    for name in ("photos/chelsea.png", "generated/Ünïcödé 写真.png", "generated/no_extension"):
        hits = cli("similar", str(collection / name), "--json", "-k", "3")
        assert hits[0]["path"] == str(collection / name)
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
        assert len(hits) == 3

    info = cli("info", "--json")
    assert info["images"] == expected and info["skipped"] == 1
    assert info["model"] == str(cli.model.resolve()) and info["dim"] == 32
    assert info["index"]["kind"] == "flat"
    assert info["bytes_on_disk"]["total"] > 0 and "catalog.sqlite" in info["bytes_on_disk"]


def test_ivfpq_end_to_end(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The approximate path through the real CLI: a small collection with the flat threshold lowered."""
    root = tmp_path / "many"
    for i in range(120):
        write_image(root / f"{i:03d}.png", seed=1000 + i, size=(48, 40))
    monkeypatch.setenv("VIEWFINDER_FLAT_BELOW", "50")
    report = cli("index", str(root), "--json")
    assert report["index"]["kind"] == "ivfpq" and report["index"]["trained_on"] == 120
    assert cli("info", "--json")["index"]["kind"] == "ivfpq"
    for i in (0, 57, 119):
        hits = cli("similar", str(root / f"{i:03d}.png"), "--json", "-k", "5")
        assert hits[0]["path"] == str(root / f"{i:03d}.png") and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
        assert len(hits) == 5
    (root / "057.png").unlink()
    assert cli("index", str(root), "--json")["removed"] == 1
    assert str(root / "057.png") not in {h["path"] for h in cli("search", "x", "--json", "-k", "200")}


def test_content_not_extension_decides(cli: Cli, collection: Path) -> None:
    cli("index", str(collection))
    paths = {h["path"]: h for h in cli("search", "anything", "--json", "-k", "100")}
    gen = collection / "generated"
    assert paths[str(gen / "really-a-png.jpg")]["format"] == "PNG"
    assert paths[str(gen / "no_extension")]["format"] == "JPEG"
    assert str(gen / "UPPER.JPG") in paths
    assert str(gen / "notes.txt") not in paths


def test_rerun_embeds_nothing(cli: Cli, collection: Path) -> None:
    first = cli("index", str(collection), "--json")
    index_files = sorted(p.name for p in cli.home.glob("index-*.faiss"))
    again = cli("index", str(collection), "--json")
    assert sorted(p.name for p in cli.home.glob("index-*.faiss")) == index_files  # not rewritten
    assert again["indexed"] == again["reused"] == again["removed"] == 0
    assert again["unchanged"] == first["indexed"] + len(first["skipped"])
    assert again["skipped"] == []  # a broken file is not retried until it changes


def test_modified_renamed_duplicated_deleted(cli: Cli, collection: Path) -> None:
    cli("index", str(collection))
    gen = collection / "generated"
    write_image(gen / "UPPER.JPG", seed=99, fmt="JPEG")  # modified content
    os.utime(gen / "UPPER.JPG", ns=(time.time_ns(), time.time_ns() + 10**9))
    (collection / "photos" / "coffee.png").rename(collection / "photos" / "espresso.png")  # renamed
    shutil.copy(collection / "photos" / "horse.png", collection / "space" / "horse copy.png")  # duplicate
    (collection / "space" / "rocket.jpg").unlink()  # deleted
    report = cli("index", str(collection), "--json")
    assert report["indexed"] == 1  # only the modified file runs through the model
    assert report["reused"] == 2  # rename + duplicate reuse stored vectors
    assert report["removed"] == 2  # coffee.png (renamed away) and rocket.jpg
    hits = cli("search", "x", "--json", "-k", "100")
    paths = {h["path"] for h in hits}
    assert str(collection / "space" / "rocket.jpg") not in paths
    assert str(collection / "photos" / "coffee.png") not in paths
    assert {str(collection / "photos" / "espresso.png"), str(collection / "space" / "horse copy.png")} <= paths
    assert len(hits) == n_images(collection)
    for name in ("photos/espresso.png", "space/horse copy.png", "generated/UPPER.JPG"):
        top = cli("similar", str(collection / name), "--json", "-k", "2")
        assert top[0]["score"] == pytest.approx(1.0, abs=1e-3)
    dup = cli("similar", str(collection / "photos" / "horse.png"), "--json", "-k", "2")
    assert {h["path"] for h in dup} == {str(collection / "photos" / "horse.png"), str(collection / "space" / "horse copy.png")}
    assert dup[1]["score"] == pytest.approx(1.0, abs=1e-3)


def test_fixed_broken_file_gets_indexed(cli: Cli, collection: Path) -> None:
    cli("index", str(collection))
    write_image(collection / "generated" / "broken.jpg", seed=7, fmt="JPEG")
    report = cli("index", str(collection), "--json")
    assert report["indexed"] == 1 and report["skipped"] == []
    assert cli("info", "--json")["skipped"] == 0


def test_index_two_roots_separately_keeps_both(cli: Cli, collection: Path) -> None:
    cli("index", str(collection / "photos"))
    cli("index", str(collection / "space"))  # must not remove photos/ entries: they are not under this root
    assert cli("info", "--json")["images"] == len(list((collection / "photos").iterdir())) + 2


def test_similar_with_unindexed_image(cli: Cli, collection: Path, tmp_path: Path) -> None:
    cli("index", str(collection))
    outside = write_image(tmp_path / "outside.png", seed=42)
    hits = cli("similar", str(outside), "--json", "-k", "3")
    assert len(hits) == 3 and all(h["score"] < 0.9999 or h["path"] != str(outside) for h in hits)


def test_model_mismatch_refused(cli: Cli, collection: Path, other_clip: Path) -> None:
    cli("index", str(collection / "photos"))
    cli.model = other_clip
    result = cli("index", str(collection / "space"), expect=1)
    assert "was built with the model" in result.stderr and "Traceback" not in result.output
    result = cli("search", "cat", expect=1)
    assert "was built with the model" in result.stderr


def test_model_that_cannot_load(cli: Cli, collection: Path, tmp_path: Path, tiny_clip: Path) -> None:
    cli.model = tmp_path / "no-such-model"
    result = cli("index", str(collection), expect=1)
    assert result.stderr.count("\n") == 1 and "--model" in result.stderr and "Traceback" not in result.output
    cli.model = "nobody/no-such-clip"
    result = cli("index", str(collection), expect=1)
    assert "Could not load the model 'nobody/no-such-clip'" in result.stderr and "--model" in result.stderr
    cli.model = tiny_clip  # the failed runs recorded no model: a good one is accepted
    assert cli("index", str(collection), "--json")["indexed"] == n_images(collection)


def test_errors_are_one_sentence(cli: Cli, tmp_path: Path) -> None:
    result = cli("search", "cat", expect=1)
    assert "no Viewfinder library" in result.stderr and "viewfinder index" in result.stderr
    result = cli("info", expect=1)
    assert "no Viewfinder library" in result.stderr
    result = cli("index", str(tmp_path / "missing"), expect=2)
    assert "No such file or folder" in result.stderr


def test_empty_text_and_empty_library(cli: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    report = cli("index", str(empty), "--json")
    assert report["indexed"] == 0 and report["index"] is None
    result = cli("search", "cat", expect=1)
    assert "no indexed images" in result.stderr


def test_console_script_subprocess(tmp_path: Path, tiny_clip: Path, collection: Path) -> None:
    exe = Path(sys.executable).parent / "viewfinder"
    assert exe.exists(), "the package must be installed (pip install -e .) so the console script exists"
    home = tmp_path / "lib"
    env = {**os.environ, "VIEWFINDER_HOME": str(home)}
    run = lambda *a: subprocess.run([str(exe), *a], capture_output=True, text=True, env=env, timeout=300)  # noqa: E731
    done = run("index", str(collection), "--model", str(tiny_clip))
    assert done.returncode == 0, done.stderr
    assert f"The library holds {n_images(collection)} images" in done.stdout
    files = sorted(p.name for p in home.iterdir())
    found = run("similar", str(collection / "photos" / "astronaut.png"), "-k", "2")
    assert found.returncode == 0, found.stderr
    first = found.stdout.splitlines()[0].split()
    assert first[0] == "1" and float(first[1]) == pytest.approx(1.0, abs=1e-3)
    assert first[2].endswith("astronaut.png")
    text = run("search", "a photo", "-k", "3", "--json")
    assert text.returncode == 0 and len(json.loads(text.stdout)) == 3, text.stderr
    # Both ended without the interpreter's teardown (ui.clikit.exit_now): all output is there, and the
    # catalog was closed first (an unclosed SQLite connection would leave catalog.sqlite-wal behind).
    assert sorted(p.name for p in home.iterdir()) == files
    assert run("search", "").returncode == 1
