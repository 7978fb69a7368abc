"""The on-disk IVF-PQ (``search.ondisk``, built by ``indexer.shards``) through the real writer and library:
as good as the in-memory index from the same training, mapped rather than read on open, kept up to date by
adds and removals, and a kill at any step of its build leaves a library that opens and a re-run that
finishes. Small n with a small ``ondisk_above`` so each test takes seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
from test_ann import clustered

from indexer.doctor import examine
from indexer.writer import LibraryWriter, utcnow
from search import ann, ondisk
from search.library import Library
from search.records import ImageRecord, Status

ROOT = Path(__file__).resolve().parents[1]
FLAT_BELOW = 1000
ONDISK_ABOVE = 2000
N, DIM = 6000, 32
HEALTHY = {"files-gone", "recall-not-measured"}  # the rows are made up; the builds here skip the self-check


def records(start: int, count: int) -> list[ImageRecord]:
    return [ImageRecord(path=f"/img/{i}.jpg", size=1, mtime_ns=1, status=Status.INDEXED, indexed_at=utcnow()) for i in range(start, start + count)]


def fill(home: Path, vectors: np.ndarray, start: int = 0) -> None:
    with LibraryWriter.open(home) as writer:
        writer.bind("test-model", vectors.shape[1])
        writer.commit(records(start, len(vectors)), vectors, [])


def finish(home: Path, *, check: bool = False) -> None:
    with LibraryWriter.open(home, ondisk_above=ONDISK_ABOVE) as writer:
        writer.finish(flat_below=FLAT_BELOW, check=check)


def remove(home: Path, ids: list[int]) -> None:
    with LibraryWriter.open(home, ondisk_above=ONDISK_ABOVE) as writer:
        writer.remove([f"/img/{i}.jpg" for i in ids])


def meta(home: Path) -> dict:
    lib = Library.open(home)
    try:
        return dict(lib.snapshot.meta)
    finally:
        lib.close()


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered(N + 2000, DIM, seed=11)


@pytest.fixture()
def built(tmp_path: Path, vectors: np.ndarray) -> Path:
    fill(tmp_path, vectors[:N])
    finish(tmp_path)
    return tmp_path


def test_the_rule() -> None:
    assert not ann.choose_index_params(ann.ONDISK_ABOVE - 1, 512).ondisk
    assert ann.choose_index_params(ann.ONDISK_ABOVE, 512).ondisk
    assert not ann.choose_index_params(30_000, 512, ondisk_above=10).ondisk  # exact stays exact
    on = ann.choose_index_params(3000, 32, flat_below=1000, ondisk_above=2000)
    assert not ann.needs_rebuild(on, 1700, 32, flat_below=1000, ondisk_above=2000)  # hysteresis
    assert ann.needs_rebuild(on, 1500, 32, flat_below=1000, ondisk_above=2000)  # back to in-memory lists
    off = ann.choose_index_params(1900, 32, flat_below=1000, ondisk_above=2000)
    assert not off.ondisk and ann.needs_rebuild(off, 2000, 32, flat_below=1000, ondisk_above=2000)
    live = np.arange(1000)
    assert not ann.delta_due(1000, 1000, live)
    assert not ann.delta_due(1000, 1000, np.arange(1100))  # 100 added: exactly the share
    assert ann.delta_due(1000, 1000, np.arange(1101))
    assert ann.delta_due(1000, 1000, np.concatenate([np.arange(60, 1000), np.arange(1000, 1041)]))  # 60 gone + 41 added


def recall_at_10(index: faiss.Index, params, vectors: np.ndarray, queries: np.ndarray) -> float:
    stored = vectors.astype(np.float16)
    allowed = np.ones(len(vectors), dtype=bool)
    truth = np.argsort(-(queries @ stored.astype(np.float32).T), axis=1)[:, :10]
    got = [ann.rerank(q[None], ann.candidates(index, params, q[None], ann.rerank_depth(params, 10)), stored, allowed, 10)[0] for q in queries]
    return float(np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth, strict=True)]))


def test_as_good_as_the_in_memory_index_from_the_same_training(built: Path, vectors: np.ndarray) -> None:
    lib = Library.open(built)
    params = lib.index_params()
    assert params.kind == "ivfpq" and params.ondisk
    base = ondisk.read_base(built / ondisk.base_of(lib.snapshot.meta).name, DIM)
    in_memory = ondisk.empty_delta(base)  # same centroids and codebooks, every vector added by exact assignment
    ann.add_vectors(in_memory, lib.vectors, lib.snapshot.live)
    rng = np.random.default_rng(5)
    queries = vectors[rng.choice(N, 200, replace=False)] + 0.2 * rng.normal(size=(200, DIM)).astype(np.float32)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    on, mem = recall_at_10(lib.index, params, vectors[:N], queries), recall_at_10(in_memory, params, vectors[:N], queries)
    assert on >= mem - 0.005 and on >= 0.95, (on, mem)
    hits = lib.search_vector(vectors[17], k=10)
    assert hits[0].path == "/img/17.jpg" and hits[0].score == pytest.approx(1.0, abs=2e-3)


def test_opening_maps_the_lists_instead_of_reading_them(built: Path) -> None:
    m = meta(built)
    base = ondisk.base_of(m)
    assert base is not None and base.count == N
    data = built / base.data_name
    assert sorted(p.name for p in built.iterdir() if p.name.startswith("index-")) == sorted(ondisk.index_files(m))
    lib = Library.open(built)
    read_before = int(Path("/proc/self/io").read_text().split("rchar:")[1].split()[0])
    index = lib.index
    read = int(Path("/proc/self/io").read_text().split("rchar:")[1].split()[0]) - read_before
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index.referenced_objects[0]).invlists)  # the base's
    assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.read_only
    assert str(data) in Path("/proc/self/maps").read_text()  # mapped ...
    assert read < data.stat().st_size + (built / m["index_file"]).stat().st_size + (built / base.name).stat().st_size
    assert read < data.stat().st_size + 300_000  # ... not read: the header and delta are all that is read
    assert index.ntotal == N
    lib.close()


def test_adds_and_removals_are_searched_and_a_large_delta_rebuilds(built: Path, vectors: np.ndarray) -> None:
    first = ondisk.base_of(meta(built))
    assert first is not None
    data = built / first.data_name
    stamp = (data.stat().st_ino, data.stat().st_mtime_ns)
    reader = Library.open(built)
    assert reader.search_vector(vectors[3], k=1)[0].path == "/img/3.jpg"  # a reader with the base mapped
    fill(built, vectors[N : N + 300], start=N)
    remove(built, [3, 4, 5])
    finish(built)
    m = meta(built)
    assert ondisk.base_of(m) == first and (data.stat().st_ino, data.stat().st_mtime_ns) == stamp  # never rewritten
    lib = Library.open(built)
    assert lib.search_vector(vectors[N + 150], k=1)[0].path == f"/img/{N + 150}.jpg"
    for gone in (3, 4, 5):
        assert f"/img/{gone}.jpg" not in {h.path for h in lib.search_vector(vectors[gone], k=20)}
    assert lib.index.ntotal == N + 300  # the removed rows are tombstones in the mapped lists
    assert {f.code for f in examine(built).findings} <= HEALTHY | {"index-stale"}
    assert int(reader.rank(vectors[3], 1)[0][0]) == 3  # the old snapshot's mapped index still answers (its record is gone)
    fill(built, vectors[N + 300 : N + 2000], start=N + 300)  # delta + tombstones past DELTA_SHARE: rebuilt
    finish(built)
    second = ondisk.base_of(meta(built))
    assert second is not None and second.name != first.name and second.count == N + 2000 - 3
    assert not data.exists() and not (built / first.name).exists()  # the old generation is retired
    lib = Library.open(built)
    assert lib.index.ntotal == N + 1997
    assert lib.search_vector(vectors[N + 1999], k=1)[0].path == f"/img/{N + 1999}.jpg"
    assert {f.code for f in examine(built).findings} <= HEALTHY


def test_the_recall_self_check_and_doctor_work_on_it(built: Path) -> None:
    with LibraryWriter.open(built, ondisk_above=ONDISK_ABOVE) as writer:
        result = writer.check(flat_below=FLAT_BELOW)
    assert result is not None and result.recall >= ann.RECALL_TARGET
    m = meta(built)
    assert m["index_check"]["recall_at_10"] >= ann.RECALL_TARGET and ondisk.base_of(m) is not None
    assert {f.code for f in examine(built).findings} <= {"files-gone"}


KILLED_BUILD = """
import sys
from pathlib import Path
from indexer.writer import LibraryWriter
if __name__ == "__main__":
    with LibraryWriter.open(Path(sys.argv[1]), ondisk_above=int(sys.argv[2])) as writer:
        writer.finish(flat_below=int(sys.argv[3]), check=False)
