"""Shared fixtures: a tiny random CLIP saved to disk, and a small real image collection."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import Engine
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


# --- the catalog on PostgreSQL (search/catalog_location.py) ------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _no_postgres(why: str) -> None:
    """Outside CI a machine without PostgreSQL skips these tests; in CI (CI=true, or .ci/run's
    VIEWFINDER_REQUIRE_POSTGRES=1) that is a failure."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("VIEWFINDER_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL tests cannot run in CI: {why}")
    pytest.skip(f"no PostgreSQL server: {why}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL server for the session (Debian's ``postgresql`` package): its own data folder,
    run as a non-root user (``nobody`` when the tests run as root), trust auth on 127.0.0.1 and a unix
    socket in the data folder, fsync off (a test server). Yields the base URL, without a database."""
    import socket
    import subprocess

    try:
        import psycopg  # noqa: F401
    except ImportError:
        _no_postgres("psycopg is not installed (pip install 'viewfinder[postgres]')")
    pg = _pg_bin()
    if pg is None:
        _no_postgres("initdb not found under /usr/lib/postgresql (apt-get install postgresql)")
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="viewfinder-pg-"))  # under /tmp: pytest's own folders are root's alone
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "nobody")
        os.chmod(folder, 0o700)
        as_user = ["runuser", "-u", "nobody", "--"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = folder / "data"
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200"
    try:
        subprocess.run([*as_user, str(pg / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"], check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, str(pg / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"], check=True, capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as err:
        _no_postgres(f"{err}: {getattr(err, 'stderr', b'') or ''}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(folder, ignore_errors=True)


_databases = iter(range(1, 1_000_000))


@pytest.fixture()
def postgres_catalog(postgres_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new empty database on the session's server, set as $VIEWFINDER_CATALOG_URL for the test."""
    import psycopg

    name = f"vf{next(_databases)}_{os.getpid()}"
    with psycopg.connect(postgres_server.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = f"{postgres_server}/{name}"
    monkeypatch.setenv("VIEWFINDER_CATALOG_URL", url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def catalog_backend(request: pytest.FixtureRequest) -> str:
    """Runs a test once on the default SQLite catalog and once on a PostgreSQL one."""
    if request.param == "postgres":
        request.getfixturevalue("postgres_catalog")
    return str(request.param)


def catalog_engine(home: Path) -> Engine:
    """An engine on ``home``'s catalog, whichever database holds it."""
    from search import catalog, catalog_location

    url = catalog_location.server_url(home)
    return catalog.connect(home / catalog.CATALOG_FILE) if url is None else catalog_location.connect_server(url)


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
