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
  - ``nprobe`` = max(64, nlist/64) lists, and a re-rank depth of max(10·k, ``rule_rerank(n)``)
    candidates that are re-scored exactly from the stored full vectors, so PQ error never reaches the
    user. ``rule_rerank`` is ``RERANK_BASE`` (400) up to ``RERANK_N`` (2.5M) vectors and grows with n
    (the power of two nearest to n / ``RERANK_N`` times that, at most ``MAX_RERANK``): 1,600 at 10M. At
    1M vectors of CLIP-like data 400 gave recall@10 0.998 at 67x the exact QPS (bench/ann.py), and the
    deeper re-rank is what lets 32 codes replace 64 (recall 0.986 with a depth of 200). At 10M the top
    10 of a query lie closer together than 32-byte codes tell apart, and probing more lists does not
    help: depths 400 / 800 / 1,600 / 3,200 measured recall@10 0.906 / 0.964 / 0.990 / 0.996 on the same
    on-disk index (docs/BENCHMARKS.md, "Sharded, on-disk IVF-PQ at 10M").
* From ``ONDISK_ABOVE`` vectors on, the IVF-PQ is **on disk** (``IndexParams.ondisk``; ``search.ondisk``
  reads it, ``indexer.shards`` builds it): its inverted lists (``m`` + 8 bytes a vector: 400 MB at 10M,
  4 GB at 100M) are memory-mapped instead of read into memory, so opening a library reads the centroids
  and codebooks (megabytes) and queries page in only the lists they probe. The threshold is where the
  in-memory index file passes ~80 MB (read whole on every open: about a second on a cold disk) and where
  filling shards in parallel starts to pay. The full build trains once on a sample (two-level k-means:
  √nlist coarse clusters, then each split, ~nlist/√nlist times cheaper than one flat k-means, which is
  days on 2 cores at 16,384 lists), then fills shards in parallel with an HNSW over the centroids for the
  list assignment (an exact assignment of 10M vectors to 16,384 centroids is ~170 TFLOP), and merges them
  into one lists file. Vectors added later go into an in-memory delta index sharing its centroids and
  codebooks; removed rows stay in the mapped lists as tombstones that the live mask filters out. A full
  rebuild comes when delta + tombstones pass ``DELTA_SHARE`` of the base (the delta costs RAM, tombstones
  cost probe work), or by the growth rule below.
* The index is retrained when the collection has grown past ``RETRAIN_GROWTH`` times the size it was
  trained for, or shrunk past ``RETRAIN_GROWTH`` times below it.
* Hysteresis at the flat/IVF-PQ boundary: a flat index becomes IVF-PQ once the collection reaches
  ``flat_below``, but an IVF-PQ index goes back to flat only below ``HYSTERESIS`` x ``flat_below`` (and
  a flat index the self-check chose stays flat until the collection grows ``RETRAIN_GROWTH`` times), so
  a library hovering around the threshold is rebuilt once, not on every run.

The self-check (``search.recall``), after every build or retrain of an IVF-PQ index, because the rule
above sees only the size and the dimension, never how tightly the vectors are packed:

* it measures recall@``CHECK_K`` of the index as searches run it (candidates + exact re-rank) against an
  exact scan of every live vector, on ``CHECK_QUERIES`` seeded image-like queries (stored vectors moved
  by ``IMAGE_JITTER`` x the difference of two other stored vectors: a step the size of the data's own
  spread, so tightly packed libraries are not let off easily) and, when the model is at hand (or a
  modality direction was stored by an earlier run), as many text-like queries (stored vectors moved by
  ``MODALITY_GAP`` along the modality direction: top-1 cosine ~0.3, as measured CLIP text-image pairs);
