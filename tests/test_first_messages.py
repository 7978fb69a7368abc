"""What a new user is told when a command gets the wrong kind of path, or no library yet."""

from __future__ import annotations

from pathlib import Path

from conftest import Cli, write_image

from indexer.walk import walk


def test_similar_on_a_folder_says_it_is_a_folder(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    write_image(folder / "a.png", seed=1)
    result = cli("similar", str(folder), expect=2)
    assert "is a folder" in result.output and "No such image file" not in result.output


def test_doctor_on_a_missing_library_says_how_to_make_one(cli: Cli) -> None:
    result = cli("doctor", expect=1)
    assert f"viewfinder index FOLDER --home {cli.home}" in result.output
    report = cli("doctor", "--json", expect=1)
    assert "viewfinder index" in report.stdout


def test_a_non_image_named_to_index_is_reported(cli: Cli, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture\n")
    image = write_image(tmp_path / "a.png", seed=2)
    report = cli("index", str(notes), str(image), "--json")
    assert report["indexed"] == 1
    assert [(s["path"], "not an image" in s["reason"]) for s in report["skipped"]] == [(str(notes), True)]
    text = cli("index", str(notes))
    assert f"skipped {notes}: not an image" in text.output and "skipped 1" in text.output


def test_walk_lists_named_non_images_but_ignores_them_in_folders(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    write_image(tmp_path / "a.png", seed=3)
    assert walk([tmp_path]).not_images == []
    found = walk([tmp_path / "notes.txt", tmp_path / "a.png"])
    assert found.not_images == [str(tmp_path / "notes.txt")] and [f.path for f in found.files] == [str(tmp_path / "a.png")]