"""


@pytest.mark.parametrize("point", ["index.train", "index.shards", "index.merged", "index.tmp_written", "index.renamed", "index.committed"])
def test_a_kill_during_the_build_leaves_a_library_that_opens_and_a_rerun_finishes(tmp_path: Path, vectors: np.ndarray, point: str) -> None:
    fill(tmp_path, vectors[:N])
    env = {**os.environ, "VIEWFINDER_FAULT": point}
    run = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(tmp_path), str(ONDISK_ABOVE), str(FLAT_BELOW)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == -9, run.stderr[-2000:]
    lib = Library.open(tmp_path)
    hit = lib.search_vector(vectors[42], k=1)[0]
    assert hit.path == "/img/42.jpg" and hit.score == pytest.approx(1.0, abs=2e-3)
    lib.close()
    finish(tmp_path)
    m = meta(tmp_path)
    assert ondisk.base_of(m) is not None and m["index_rows"] == N
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("index-", "vectors-")) or p.name.endswith(".tmp"))
    assert names == sorted(ondisk.index_files(m) | {m["vectors_file"]})
    lib = Library.open(tmp_path)
    assert lib.index.ntotal == N and lib.search_vector(vectors[42], k=1)[0].path == "/img/42.jpg"
    assert {f.code for f in examine(tmp_path).findings} <= HEALTHY


def _index_local(home: Path, root: Path, encoder: object, *, ondisk_above: int) -> None:
    from indexer.run import index_paths

    with LibraryWriter.open(home, ondisk_above=ondisk_above) as writer:
        index_paths([root], writer, lambda: encoder, model_id=encoder.model_id, batch_size=8, workers=2, flat_below=50)


def _answers(home: Path, queries: np.ndarray) -> list[list[tuple[str, float]]]:
    lib = Library.open(home)
    try:
        return [[(h.path, h.score) for h in lib.search_vector(q, k=10)] for q in queries]
    finally:
        lib.close()


def test_sqlite_postgres_and_a_ray_built_sharded_library_answer_alike(tmp_path: Path, tiny_clip: Path, request: pytest.FixtureRequest) -> None:
    """The same query on the same files: a local SQLite library (in-memory IVF-PQ), a PostgreSQL one, and one
    embedded on Ray whose on-disk index was filled by Ray tasks."""
    ray = pytest.importorskip("ray", reason="pip install 'viewfinder[ray]'")
    from functools import partial

    from test_kill import make_collection

    from indexer import shards
    from indexer.ray_ingest import index_paths_ray
    from search.encoder import Encoder

    root = make_collection(tmp_path / "photos", 100)
    encoder = Encoder.load(str(tiny_clip), "cpu")
    local = tmp_path / "sqlite"
    _index_local(local, root, encoder, ondisk_above=10**9)
    used: list[int] = []

    def ray_tasks(jobs: object, workers: int) -> list[str]:
        used.append(len(jobs))  # type: ignore[arg-type]
        return shards.run_ray(jobs, workers)  # type: ignore[arg-type]

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert shards.default_runner() is shards.run_ray  # what `index --ray` gets
        sharded = tmp_path / "ray"
        with LibraryWriter.open(sharded, ondisk_above=60, shard_runner=ray_tasks) as writer:
            index_paths_ray([root], writer, partial(Encoder.load, str(tiny_clip), backend="torch"), address="auto",
                            model_id=str(tiny_clip), batch_size=8, flat_below=50)  # fmt: skip
    finally:
        ray.shutdown()
    assert used == [2]
    m = meta(sharded)
    assert ondisk.base_of(m) is not None and ondisk.base_of(m).count == 100 and m["index_params"]["ondisk"]
    assert not meta(local)["index_params"]["ondisk"] and meta(local)["index_params"]["kind"] == "ivfpq"
    lib = Library.open(local)
    queries = np.concatenate([np.stack([lib.vector(i) for i in (0, 33, 71)]), encoder.encode_text(["a photo", "red and blue"])])
    lib.close()
    expected, from_ray = _answers(local, queries), _answers(sharded, queries)
    request.getfixturevalue("postgres_catalog")  # $VIEWFINDER_CATALOG_URL from here on (SQLite libraries are refused)
    server = tmp_path / "postgres"
    _index_local(server, root, encoder, ondisk_above=10**9)
    for got in (from_ray, _answers(server, queries)):
        assert [[p for p, _ in hits] for hits in got] == [[p for p, _ in hits] for hits in expected]
        np.testing.assert_allclose([[s for _, s in hits] for hits in got], [[s for _, s in hits] for hits in expected], atol=2e-3)