* below ``RECALL_TARGET`` + ``CHECK_MARGIN`` (the margin covers the sampling error of 2,000 answers
  and queries unlike the sample: bench/ann.py's fresh queries measured 0.974 where the sample said 0.981)
  it takes the cheapest lever that reaches it, each one measured:
  ``nprobe`` doubled up to ``nlist`` (stopping when it stops helping), then the re-rank depth doubled up
  to ``MAX_RERANK``, then ``nprobe`` brought back down as far as the deeper re-rank allows; then finer PQ
  codes (``m`` doubled while it divides the dimension and stays <= ``MAX_M`` bytes: a rebuild) with the
  same ladder; and an exact (flat) index when nothing reaches the target and its vectors fit in
  ``EXACT_MEMORY_SHARE`` of this machine's memory (it is built in memory: 20 GB at 10M x 512); when
  they do not, the best index tried is kept, its recall recorded and ``doctor`` reports it;
* cost: one exact scan for the ground truth (``CHECK_QUERIES`` x 2 queries over n vectors) and a few
  hundred ANN queries per step; seconds at 1M (docs/BENCHMARKS.md, "ANN self-check").
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
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
HYSTERESIS = 0.8
ONDISK_ABOVE = 2_000_000
DELTA_SHARE = 0.1

RECALL_TARGET = 0.98
CHECK_MARGIN = 0.01
CHECK_K = 10
CHECK_QUERIES = 200
IMAGE_JITTER = 0.25
MODALITY_GAP = 3.0
MAX_RERANK = 3200
MAX_M = 64
RERANK_BASE = 400
RERANK_N = 2_500_000
EXACT_MEMORY_SHARE = 0.5


def exact_fits(n: int, dim: int) -> bool:
    """Whether an exact in-memory index of ``n`` float32 vectors takes at most ``EXACT_MEMORY_SHARE`` of
    this machine's physical memory (the self-check's last resort must not be what kills the run)."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return True
    return n * dim * 4 <= EXACT_MEMORY_SHARE * memory


def pq_subquantizers(dim: int) -> int:
    cap = max(1, min(64, dim // 16))
    return max(m for m in range(1, cap + 1) if dim % m == 0)


def _pow2_near(x: float) -> int:
    return 1 << max(0, round(math.log2(max(x, 1.0))))


def _pow2_floor(x: float) -> int:
    return 1 << max(0, math.floor(math.log2(max(x, 1.0))))


def rule_rerank(n: int) -> int:
    """The rule's re-rank depth for ``n`` vectors (the docstring above)."""
    return min(MAX_RERANK, RERANK_BASE * _pow2_near(max(1.0, n / RERANK_N)))


def choose_index_params(n: int, dim: int, *, flat_below: int = FLAT_BELOW, ondisk_above: int = ONDISK_ABOVE) -> IndexParams:
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
        rerank=rule_rerank(n),
        trained_on=n,
        ondisk=n >= ondisk_above,
    )


def needs_rebuild(
    current: IndexParams | None, n: int, dim: int, *, flat_below: int = FLAT_BELOW, ondisk_above: int = ONDISK_ABOVE
) -> bool:
    """Whether the index must be rebuilt from the stored vectors instead of updated in place (with the
    hysteresis of the docstring above, also between in-memory and on-disk lists)."""
    if current is None or current.dim != dim:
        return True
    if current.kind == "ivfpq" and current.ondisk != (n >= (HYSTERESIS * ondisk_above if current.ondisk else ondisk_above)):
        return True
    grown = n > RETRAIN_GROWTH * max(current.trained_on, 1)
    if current.kind == "flat":
        wanted = choose_index_params(n, dim, flat_below=flat_below).kind
        return wanted != "flat" and (not current.tuned or grown)
    too_small = choose_index_params(n, dim, flat_below=math.floor(HYSTERESIS * flat_below)).kind == "flat"
    shrunk = n * RETRAIN_GROWTH < current.trained_on
    return too_small or grown or shrunk


def delta_due(base_count: int, base_rows: int, live: np.ndarray) -> bool:
    """Whether an on-disk base (``base_count`` vectors, built when the library had ``base_rows`` rows) has
    collected enough added rows and tombstones since to be rebuilt (``DELTA_SHARE``)."""
    below = int(np.searchsorted(live, base_rows))  # live is sorted: rows the base holds that are still live
    added, removed = len(live) - below, base_count - below
    return added + removed > DELTA_SHARE * max(base_count, 1)


def rerank_depth(params: IndexParams, k: int) -> int:
    """Candidates fetched from the index for ``k`` results (before any allowance for removed rows)."""
    return max(params.rerank, 10 * k) if params.kind == "ivfpq" else k


def finer_codes(params: IndexParams) -> IndexParams | None:
    """The same index with twice the PQ sub-quantizers (a rebuild), or None when the codes cannot grow."""
    m = 2 * params.m
    if params.kind != "ivfpq" or m > min(MAX_M, params.dim) or params.dim % m:
        return None
    return replace(params, m=m)


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


def read_index(path: Path, dim: int | None = None, *, flags: int = 0) -> faiss.Index:
    """The index in ``path``; ``UnreadableIndex`` for every way it cannot be used (checked ``dim`` included)."""
    try:
        index = faiss.read_index(str(path), flags)
    except (RuntimeError, MemoryError) as err:
        lines = str(err).strip().splitlines()
        raise UnreadableIndex(lines[-1] if lines else type(err).__name__) from err
    if dim is not None and index.d != dim:
        raise UnreadableIndex(f"it holds {index.d}-dimensional vectors, not {dim}")
    return index
