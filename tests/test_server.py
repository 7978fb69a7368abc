"""``viewfinder serve`` as a user runs it: the real console script in a subprocess on a free port, over a
library built with the real CLI and the tiny random CLIP (so no ranking here means anything; only the
mechanics and exact-vector identities are asserted).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from conftest import DATA, Cli, write_image
from ui import serverfile
from ui.client import HOME_HEADER, UPLOAD_CAP, multipart
from ui.launch import MAX_UPLOAD_MB
from ui.server import MAX_UPLOAD_BYTES

SCRIPT = Path(sys.executable).with_name("viewfinder")
START_TIMEOUT = 180  # seconds: torch + the model on a loaded CI machine


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    info: serverfile.ServerInfo
    log: Path

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.info.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, payload: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        status, _, data = self.call(method, path, body, {"Content-Type": "application/json", **(headers or {})})
        return status, json.loads(data)

    def upload(self, path: str, files: dict[str, tuple[str, bytes]], fields: dict[str, str] | None = None) -> tuple[int, Any]:
        body, content_type = multipart(fields or {}, files)
        status, _, data = self.call("POST", path, body, {"Content-Type": content_type})
        return status, json.loads(data)

    def queries(self, token: str | None = None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return int(self.json("GET", "/health", headers=headers)[1]["queries"])


def start(home: Path, *args: str, env: dict[str, str] | None = None) -> Served:
    log = home.parent / f"serve-{time.monotonic_ns()}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(SCRIPT), "serve", "--home", str(home), "--port", "0", *args], stdout=fh, stderr=fh, env=env)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        info = serverfile.read(home)
        if info is not None and info.pid == proc.pid:
            return Served(proc, info, log)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the server did not start:\n{log.read_text()}")


def stop(served: Served) -> None:
    if served.proc.poll() is None:
        served.proc.kill()
        served.proc.wait(30)


def run_cli(*args: str, env: dict[str, str] | None = None, expect: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == expect, f"{args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc


def env_without_token() -> dict[str, str]:
    """The environment of every process here: no token, and the torch runtime (the server's mechanics are
    under test, not the choice of --backend auto, which may pick another runtime between two processes)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIEWFINDER_TOKEN", "VIEWFINDER_HOME")}
    return {**env, "VIEWFINDER_BACKEND": "torch"}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, tiny_clip: Path) -> tuple[Path, Path]:
    """(library home, photos folder): the sample photos indexed with the real CLI."""
    root = tmp_path_factory.mktemp("served")
    photos = root / "photos"
    shutil.copytree(DATA / "photos", photos)
    (root / "notes.txt").write_text("not an image")
    Cli(root / "library", tiny_clip)("index", str(photos), "--backend", "torch", "--json")
    return root / "library", photos


@pytest.fixture(scope="module")
def server(library: tuple[Path, Path]) -> Iterator[Served]:
    served = start(library[0], env=env_without_token())
    yield served
    stop(served)


