"""The index rule as a pure function, and both index kinds through the real library on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.writer import LibraryWriter, utcnow
from search import ann
from search.library import Library
from search.records import ImageRecord, Status


@pytest.mark.parametrize(
    ("n", "dim", "kind", "nlist", "m", "nbits"),
    [
        (0, 512, "flat", 0, 0, 0),
        (49_999, 512, "flat", 0, 0, 0),
        (50_000, 512, "ivfpq", 1024, 32, 8),
        (100_000, 512, "ivfpq", 1024, 32, 8),
        (1_000_000, 512, "ivfpq", 4096, 32, 8),
        (10_000_000, 768, "ivfpq", 16384, 48, 8),
        (50_000, 1152, "ivfpq", 1024, 64, 8),
    ],
)
def test_rule(n: int, dim: int, kind: str, nlist: int, m: int, nbits: int) -> None:
    p = ann.choose_index_params(n, dim)
    assert (p.kind, p.nlist, p.m, p.nbits) == (kind, nlist, m, nbits)
    if kind == "ivfpq":
        assert n / p.nlist >= ann.MIN_POINTS_PER_CENTROID  # enough training points per centroid
        assert n / (1 << p.nbits) >= ann.MIN_POINTS_PER_CENTROID
        assert dim % p.m == 0 and 1 <= p.nprobe <= p.nlist
        assert p.m + 8 <= 80  # resident bytes per vector: PQ code + id


def test_rerank_depth_grows_past_a_few_million() -> None:
    """400 candidates up to RERANK_N vectors, then more as n grows (1,600 at 10M), never past MAX_RERANK."""
    assert [ann.choose_index_params(n, 512).rerank for n in (100_000, 1_000_000, 2_500_000)] == [400, 400, 400]
    assert ann.choose_index_params(5_000_000, 512).rerank == 800
    assert ann.choose_index_params(10_000_000, 512).rerank == 1600
    assert ann.choose_index_params(100_000_000, 512).rerank == ann.MAX_RERANK


def test_rule_small_forced() -> None:
    p = ann.choose_index_params(3000, 32, flat_below=1000)
    assert p.kind == "ivfpq" and p.m == 2 and p.nbits == 6 and p.nlist == 64 and p.nprobe == 64
    assert 3000 / p.nlist >= ann.MIN_POINTS_PER_CENTROID


def test_rebuild_rule() -> None:
    p = ann.choose_index_params(60_000, 512)
    assert not ann.needs_rebuild(p, 60_000, 512)
    assert not ann.needs_rebuild(p, 200_000, 512)
    assert ann.needs_rebuild(p, 250_000, 512)  # grown more than 4x past its training size
    assert not ann.needs_rebuild(p, 49_000, 512)  # just under the threshold: kept (hysteresis)
    assert ann.needs_rebuild(p, 39_000, 512)  # under HYSTERESIS x the threshold: back to exact
    assert ann.needs_rebuild(None, 10, 512)
    assert not ann.needs_rebuild(ann.choose_index_params(10, 512), 45_000, 512)


def clustered(n: int, dim: int, seed: int = 1338) -> np.ndarray:
    """Unit vectors around a few hundred random centres: closer to real embeddings than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(4, n // 40), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fill(home: Path, vectors: np.ndarray, start: int = 0, batch: int = 1000) -> None:
    with LibraryWriter.open(home) as writer:
        writer.bind("test-model", vectors.shape[1])
        for lo in range(0, len(vectors), batch):
            chunk = vectors[lo : lo + batch]
            recs = [
                ImageRecord(path=f"/img/{start + lo + i}.jpg", size=1, mtime_ns=1, status=Status.INDEXED, indexed_at=utcnow())
                for i in range(len(chunk))
            ]
            writer.commit(recs, chunk, [])


def finish(home: Path, flat_below: int) -> None:
    with LibraryWriter.open(home) as writer:
        writer.finish(flat_below=flat_below)


@pytest.mark.parametrize("flat_below", [100_000, 1000])
def test_library_search_both_kinds(tmp_path: Path, flat_below: int) -> None:
    vectors = clustered(4000, 32)
    fill(tmp_path, vectors)
    finish(tmp_path, flat_below)
    lib = Library.open(tmp_path)
    assert lib.index_params().kind == ("flat" if flat_below > 4000 else "ivfpq")
    exact = vectors @ vectors[:50].T
    recall = []
    for q in range(50):
        hits = lib.search_vector(vectors[q], k=10)
        assert hits[0].path == f"/img/{q}.jpg" and hits[0].score == pytest.approx(1.0, abs=2e-3)
        assert [h.rank for h in hits] == list(range(1, 11))
        truth = {f"/img/{i}.jpg" for i in np.argsort(-exact[:, q])[:10]}
        recall.append(len(truth & {h.path for h in hits}) / 10)
    assert np.mean(recall) >= 0.9


def test_ivfpq_updates_and_retrains(tmp_path: Path) -> None:
    vectors = clustered(6000, 32, seed=7)
    fill(tmp_path, vectors[:3000])
    finish(tmp_path, flat_below=1000)
    first = Library.open(tmp_path).index_params()
    assert first.kind == "ivfpq" and first.trained_on == 3000
    fill(tmp_path, vectors[3000:5000], start=3000)  # grown, but not 4x: updated in place
    finish(tmp_path, flat_below=1000)
    lib = Library.open(tmp_path)
    assert lib.index_params() == first and lib.index.ntotal == 5000
    assert lib.search_vector(vectors[4500], k=1)[0].path == "/img/4500.jpg"
    fill(tmp_path, clustered(8000, 32, seed=8), start=5000)  # 13000 > 4 x 3000: retrained
    finish(tmp_path, flat_below=1000)
    assert Library.open(tmp_path).index_params().trained_on == 13_000


def test_rows_committed_after_the_index_are_searchable(tmp_path: Path) -> None:
    """A run killed after committing batches but before writing the index loses nothing."""
    vectors = clustered(3000, 32, seed=3)
    fill(tmp_path, vectors[:2000])
    finish(tmp_path, flat_below=1000)
    fill(tmp_path, vectors[2000:], start=2000)  # committed, index not rewritten
    lib = Library.open(tmp_path)
    assert len(lib) == 3000 and lib.index.ntotal == 3000
    assert lib.search_vector(vectors[2999], k=1)[0].path == "/img/2999.jpg"
