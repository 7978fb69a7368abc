"""Files that are gone from disk can leave the library (issue 8, item 10): ``viewfinder forget PATH...``,
``forget --missing``, ``index`` on a deleted path that was indexed, and ``doctor`` saying they are gone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Cli, write_image


@pytest.fixture()
def setup(tmp_path: Path, tiny_clip: Path) -> tuple[Cli, Path, Path, Path]:
    """A folder of 5 images and 2 files indexed by themselves, from elsewhere."""
    root = tmp_path / "photos"
    for i in range(5):
        write_image(root / "trip" / f"{i}.png", seed=500 + i, size=(48, 40))
    lone = write_image(tmp_path / "desktop" / "photo.png", seed=510, size=(48, 40))
    other = write_image(tmp_path / "downloads" / "other.png", seed=511, size=(48, 40))
    cli = Cli(tmp_path / "library", tiny_clip)
    cli("index", str(root), "--json")
    cli("index", str(lone), "--json")
    assert cli("index", str(other), "--json")["images"] == 7
    return cli, root, lone, other


def similar_paths(cli: Cli, image: Path) -> set[str]:
    return {h["path"] for h in cli("similar", str(image), "--json", "-k", "20")}


def doctor_json(cli: Cli) -> dict:
    return cli("doctor", "--json")


def test_forget_a_deleted_file_indexed_by_itself(setup: tuple[Cli, Path, Path, Path]) -> None:
    cli, root, lone, _ = setup
    lone.unlink()
    assert str(lone) in similar_paths(cli, root / "trip" / "0.png")  # still comes back
    report = doctor_json(cli)
    gone = [f for f in report["findings"] if f["code"] == "files-gone"]
    assert report["healthy"] and report["facts"]["files_gone"] == 1 and len(gone) == 1
    assert gone[0]["severity"] == "note" and str(lone) in gone[0]["message"] and "1 of the 7 files" in gone[0]["message"]
    assert "viewfinder forget --missing" in gone[0]["message"] and gone[0]["repair"] is None
    text = cli("doctor").stdout
    assert "no longer on disk" in text and "viewfinder forget --missing" in text

    repaired = cli("doctor", "--repair", "--json")  # --repair does not delete rows on its own
    assert repaired["facts"]["files_gone"] == 1 and repaired["facts"]["indexed"] == 7

    out = cli("forget", str(lone), "--json")
    assert out["forgotten"] == 1 and out["paths"] == [str(lone)] and out["images"] == 6
    assert str(lone) not in similar_paths(cli, root / "trip" / "0.png")
    after = doctor_json(cli)
    assert after["findings"] == [] and after["facts"]["files_gone"] == 0
    assert after["facts"]["indexed"] == after["facts"]["index_vectors"] == 6  # the index follows


def test_forget_a_deleted_folder_and_what_cannot_be_forgotten(setup: tuple[Cli, Path, Path, Path]) -> None:
    cli, root, lone, other = setup
    shutil.rmtree(root / "trip")
    result = cli("forget", str(root / "trip"))
    assert "Forgot 5 files that are gone:" in result.stdout and "and 0 more" not in result.stdout
    assert "The library holds 2 images." in result.stdout
    still = cli("forget", str(other), expect=1)
    assert "still exists on disk" in still.stderr and "Traceback" not in still.output
    assert "holds nothing at" in cli("forget", str(root / "never-indexed.png"), expect=1).stderr
    assert cli("forget", expect=2).stderr.startswith("Error: Give the PATHs")
    assert "not both" in cli("forget", str(lone), "--missing", expect=2).stderr
    assert cli("info", "--json")["images"] == 2  # refusals change nothing


def test_forget_missing(setup: tuple[Cli, Path, Path, Path]) -> None:
    cli, root, lone, _ = setup
    assert "Nothing to forget" in cli("forget", "--missing").stdout
    lone.unlink()
    (root / "trip" / "3.png").unlink()
    out = cli("forget", "--missing", "--json")
    assert out["paths"] == sorted([str(lone), str(root / "trip" / "3.png")]) and out["images"] == 5
    assert doctor_json(cli)["facts"]["files_gone"] == 0


def test_index_on_a_deleted_path_that_was_indexed_removes_it(setup: tuple[Cli, Path, Path, Path]) -> None:
    cli, root, lone, _ = setup
    lone.unlink()
    result = cli("index", str(lone))  # was: refused, "No such file or folder"
    assert f"{lone} no longer exists: its 1 files were removed from the library" in result.stderr
    assert "removed 1," in result.stdout and "The library holds 6 images" in result.stdout
    shutil.rmtree(root)
    report = cli("index", str(root), "--json")
    assert report["gone"] == [{"path": str(root), "removed": 5}] and report["removed"] == 5 and report["images"] == 1
    assert report["unreadable_folders"] == []
    refused = cli("index", str(root / "nothing-here"), expect=2)
    assert "No such file or folder" in refused.stderr


def test_forget_through_the_console_script(setup: tuple[Cli, Path, Path, Path]) -> None:
    cli, _, lone, other = setup
    lone.unlink()
    other.unlink()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-c", "from ui.cli import main; main()", "forget", "--missing", "--home", str(cli.home), "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["forgotten"] == 2
    again = subprocess.run(argv[:-1], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert again.returncode == 0 and "Nothing to forget" in again.stdout
