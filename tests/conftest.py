"""Shared fixtures: a tiny random CLIP saved to disk, and a small real image collection."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_clip  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
# The model runs in torch unless a test asks for another backend (tests/test_backend_onnx.py tests
# --backend onnx, openvino and auto): auto would export every test library's model to ONNX first.
os.environ.setdefault("VIEWFINDER_BACKEND", "torch")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # FAISS builds 20x faster on a busy 2-core box (no spinning)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"), seed=0)


@pytest.fixture(scope="session")
def other_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model (different weights and dimension) for mismatch tests."""
    return build_tiny_clip(tmp_path_factory.mktemp("other-clip"), seed=1, projection_dim=24)


SEMANTIC_MODEL = Path(__file__).parent / "data" / "fashion-clip"  # tests/semantic/train_clip.py rebuilds it
SEMANTIC_IMAGES = Path(__file__).parent / "data" / "fashion-heldout"  # <class>/<nn>.png, never trained on


@pytest.fixture(scope="session")
def semantic_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CLIP trained on Fashion-MNIST (a copy of tests/data/fashion-clip): the model with meaning."""
    return Path(shutil.copytree(SEMANTIC_MODEL, tmp_path_factory.mktemp("semantic") / "fashion-clip"))


@pytest.fixture(scope="session")
def semantic_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Held-out Fashion-MNIST test images, 40 per class in folders named by class (``sneaker/07.png``).
    Shared by the session: a test that moves, deletes or adds files works on its own copy."""
    return Path(shutil.copytree(SEMANTIC_IMAGES, tmp_path_factory.mktemp("semantic-images") / "fashion"))


def write_image(path: Path, seed: int, size: tuple[int, int] = (96, 72), fmt: str | None = None) -> Path:
    """A seeded, structured image (smooth gradients + blocks) so different seeds embed differently."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.uniform(0, 255, 3)
    freq = rng.uniform(0.02, 0.2, 3)
    arr = np.stack([(base[c] + 100 * np.sin(freq[c] * (xx + yy * (c + 1)))) % 256 for c in range(3)], axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path, format=fmt)
    return path


@pytest.fixture()
def collection(tmp_path: Path) -> Path:
    """Real photos from data/ plus generated edge cases: a broken JPEG, a non-image, a unicode name,
    upper-case extension, PNG data named .jpg, an extension-less JPEG."""
    root = tmp_path / "photos"
    for sub in ("photos", "space"):
        shutil.copytree(DATA / sub, root / sub)
    write_image(root / "generated" / "Ünïcödé 写真.png", seed=1)
    write_image(root / "generated" / "UPPER.JPG", seed=2, fmt="JPEG")
    write_image(root / "generated" / "really-a-png.jpg", seed=3, fmt="PNG")
    write_image(root / "generated" / "no_extension", seed=4, fmt="JPEG")
    (root / "generated" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 20)
    (root / "generated" / "notes.txt").write_text("not an image")
    return root


def n_images(root: Path) -> int:
    """Images in ``collection`` that decode (everything but broken.jpg and notes.txt)."""
    return sum(1 for p in root.rglob("*") if p.is_file() and p.name not in ("broken.jpg", "notes.txt"))


class Cli:
    """The real Typer app through CliRunner, with --json output parsed."""

    def __init__(self, home: Path, model: Path) -> None:
        self.home, self.model = home, model
        self.runner = CliRunner()

    def __call__(self, *args: str, model: bool = True, expect: int = 0) -> object:
        from ui.cli import app

        argv = [*args, "--home", str(self.home)]
        if model and args[0] in ("index", "search", "similar"):
            argv += ["--model", str(self.model)]
        result = self.runner.invoke(app, argv)
        assert result.exit_code == expect, f"{argv} -> {result.exit_code}\n{result.output}\n{result.stderr if result.stderr_bytes else ''}"
        if "--json" in args and expect == 0:
            return json.loads(result.stdout)
        return result


@pytest.fixture()
def cli(tmp_path: Path, tiny_clip: Path) -> Cli:
    return Cli(tmp_path / "library", tiny_clip)
