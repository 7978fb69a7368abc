"""Commands that need no model never import torch or transformers (issue 11: a cold ``info`` or
``similar INDEXED`` is import time, nothing else).

Each case runs the installed console script in a fresh process under ``python -X importtime`` and reads
the modules it imported from that report, so an import added anywhere on the path shows up here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from search.schema import head_from_files, head_revision

SCRIPT = Path(sys.executable).with_name("viewfinder")
HEAVY = ("torch", "transformers")


def imported_modules(stderr: str) -> set[str]:
    """Module names from a ``-X importtime`` report (``import time: self | cumulative | name``)."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":
                names.add(name)
    return names


def run_cold(*args: str, expect: int = 0) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(SCRIPT), *args],
        capture_output=True, text=True, timeout=120, env={**_env(), "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == expect, f"{args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc, imported_modules(proc.stderr)


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "VIEWFINDER_HOME"}


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


@pytest.fixture()
def library(cli, collection: Path) -> Path:
    cli("index", str(collection), "--json")
    return cli.home


def test_importtime_parser_sees_torch_when_it_is_imported() -> None:
    """The guard can fail: the same parser finds torch in a process that imports it."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import torch"], capture_output=True, text=True, timeout=120)
    assert "torch" in imported_modules(proc.stderr)


def test_info_and_doctor_import_no_model_code(library: Path) -> None:
    proc, modules = run_cold("info", "--home", str(library), "--json")
    assert json.loads(proc.stdout)["images"] > 0
    assert heavy(modules) == []
    assert "streamlit" not in modules
    _, modules = run_cold("doctor", "--home", str(library))
    assert heavy(modules) == []


def test_similar_on_an_indexed_image_imports_no_model_code(library: Path, collection: Path) -> None:
    image = collection / "photos" / "horse.png"
    proc, modules = run_cold("similar", str(image), "--home", str(library), "--json", "--no-server", "-k", "3")
    hits = json.loads(proc.stdout)
    assert hits[0]["path"] == str(image) and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert heavy(modules) == []


def test_error_paths_before_the_model_import_no_model_code(library: Path, collection: Path, tmp_path: Path) -> None:
    proc, modules = run_cold("similar", str(collection / "generated" / "notes.txt"), "--home", str(library), "--no-server", expect=1)
    assert "not an image" in proc.stderr and "Traceback" not in proc.stderr
    assert heavy(modules) == []
    proc, modules = run_cold("search", "a horse", "--home", str(tmp_path / "nowhere"), "--no-server", expect=1)
    assert "no Viewfinder library" in proc.stderr
    assert heavy(modules) == []


def test_a_text_search_in_process_opens_no_exported_runtime(library: Path) -> None:
    """The torch model is loaded for a text query in any case; under ``--backend auto`` (the default) the
    CLI's own process runs it instead of opening ONNX Runtime or OpenVINO beside it, even where the index
    run exported the model (``search.backends.for_one_query``)."""
    proc, modules = run_cold("search", "a horse", "--home", str(library), "--no-server", "--json", "-k", "3")
    assert len(json.loads(proc.stdout)) == 3
    roots = {m.split(".")[0] for m in modules}
    assert "torch" in roots and not roots & {"onnxruntime", "openvino"}


def test_schema_head_from_files_agrees_with_alembic() -> None:
    """``migrate``'s fast path (no Alembic import) must name the same head as Alembic itself."""
    assert head_from_files() == head_revision()
