"""What a new user sees: ``info`` after an interrupted first run says what is true (issue 8, item 16), and
the summary line's seconds count the whole command (item 17)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Cli
from streamlit.testing.v1 import AppTest
from test_kill import make_collection

from search.library import Library

VIEWFINDER = [sys.executable, "-c", "from ui.cli import main; main()"]


def run_index(root: Path, home: Path, model: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    argv = [*VIEWFINDER, "index", str(root), "--home", str(home), "--model", str(model), "--batch-size", "4", *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def test_info_after_a_killed_first_run(tmp_path: Path, tiny_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_collection(tmp_path / "photos", 12)
    home = tmp_path / "library"
    killed = run_index(root, home, tiny_clip, env={"VIEWFINDER_FAULT": "index.train"})  # 3 batches committed, no index
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    cli = Cli(home, tiny_clip)
    facts = cli("info", "--json")
    assert facts["images"] == 12 and facts["index"] is None and facts["pending"] == 12
    assert facts["last_indexed_at"] is None and facts["last_committed_at"]
    text = cli("info").stdout
    assert "never\n" not in text and "index: none" not in text
    assert re.search(r"index: pending: 12 committed images are searchable", text), text
    assert re.search(r"last indexed: never finished \(a run was interrupted, last batch committed \S+; 12 images committed\)", text), text
    monkeypatch.setenv("VIEWFINDER_DEVICE", "cpu")  # the web page's facts say the same
    monkeypatch.setattr(sys, "argv", ["app.py", "--home", str(home)])
    page = AppTest.from_file(str(Path(__file__).parents[1] / "ui" / "app.py"), default_timeout=120).run()
    assert not page.exception, [e.value for e in page.exception]
    sidebar = page.sidebar.markdown[0].value
    assert "Index: pending: 12 committed images are searchable" in sidebar and "Last indexed: never finished" in sidebar, sidebar
    lib = Library.open(home)  # what info says: all 12 are searchable
    try:
        assert len(lib.search_vector(lib.vector(int(lib.snapshot.live[0])), k=20)) == 12
    finally:
        lib.close()

    finished = cli("index", str(root), "--json")
    assert finished["indexed"] == 0 and finished["images"] == 12
    facts = cli("info", "--json")
    assert facts["pending"] == 0 and facts["index"]["kind"] == "flat" and facts["last_indexed_at"]
    text = cli("info").stdout
    assert "was interrupted" not in text and "pending" not in text and "not in it yet" not in text and "index: flat" in text

    make_collection(root, 4, start=100)  # a later run, interrupted after committing its batch
    assert run_index(root, home, tiny_clip, env={"VIEWFINDER_FAULT": "index.train"}).returncode == -signal.SIGKILL
    facts = cli("info", "--json")
    assert facts["images"] == 16 and facts["pending"] == 4 and facts["index"]["kind"] == "flat"
    text = cli("info").stdout
    assert "4 newer images not in it yet" in text and "(a later run was interrupted at " in text, text


def test_summary_seconds_count_the_whole_run(tmp_path: Path, tiny_clip: Path) -> None:
    """A run that finds nothing to do still spends seconds (imports, lock, walk, catalog): the summary
    counts them, so it is close to the wall-clock time of the command, never a fraction of it."""
    root = make_collection(tmp_path / "photos", 4)
    home = tmp_path / "library"
    assert run_index(root, home, tiny_clip).returncode == 0
    started = time.perf_counter()
    again = run_index(root, home, tiny_clip, "--json")
    wall = time.perf_counter() - started
    assert again.returncode == 0, again.stderr
    seconds = json.loads(again.stdout)["seconds"]
    assert 0.5 * wall <= seconds <= wall, (seconds, wall)  # outside it: only starting Python and importing Typer
