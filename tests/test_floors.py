"""The dependency floors in pyproject.toml cover what the code uses. Each row names a feature, where the
code uses it, and the release that brought it; CI's floors job (.ci/floors) then installs exactly the
declared floors and runs part of the suite there.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from floors import PYPROJECT, floors, python_floor, version_tuple

ROOT = Path(__file__).resolve().parents[1]

# (package, release that brought it, what the code uses, file, text that shows the use)
NEEDS = [
    ("python", "3.11", "enum.StrEnum", "search/records.py", "from enum import StrEnum"),
    ("python", "3.11", "datetime.UTC", "indexer/writer.py", "from datetime import UTC"),
    ("python", "3.11", "tomllib", "tests/floors.py", "import tomllib"),
    ("torch", "2.5", "torch.OutOfMemoryError", "indexer/embed.py", "torch.OutOfMemoryError"),
    ("transformers", "4.56", "from_pretrained(dtype=...)", "search/encoder.py", "from_pretrained(model_id, dtype="),
    ("pillow", "11.3", "AVIF decoding (and EXIF sub-IFDs as tests/test_images.py reads them)", "search/formats.py", '"AVIF"'),
    ("streamlit", "1.45", "st.text_input(icon=...)", "ui/views.py", "icon="),
    ("streamlit", "1.53", "st.file_uploader(max_upload_size=...)", "ui/views.py", "max_upload_size="),
    ("typer", "0.26", "the help tests/test_help.py checks (argument help shown, no <type> labels)", "ui/clikit.py", "metavar="),
    ("rich", "13.8", "what typer 0.26 requires", "ui/clikit.py", "import typer"),
    ("fastapi", "0.100", "pydantic 2 models in request bodies", "ui/server.py", "model_validate_json"),
    ("uvicorn", "0.29", "a graceful stop that re-raises the signal (ui/cmd_serve.py exits 0 on it)", "ui/cmd_serve.py", "server.run(sockets=[sock])"),
    ("python-multipart", "0.0.18", "the form parser without CVE-2024-53981 (uploads to viewfinder serve)", "ui/server.py", "request.form("),
]


@pytest.mark.parametrize(("package", "release", "feature", "where", "marker"), NEEDS, ids=[f"{n[0]}-{n[2]}" for n in NEEDS])
def test_declared_floor_covers_what_the_code_uses(package: str, release: str, feature: str, where: str, marker: str) -> None:
    assert marker in (ROOT / where).read_text(encoding="utf-8"), f"{where} no longer uses {feature}: update NEEDS"
    declared = python_floor() if package == "python" else floors()[package]
    assert version_tuple(declared) >= version_tuple(release), f"{package}>={declared}, but {feature} needs {release}"


def test_every_runtime_dependency_has_a_floor() -> None:
    names = floors()
    assert len(names) == len(tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"])
    assert {"torch", "transformers", "faiss-cpu"} <= set(names)


def test_no_extra_installs_a_second_faiss() -> None:
    """faiss-cpu and faiss-gpu both install the module ``faiss``: an extra that adds one to the other
    leaves whichever unpacked last (README, GPU, says how to swap them)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    for extra, requirements in project.get("optional-dependencies", {}).items():
        assert not [r for r in requirements if r.lower().startswith("faiss")], f"[{extra}] adds a second faiss"
