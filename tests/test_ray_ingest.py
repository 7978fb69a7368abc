"""``index --ray`` on a local Ray cluster of 2 CPUs: the same library as the local path, and a Ray worker
killed with kill -9 mid-run costs a retry, never a lost or doubled row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from test_kill import check_complete, corpus_files, make_collection, resume

from indexer.writer import LibraryWriter
from search.catalog import FileRow
from search.encoder import Encoder
from search.library import Library

ray = pytest.importorskip("ray", reason="pip install 'viewfinder[ray]'")
if os.environ.get("CI", "").lower() == "true":
    import ray  # noqa: F811 - in CI a missing Ray is a failure, not a skip

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _rows(home: Path) -> dict[str, tuple[str, np.ndarray | None]]:
    lib = Library.open(home)
    try:
        with Session(lib.engine) as session:
            rows = list(session.scalars(select(FileRow)))
        return {r.path: (r.status, lib.vector(r.faiss_id) if r.faiss_id is not None else None) for r in rows}
    finally:
        lib.close()


def _run_ray(home: Path, root: Path, tiny_clip: Path, **kw: object) -> object:
    from indexer.ray_ingest import index_paths_ray

    with LibraryWriter.open(home) as writer:
        return index_paths_ray([root], writer, partial(Encoder.load, str(tiny_clip), backend="torch"), address="auto",
                               model_id=str(tiny_clip), batch_size=8, flat_below=50, **kw)  # fmt: skip


def test_ray_builds_the_library_the_local_path_builds(local_ray: None, tmp_path: Path, tiny_clip: Path) -> None:
    root = make_collection(tmp_path / "photos", 40)
    (root / "d0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00junk" * 30)
    local, distributed = tmp_path / "local", tmp_path / "ray"
    resume(local, root, Encoder.load(str(tiny_clip), "cpu"))
    from indexer.ray_ingest import RayTimings

    timings = RayTimings()
    _run_ray(distributed, root, tiny_clip, timings=timings)
    assert timings.actors == 2 and timings.ready_s > 0 and timings.first_batch_s > 0  # what bench/ingest.py --ray reports
    assert min(timings.model_load_s, timings.load_s, timings.embed_s, timings.commit_s, timings.plan_s) > 0
    a, b = _rows(local), _rows(distributed)
    assert a.keys() == b.keys() and {p: s for p, (s, _) in a.items()} == {p: s for p, (s, _) in b.items()}
    for path, (_, vec) in a.items():
        if vec is not None:
            np.testing.assert_allclose(b[path][1], vec, atol=2e-3)  # float16 rounding of the stored rows
    corpus = corpus_files(root)
    check_complete(distributed, corpus.images, corpus.broken)
    directions = [np.array(Library.open(home).snapshot.meta["modality_direction"]) for home in (local, distributed)]
    assert float(directions[0] @ directions[1]) > 0.99  # the self-check's text-like queries, learnt on a Ray worker too


def _map_workers() -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "ray::" in line and "Map" in line]


def test_a_killed_ray_worker_costs_a_retry(local_ray: None, tmp_path: Path, tiny_clip: Path) -> None:
    root = make_collection(tmp_path / "photos", 120)
    home = tmp_path / "ray"
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            vectors = home / "vectors-1.f16"  # read from the file system: Alembic's set-up is not thread-safe
            committed = vectors.exists() and vectors.stat().st_size > 0
            workers = _map_workers()
            if workers and committed:  # mid-run: some batches committed, more to come
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    _run_ray(home, root, tiny_clip)
    thread.join()
    assert killed, "no Ray worker was seen mid-run"
    corpus = corpus_files(root)
    check_complete(home, corpus.images, corpus.broken)  # one row per file, each its own vector, nothing lost


def test_an_address_that_does_not_answer_is_one_sentence(tmp_path: Path) -> None:
    """In a process of its own: this one may already be connected to the tests' local cluster."""
    probe = "from indexer.ray_ingest import RayUnavailable, connect\ntry:\n    connect('127.0.0.1:1')\nexcept RayUnavailable as err:\n    print(err)\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert "does not answer" in out.stdout and len(out.stdout.strip().splitlines()) == 1
