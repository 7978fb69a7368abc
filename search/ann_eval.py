"""``viewfinder eval ann``: how close a library's index comes to an exact scan.

* Queries: ``QUERIES`` stored vectors of the library, sampled with a seed (``SEED``); each query's own
  row is left out of every result list, so the figures are about its neighbours ("more like this").
* Truth: an exact inner-product scan of every live stored vector (in blocks of ``EXACT_CHUNK``).
* Measured, one query at a time as a search runs: the index alone (its top k, scores as the index
  computes them: PQ codes for IVF-PQ) and the index with the exact re-rank of the stored full vectors
  (what ``viewfinder search`` returns: ``search.library``'s candidate depth, then ``ann.rerank``).
* recall@k: the share of a query's true top k that a method returns, where a result counts when its
  exact score reaches the true k-th best (``tie_aware_recall``: byte-identical duplicates at the
  boundary are not misses), averaged over the queries; for ``KS`` = 1, 10, 100.
* A warning when the re-ranked recall@k (the one users get) is below ``WARN_BELOW`` for any k.

A flat (exact) index scores 1.0 by construction; IVF-PQ indexes are where this says something.

``search.recall`` (the index's own self-check after each build) measures recall@10 the same way on
perturbed queries; this module keeps its own scan because it leaves each query's row out and handles
libraries with fewer than k other images (``tie_aware_recall`` counts only the rows that exist).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from search import ann
from search.errors import QueryError
from search.library import Library
from search.records import IndexParams, Vectors

QUERIES = 1000
SEED = 0
KS = (1, 10, 100)
WARN_BELOW = 0.95
EXACT_CHUNK = 65_536
TIE = 1e-5


# --- pure measuring -----------------------------------------------------------------------------------


def exact_topk(vectors: np.ndarray, live: NDArray[np.int64], queries: Vectors, exclude: NDArray[np.int64], k: int) -> Vectors:
    """(q, k) exact best scores per query over the live rows, best first, without each query's own row;
    -inf where the library holds fewer than k other rows."""
    best = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    for start in range(0, len(live), EXACT_CHUNK):
        ids = live[start : start + EXACT_CHUNK]
        rows = ann.gather(vectors, ids)
        scores = (queries @ rows.T) / np.maximum(np.linalg.norm(rows, axis=1), 1e-12)
        scores[ids[None, :] == exclude[:, None]] = -np.inf
        both = np.concatenate([best, scores.astype(np.float32)], axis=1)
        keep = min(k, both.shape[1])
        best = -np.partition(-both, keep - 1, axis=1)[:, :keep]
    best = -np.sort(-best, axis=1)
    if best.shape[1] < k:
        best = np.pad(best, ((0, 0), (0, k - best.shape[1])), constant_values=-np.inf)
    return best


def tie_aware_recall(found: Sequence[Vectors], truth: Vectors, k: int) -> float:
    """Mean over queries of (results among the first k whose exact score reaches the true k-th best) / k.
    ``found[i]``: exact scores of what a method returned for query i, in its order; ``truth``: (q, >=k)
    exact best scores, best first. Queries whose library holds fewer than k other rows count what exists."""
    shares = []
    for got, best in zip(found, truth, strict=True):
        real = int(np.count_nonzero(np.isfinite(best[:k])))
        if real == 0:
            continue
        kth = best[real - 1]
        shares.append(min(real, int(np.count_nonzero(np.asarray(got[:k]) >= kth - TIE))) / real)
    return float(np.mean(shares)) if shares else 1.0


def latency(ms: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(ms, dtype=np.float64)
    if arr.size == 0:
        return {"mean": 0.0, "p50": 0.0, "p95": 0.0}
    return {"mean": round(float(arr.mean()), 3), "p50": round(float(np.percentile(arr, 50)), 3), "p95": round(float(np.percentile(arr, 95)), 3)}


def warnings_for(reranked: dict[int, float], below: float | None = None) -> list[str]:
    below = WARN_BELOW if below is None else below
    return [
        f"recall@{k} with the exact re-rank is {r:.3f}, below {below}: searches of this library miss some of the "
        "true nearest neighbours."
        for k, r in reranked.items()
        if r < below
    ]


# --- the measurement ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnnReport:
    images: int
    queries: int
    seed: int
    index: IndexParams
    index_only: dict[int, float]
    reranked: dict[int, float]
    latency_index_only: dict[str, float]  # ms per query
    latency_reranked: dict[str, float]
    exact_seconds: float  # the whole exact scan, all queries in blocks
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "queries": self.queries,
            "seed": self.seed,
            "index": self.index.to_json(),
            "recall_index_only": {f"R@{k}": round(v, 4) for k, v in self.index_only.items()},
            "recall_reranked": {f"R@{k}": round(v, 4) for k, v in self.reranked.items()},
            "latency_ms_index_only": self.latency_index_only,
            "latency_ms_reranked": self.latency_reranked,
            "exact_seconds": round(self.exact_seconds, 3),
            "warnings": list(self.warnings),
        }


def _search(index: faiss.Index, params: IndexParams, query: Vectors, depth: int) -> tuple[np.ndarray, np.ndarray]:
    depth = max(1, min(depth, index.ntotal))
    if params.kind == "ivfpq":
        return index.search(query, depth, params=faiss.SearchParametersIVF(nprobe=params.nprobe))
    return index.search(query, depth)


def _exact_scores(vectors: np.ndarray, query: Vectors, ids: np.ndarray) -> Vectors:
    rows = ann.gather(vectors, ids)
    return (rows @ query.reshape(-1)) / np.maximum(np.linalg.norm(rows, axis=1), 1e-12)


def measure_ann(
    library: Library,
    *,
    queries: int = QUERIES,
    seed: int = SEED,
    ks: Sequence[int] = KS,
    advance: Callable[[int], None] = lambda n: None,
) -> AnnReport:
    """Recall@k of the library's index, alone and re-ranked, against an exact scan (module docstring)."""
    live = np.asarray(library.snapshot.live, dtype=np.int64)
    if len(live) < 2:
        raise QueryError(f"The library in {library.home} holds {len(live)} image(s); measuring its index needs at least two.")
    vectors, index, allowed = library.vectors, library.index, library.allowed
    params = library.index_params()
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(live, size=min(queries, len(live)), replace=False))
    qs = ann.gather(vectors, picks)
    qs /= np.maximum(np.linalg.norm(qs, axis=1, keepdims=True), 1e-12)
    kmax = max(ks)
    started = time.perf_counter()
    truth = exact_topk(vectors, live, qs, picks, kmax)
    exact_seconds = time.perf_counter() - started
    stale = max(0, index.ntotal - len(live))
    depth = ann.rerank_depth(params, kmax + 1) + stale  # the depth searches use (+1: the query's own row)
    raw_found, reranked_found, raw_ms, reranked_ms = [], [], [], []
    for query, own in zip(qs, picks, strict=True):
        q = query.reshape(1, -1)
        t0 = time.perf_counter()
        _, ids = _search(index, params, q, kmax + 1 + stale)
        t1 = time.perf_counter()
        ids = ids[0]
        ids = ids[(ids >= 0) & (ids != own)]
        ids = ids[ids < len(allowed)]
        ids = ids[allowed[ids]][:kmax]
        raw_ms.append((t1 - t0) * 1000)
        raw_found.append(_exact_scores(vectors, q, ids) if len(ids) else np.zeros(0, np.float32))
        t0 = time.perf_counter()
        _, cands = _search(index, params, q, depth)
        mask = allowed.copy()
        mask[own] = False
        _, scores = ann.rerank(q, cands[0], vectors, mask, kmax)
        reranked_ms.append((time.perf_counter() - t0) * 1000)
        reranked_found.append(scores)
        advance(1)
    index_only = {k: tie_aware_recall(raw_found, truth, k) for k in ks}
    reranked = {k: tie_aware_recall(reranked_found, truth, k) for k in ks}
    return AnnReport(
        images=len(live),
        queries=len(picks),
        seed=seed,
        index=params,
        index_only=index_only,
        reranked=reranked,
        latency_index_only=latency(raw_ms),
        latency_reranked=latency(reranked_ms),
        exact_seconds=exact_seconds,
        warnings=tuple(warnings_for(reranked)),
    )