def test_search_similar_by_path_and_by_upload(server: Served, library: tuple[Path, Path], tmp_path: Path) -> None:
    home, photos = library
    status, body = server.json("POST", "/search", {"text": "a horse", "k": 3})
    assert status == 200 and len(body["hits"]) == 3
    assert all(Path(hit["path"]).parent == photos for hit in body["hits"])

    horse = str(photos / "horse.png")
    status, body = server.json("POST", "/similar", {"path": horse, "k": 4})
    assert status == 200 and body["hits"][0]["path"] == horse and body["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3)

    # A copy that the library does not hold: uploaded, embedded by the server's model, its original first.
    status, body = server.upload("/similar", {"image": ("copy.png", (photos / "horse.png").read_bytes())}, {"k": "2"})
    assert status == 200 and body["hits"][0]["path"] == horse and body["hits"][0]["score"] > 0.999

    # The same file by a path the server does not hold is refused, never read from its disk.
    shutil.copy(photos / "horse.png", tmp_path / "elsewhere.png")
    status, body = server.json("POST", "/similar", {"path": str(tmp_path / "elsewhere.png")})
    assert status == 404 and "not an indexed image" in body["error"]

    status, info = server.json("GET", "/info")
    assert status == 200 and info["images"] == 6
    status, headers, _ = server.call("GET", "/openapi.json")
    assert status == 200 and headers[HOME_HEADER.lower()] == serverfile.library_id(home)
    assert server.call("GET", "/docs")[0] == 200


def test_a_full_query_with_options(server: Served, library: tuple[Path, Path]) -> None:
    """The body is ``Query.to_json()``: the options of the CLI travel whole (here k, offset and a glob filter)."""
    from search.query import Query, Term

    query = Query(terms=(Term(kind="text", value="a horse"),), k=2, offset=1)
    status, body = server.json("POST", "/search", {"query": query.to_json()})
    status_all, all_hits = server.json("POST", "/search", {"text": "a horse", "k": 3})
    assert status == status_all == 200
    assert [h["path"] for h in body["hits"]] == [h["path"] for h in all_hits["hits"][1:3]]
    status, body = server.json("POST", "/search", {"query": {"terms": []}})
    assert status == 400 and body["type"] == "QueryError" and "\n" not in body["error"]


def test_uploads_that_are_not_images_or_too_large_are_refused(server: Served, library: tuple[Path, Path], tmp_path: Path) -> None:
    status, body = server.upload("/similar", {"image": ("notes.txt", b"not an image at all, just words")})
    assert status == 415 and body["error"].startswith("The uploaded notes.txt cannot be used") and "\n" not in body["error"]

    # Over the byte cap: refused with 413 from the length alone (the body is not read).
    big = b"\xff\xd8" + bytes(MAX_UPLOAD_BYTES + 2**20)
    status, _, data = server.call("POST", "/similar", big, {"Content-Type": "application/octet-stream"})
    assert status == 413 and f"{MAX_UPLOAD_MB} MB" in json.loads(data)["error"]

    # The same without a length (chunked): cut off with 413 once the cap is passed.
    conn = http.client.HTTPConnection("127.0.0.1", server.info.port, timeout=120)
    chunks = (bytes(2**20) for _ in range(MAX_UPLOAD_MB + 2))
    try:
        conn.request("POST", "/similar", body=chunks, headers={"Content-Type": "application/octet-stream"}, encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 413 and f"{MAX_UPLOAD_MB} MB" in json.loads(response.read())["error"]
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed while the client was still sending: refused all the same
    finally:
        conn.close()
    assert server.json("GET", "/health")[0] == 200  # and it goes on serving

    # Over the pixel cap (64 MP) but tiny in bytes: refused from the header, before any pixel is decoded.
    huge = tmp_path / "huge.png"
    Image.new("1", (9000, 8000)).save(huge)
    assert huge.stat().st_size < 2**20
    status, body = server.upload("/similar", {"image": ("huge.png", huge.read_bytes())})
    assert status == 413 and "megapixels" in body["error"]
    assert UPLOAD_CAP == MAX_UPLOAD_BYTES  # the client sends in-process what the server would refuse


def test_thumbnails_only_of_indexed_files(server: Served, library: tuple[Path, Path], tmp_path: Path) -> None:
    home, photos = library
    status, headers, data = server.call("GET", f"/thumb?path={photos / 'horse.png'}&size=64")
    assert status == 200 and headers["content-type"] == "image/jpeg" and max(Image.open(__import__("io").BytesIO(data)).size) <= 64
    write_image(tmp_path / "not-indexed.png", seed=3)
    for path in ("/etc/passwd", str(tmp_path / "not-indexed.png"), f"{photos}/../photos/horse.png", str(home / "catalog.sqlite")):
        status, _, data = server.call("GET", f"/thumb?path={path}")
        assert status == 404, path
    assert server.call("GET", f"/thumb?path={photos / 'horse.png'}&size=100000")[0] == 422


def test_the_cli_answers_through_the_server(server: Served, library: tuple[Path, Path]) -> None:
    home, photos = library
    env = env_without_token()
    before = server.queries()
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(SCRIPT), "search", "a horse", "--home", str(home), "-k", "3", "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert server.queries() == before + 1  # the server answered it
    # The client path loads none of the heavy modules (that is what makes it fast).
    modules = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:") and line.count("|") == 2}
    assert not {m for m in modules if m.split(".")[0] in ("torch", "transformers", "faiss", "numpy", "sqlalchemy")}
    here = json.loads(run_cli("search", "a horse", "--home", str(home), "-k", "3", "--json", "--no-server", env=env).stdout)
    assert [h["path"] for h in json.loads(proc.stdout)] == [h["path"] for h in here]
    assert server.queries() == before + 1  # --no-server did not ask it

    # similar: an indexed image by path, a file the library does not hold by upload.
    out = json.loads(run_cli("similar", str(photos / "camera.png"), "--home", str(home), "-k", "2", "--json", env=env).stdout)
    assert out[0]["path"] == str(photos / "camera.png")
    assert server.queries() == before + 2
    err = run_cli("similar", str(photos.parent / "notes.txt"), "--home", str(home), env=env, expect=1).stderr
    assert err.startswith("Error: ") and "Traceback" not in err

    # --server URL names a server explicitly; one that is not there is an error, not a silent fallback.
    out = json.loads(run_cli("search", "a cat", "--home", str(home), "--server", server.info.url, "--json", "-k", "1", env=env).stdout)
    assert len(out) == 1 and server.queries() == before + 3
    err = run_cli("search", "a cat", "--home", str(home), "--server", "http://127.0.0.1:9", env=env, expect=1).stderr
    assert "did not answer" in err


def test_a_new_index_run_is_seen_without_a_restart(server: Served, library: tuple[Path, Path], tiny_clip: Path) -> None:
    home, photos = library
    extra = write_image(photos / "new" / "fresh.png", seed=11)
    Cli(home, tiny_clip)("index", str(photos), "--backend", "torch", "--json")
    status, body = server.json("POST", "/similar", {"path": str(extra), "k": 1})
    assert status == 200 and body["hits"][0]["path"] == str(extra)
    assert server.json("GET", "/info")[1]["images"] == 7


def test_eight_clients_for_three_seconds_without_an_error(server: Served, library: tuple[Path, Path]) -> None:
    """A short version of bench/serve_load.py (which reports QPS and p99): no request may fail."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from serve_load import hammer

    report = hammer(server.info.url, paths=[str(p) for p in sorted(library[1].glob("*.png"))], clients=8, seconds=3.0)
    assert report["errors"] == 0 and report["requests"] > 8


def another_library(library: tuple[Path, Path], tmp_path: Path) -> Path:
    """A copy of the module's library (the module's server keeps serving the original)."""
    home = tmp_path / "library"
    shutil.copytree(library[0], home, ignore=shutil.ignore_patterns(serverfile.SERVER_FILE))
    return home


def test_a_token_is_required_when_set_and_beyond_loopback(library: tuple[Path, Path], tmp_path: Path) -> None:
    home = another_library(library, tmp_path)
    refused = run_cli("serve", "--home", str(home), "--host", "0.0.0.0", "--port", "0", env=env_without_token(), expect=2)
    assert "--token" in refused.stderr and serverfile.read(home) is None

    served = start(home, "--token", "s3cret", env=env_without_token())
    try:
        assert served.info.token_required and "s3cret" not in serverfile.server_file(home).read_text()
        for path in ("/health", "/info", "/docs", "/openapi.json", f"/thumb?path={library[1] / 'horse.png'}"):
            assert served.call("GET", path)[0] == 401, path
            assert served.call("GET", path, headers={"Authorization": "Bearer wrong"})[0] == 401, path
        assert served.json("POST", "/search", {"text": "a horse"})[0] == 401
        assert served.json("GET", "/health", headers={"Authorization": "Bearer s3cret"})[0] == 200
        # The CLI holding the token uses it; one without it answers in-process (same results).
        before = served.queries("s3cret")
        image = str(library[1] / "chelsea.png")
        with_token = run_cli("similar", image, "--home", str(home), "--json", "-k", "3", env={**env_without_token(), "VIEWFINDER_TOKEN": "s3cret"})
        assert served.queries("s3cret") == before + 1
        without = run_cli("similar", image, "--home", str(home), "--json", "-k", "3", env=env_without_token())
        assert served.queries("s3cret") == before + 1
        assert json.loads(with_token.stdout) == json.loads(without.stdout)
    finally:
        stop(served)


def test_sigkill_then_the_cli_falls_back_and_a_new_server_replaces_the_stale_file(library: tuple[Path, Path], tmp_path: Path) -> None:
    home, photos = another_library(library, tmp_path), library[1]
    env = env_without_token()
    expected = json.loads(run_cli("similar", str(photos / "coffee.png"), "--home", str(home), "--no-server", "--json", "-k", "3", env=env).stdout)
    served = start(home, env=env)
    served.proc.send_signal(signal.SIGKILL)
    served.proc.wait(30)
    assert serverfile.read(home) is not None  # the killed server's file is left behind: stale
    out = run_cli("similar", str(photos / "coffee.png"), "--home", str(home), "--json", "-k", "3", env=env)
    assert json.loads(out.stdout) == expected

    again = start(home, env=env)  # replaces the stale file
    try:
        assert again.info.pid != served.info.pid
        again.proc.send_signal(signal.SIGTERM)
        assert again.proc.wait(60) == 0
        assert serverfile.read(home) is None  # a clean stop removes its file
        assert "Traceback" not in again.log.read_text()
    finally:
        stop(again)


def test_a_stale_file_is_ignored_whatever_made_it_stale(tmp_path: Path) -> None:
    """Its pid gone, or its pid alive (reused) but nothing of this library's behind its port."""
    import socket

    from ui.client import ask_server

    with socket.socket() as sock:  # a port that was free a moment ago and has nobody listening now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    for pid in (int(dead.stdout), os.getpid()):
        info = serverfile.ServerInfo(host="127.0.0.1", port=port, pid=pid, home=serverfile.library_id(tmp_path), token_required=False, started_at="")
        serverfile.write(tmp_path, info)
        assert serverfile.read(tmp_path) == info
        assert ask_server(tmp_path, None, False, lambda remote: remote.request("GET", "/health")) is None
    serverfile.remove(tmp_path, pid=os.getpid() + 1)  # not ours: left alone
    assert serverfile.read(tmp_path) is not None
    serverfile.remove(tmp_path, pid=os.getpid())
    assert not serverfile.server_file(tmp_path).exists()
    assert not list(tmp_path.glob(".server-*"))  # no temporary file left by the atomic writes


def test_a_query_mixing_an_indexed_image_and_a_file_uploads_only_the_file(server: Served, library: tuple[Path, Path], tmp_path: Path) -> None:
    from search.query import Query, Term
    from ui.client import Remote

    home, photos = library
    outside = shutil.copy(photos / "horse.png", tmp_path / "outside.png")
    query = Query(terms=(Term(kind="image", value=str(photos / "camera.png")), Term(kind="image", value=str(outside), weight=0.5)), k=3)
    status, body = server.json("POST", "/search", {"query": query.to_json()})
    assert status == 404 and body["terms"] == [1]
    before = server.queries()
    results = Remote(server.info.url, None, serverfile.library_id(home)).run(query, model=None)
    assert len(results.hits) == 3 and server.queries() == before + 1


def test_a_server_on_a_postgres_catalog_starts_and_sees_new_index_runs(postgres_catalog: str, tmp_path: Path, tiny_clip: Path) -> None:
    """The change watch reads the catalog where it is: a PostgreSQL library has no catalog.sqlite."""
    photos = tmp_path / "photos"
    shutil.copytree(DATA / "photos", photos)
    home = tmp_path / "library"
    Cli(home, tiny_clip)("index", str(photos), "--backend", "torch", "--json")
    assert not (home / "catalog.sqlite").exists()
    served = start(home, env=env_without_token())
    try:
        images = served.json("GET", "/info")[1]["images"]
        extra = write_image(photos / "new" / "fresh.png", seed=12)
        Cli(home, tiny_clip)("index", str(photos), "--backend", "torch", "--json")
        status, body = served.json("POST", "/similar", {"path": str(extra), "k": 1})
        assert status == 200 and body["hits"][0]["path"] == str(extra)
        assert served.json("GET", "/info")[1]["images"] == images + 1
        extra.unlink()
        Cli(home, tiny_clip)("forget", str(extra), "--json")
        assert served.json("GET", "/info")[1]["images"] == images  # a removal is a commit too
    finally:
        stop(served)
