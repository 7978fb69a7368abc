"""`make demo` as a new user runs it: one library per model, a hint that speaks `make` when the model
cannot be had, and no progress bars from building the tiny model.

The make runs use a stand-in venv folder (links to this interpreter and console script, with its
``.installed`` stamp fresh) so the ``setup`` step is satisfied and nothing is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _make(*args: str, venv: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        ["make", "-s", "-C", str(cwd), *args, f"VENV={venv}"], capture_output=True, text=True, env=env, timeout=600, check=False
    )


@pytest.fixture()
def venv(tmp_path: Path) -> Path:
    """A venv folder whose python and viewfinder are this test run's, with setup already done."""
    folder = tmp_path / "venv"
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").symlink_to(sys.executable)
    (folder / "bin" / "viewfinder").symlink_to(Path(sys.executable).parent / "viewfinder")
    (folder / ".installed").touch()
    os.utime(folder / ".installed", (4_000_000_000, 4_000_000_000))  # newer than pyproject.toml
    return folder


def _homes(dry_run: str) -> set[str]:
    return {word for line in dry_run.splitlines() for word in line.split() if "/library" in word}


def test_each_model_gets_its_own_demo_library(venv: Path, tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    tiny = _make("-n", "demo", "MODEL=tiny", f"DEMO_HOME={demo}", venv=venv)
    real = _make("-n", "demo", f"DEMO_HOME={demo}", venv=venv)
    local = _make("-n", "demo", "MODEL=/models/clip-vit-base-patch32/", f"DEMO_HOME={demo}", venv=venv)
    assert tiny.returncode == real.returncode == local.returncode == 0, tiny.stderr + real.stderr
    assert _homes(tiny.stdout) == {f"{demo}/library-tiny"}
    assert _homes(real.stdout) == {f"{demo}/library-openai-clip-vit-base-patch32"}
    assert _homes(local.stdout) == {f"{demo}/library-models-clip-vit-base-patch32"}


def test_a_model_that_cannot_be_had_gets_a_make_hint(venv: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    run = _make("demo", f"MODEL={missing}", f"DEMO_HOME={tmp_path / 'demo'}", venv=venv)
    assert run.returncode != 0
    assert "Error:" in run.stderr and "Traceback" not in run.stderr  # the library's own message first
    assert "make demo MODEL=" in run.stderr  # then the hint for a make user
    assert not (tmp_path / "demo" / "library").exists()


def test_building_the_tiny_model_prints_no_progress_bars(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "tiny_model.py"), str(tmp_path / "tiny")],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "Writing model shards" not in run.stderr and "it/s" not in run.stderr, run.stderr
    assert (tmp_path / "tiny" / "config.json").is_file()
