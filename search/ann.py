"""The FAISS side: which index to build (a small pure rule), building it, and exact re-ranking.

The rule (``choose_index_params``):

* Below ``FLAT_BELOW`` vectors the index is exact (flat inner product). An exact scan of 50k
  vectors costs a few milliseconds, and IVF-PQ measured only 1.5x faster at 20k with recall@10 just
  under 0.98 (docs/BENCHMARKS.md), so it does not pay below that.
* From there on it is ``IndexIVFPQ``:
  - ``nbits`` = 8 (256 codes per sub-quantizer) as soon as there are 39 training points per code,
    fewer bits below that (faiss warns under 39 points per centroid);
  - ``nlist`` = the power of two nearest to 4·√n, capped so that every list gets >= 39 points;
  - ``m`` = the largest divisor of the dimension that is <= min(64, dim/16): 32 one-byte codes for
    ViT-B/32's 512 dimensions, so 32 B + an 8-byte id per vector in memory (73 B/vector resident
    in all at 1M, measured);
  - ``nprobe`` = max(64, nlist/64) lists, and a re-rank depth of max(10·k, 400) candidates that are
    re-scored exactly from the stored full vectors, so PQ error never reaches the user. At 1M vectors
    of CLIP-like data this gave recall@10 0.998 at 67x the exact QPS (bench/ann.py); the deeper
    re-rank is what lets 32 codes replace 64 (recall 0.986 with a depth of 200).
* The index is retrained when the collection has grown past ``RETRAIN_GROWTH`` times the size it was
  trained for, or shrunk so far that the rule would pick another kind.
"""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

from search.gpu import gpu_clustering
from search.records import IndexParams, Vectors

FLAT_BELOW = 50_000
MIN_POINTS_PER_CENTROID = 39
RETRAIN_GROWTH = 4.0
MAX_TRAINING_POINTS = 262_144
ADD_BATCH = 65_536


def pq_subquantizers(dim: int) -> int:
    cap = max(1, min(64, dim // 16))
    return max(m for m in range(1, cap + 1) if dim % m == 0)


def _pow2_near(x: float) -> int:
    return 1 << max(0, round(math.log2(max(x, 1.0))))


def _pow2_floor(x: float) -> int:
    return 1 << max(0, math.floor(math.log2(max(x, 1.0))))


def choose_index_params(n: int, dim: int, *, flat_below: int = FLAT_BELOW) -> IndexParams:
    """The documented rule above, as a pure function of the collection size and dimension."""
    if n < max(flat_below, 2 * MIN_POINTS_PER_CENTROID):
        return IndexParams(kind="flat", dim=dim, trained_on=n)
    nbits = max(1, min(8, math.floor(math.log2(n / MIN_POINTS_PER_CENTROID))))
    nlist = min(_pow2_near(4 * math.sqrt(n)), _pow2_floor(n / MIN_POINTS_PER_CENTROID))
    return IndexParams(
        kind="ivfpq",
        dim=dim,
        nlist=nlist,
        m=pq_subquantizers(dim),
        nbits=nbits,
        nprobe=min(nlist, max(64, nlist // 64)),
        rerank=400,
        trained_on=n,
    )


def needs_rebuild(current: IndexParams | None, n: int, dim: int, *, flat_below: int = FLAT_BELOW) -> bool:
    """Whether the index must be rebuilt from the stored vectors instead of updated in place."""
    wanted = choose_index_params(n, dim, flat_below=flat_below)
    if current is None or current.kind != wanted.kind or current.dim != dim:
        return True
    if current.kind == "flat":
        return False
    grown = n > RETRAIN_GROWTH * current.trained_on
    shrunk = n * RETRAIN_GROWTH < current.trained_on
    return grown or shrunk


def new_index(params: IndexParams) -> faiss.Index:
    if params.kind == "flat":
        return faiss.IndexIDMap(faiss.IndexFlatIP(params.dim))
    quantizer = faiss.IndexFlatIP(params.dim)
    return faiss.IndexIVFPQ(quantizer, params.dim, params.nlist, params.m, params.nbits, faiss.METRIC_INNER_PRODUCT)


def training_sample(ids: np.ndarray, params: IndexParams, seed: int = 1338) -> np.ndarray:
    """Sorted ids of the vectors to train on: enough per centroid, never more than needed."""
    want = min(len(ids), MAX_TRAINING_POINTS, 256 * max(params.nlist, 1 << params.nbits))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(ids, size=want, replace=False))


def gather(vectors: np.ndarray, ids: np.ndarray) -> Vectors:
    """Rows of the stored vectors as float32, read in file order (kind to a memory map)."""
    return np.ascontiguousarray(vectors[np.asarray(ids, dtype=np.int64)], dtype=np.float32)


def add_vectors(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
    ids = np.sort(np.asarray(ids, dtype=np.int64))
    for start in range(0, len(ids), ADD_BATCH):
        chunk = ids[start : start + ADD_BATCH]
        index.add_with_ids(gather(vectors, chunk), chunk)


def build_index(params: IndexParams, vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
    """A new index over the given ids of the stored vectors (trained on a sample for IVF-PQ)."""
    index = new_index(params)
    if params.kind == "ivfpq":
        with gpu_clustering(index):  # k-means on the GPU when faiss sees one: it dominates build time
            index.train(gather(vectors, training_sample(ids, params)))
    add_vectors(index, vectors, ids)
    return index


def remove_ids(index: faiss.Index, ids: np.ndarray) -> None:
    if len(ids):
        index.remove_ids(np.asarray(ids, dtype=np.int64))


def candidates(index: faiss.Index, params: IndexParams, query: Vectors, depth: int) -> np.ndarray:
    """Ids of the ``depth`` best candidates for one query (1, dim); -1 where there are fewer."""
    depth = max(1, min(depth, index.ntotal))
    if params.kind == "ivfpq":
        _, ids = index.search(query, depth, params=faiss.SearchParametersIVF(nprobe=params.nprobe))
    else:
        _, ids = index.search(query, depth)
    return ids[0]


def rerank(query: Vectors, ids: np.ndarray, vectors: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of the allowed candidates against the stored vectors; best ``k``, best first."""
    ids = ids[(ids >= 0) & (ids < len(allowed))]
    ids = np.unique(ids[allowed[ids]])
    if len(ids) == 0:
        return ids, np.zeros(0, dtype=np.float32)
    rows = gather(vectors, ids)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))  # undo float16 rounding of the norm
    scores = (rows @ query.reshape(-1)) / (np.maximum(norms, 1e-12) * max(float(np.linalg.norm(query)), 1e-12))
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[order], scores[order]


class UnreadableIndex(ValueError):
    """An index file that is missing, truncated, not an index, or of another dimension. ``str()`` is one line."""


def read_index(path: Path, dim: int | None = None) -> faiss.Index:
    """The index in ``path``; ``UnreadableIndex`` for every way it cannot be used (checked ``dim`` included)."""
    try:
        index = faiss.read_index(str(path))
    except (RuntimeError, MemoryError) as err:
        lines = str(err).strip().splitlines()
        raise UnreadableIndex(lines[-1] if lines else type(err).__name__) from err
    if dim is not None and index.d != dim:
        raise UnreadableIndex(f"it holds {index.d}-dimensional vectors, not {dim}")
    return index
