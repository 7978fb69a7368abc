"""Near-duplicates over a whole library: pairs above a cosine threshold, found with the library's FAISS
index, then grouped into clusters (connected components), each with a suggested keeper.

The rule:

* Flat index: every stored vector is a query, in blocks of ``BLOCK``, of an exact FAISS range search
  on the library's own index (radius lowered by ``FLAT_MARGIN`` for float16 storage), each candidate
  pair then re-scored from the stored vectors.
* IVF index: the library's own inverted lists are the buckets. Near-duplicates fall in the same list or
  one of its ``NEIGHBOUR_LISTS`` nearest lists (by centroid), so each list's members are compared
  exactly (one matrix product from the stored vectors) with the members of that list and of its
  neighbours; no PQ code is trusted. A pair is kept when its exact cosine is at least the threshold.
  No pair loop in Python: FAISS and vectorised numpy do the work.
* Clusters are the connected components of the kept pairs (``components``: min-label propagation with
  pointer jumping, in numpy), biggest first. A burst of shots or a chain of edits ends up in one
  cluster even when its two ends are below the threshold: that is what a user wants to review.
* ``DEFAULT_THRESHOLD`` (0.92): the best F1 of pairs among the thresholds tried on real edits of real
  images (JPEG re-encodes at quality 30-90, half size, a 5 % crop, a 3° rotation) against unrelated
  images of the same kinds, with the trained test model: precision 0.96 and recall 0.96 there (figures
  in docs/QUALITY.md, "Duplicates"; held by ``tests/test_dupes.py``). Speed at 1M: docs/BENCHMARKS.md.
* Keeper: the member with the most pixels, then the oldest (capture time, else modification time),
  then the shortest path. Files with the same content hash are byte-identical copies: each member
  names the first one before it with its bytes (``same_bytes_as``), the keeper's copies are flagged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from search import ann
from search.errors import QueryError
from search.records import ImageRecord, IndexParams

DEFAULT_THRESHOLD = 0.92
NEIGHBOUR_LISTS = 4
FLAT_MARGIN = 0.005  # float32 search over float16-stored vectors
BLOCK = 8192


@dataclass(frozen=True, slots=True)
class Pairs:
    """Unordered pairs of FAISS ids (``a < b``) with their exact cosine."""

    a: NDArray[np.int64]
    b: NDArray[np.int64]
    score: NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.a)


@dataclass(frozen=True, slots=True)
class Member:
    record: ImageRecord
    score: float  # cosine to the keeper (1 for the keeper)
    identical: bool  # same content hash as the keeper (byte-identical); False for the keeper itself
    same_bytes_as: str | None = None  # the first member before this one with the same content hash

    @property
    def when(self) -> datetime:
        return taken_or_modified(self.record)

    def to_json(self) -> dict[str, Any]:
        rec = self.record
        return {
            "path": rec.path,
            "size": rec.size,
            "width": rec.width,
            "height": rec.height,
            "date": self.when.isoformat(),
            "date_source": "taken" if rec.taken_at else "modified",
            "content_hash": rec.content_hash,
            "score": round(self.score, 6),
            "identical_to_keeper": self.identical,
            "same_bytes_as": self.same_bytes_as,
        }


@dataclass(frozen=True, slots=True)
class Cluster:
    members: tuple[Member, ...]  # keeper first, then by score to the keeper

    @property
    def keeper(self) -> Member:
        return self.members[0]

    @property
    def others(self) -> tuple[Member, ...]:
        return self.members[1:]

    @property
    def all_identical(self) -> bool:
        return all(m.identical for m in self.others)

    def to_json(self) -> dict[str, Any]:
        return {
            "size": len(self.members),
            "keeper": self.keeper.record.path,
            "all_identical": self.all_identical,
            "members": [m.to_json() for m in self.members],
        }


# --- input ---------------------------------------------------------------------------------------------


def check_threshold(threshold: float) -> float:
    if math.isnan(threshold) or not (-1.0 <= threshold <= 1.0):
        raise QueryError(f"The duplicate threshold is a cosine similarity between -1 and 1; {threshold} is outside that range.")
    return threshold


# --- pairs -------------------------------------------------------------------------------------------------


def _unit_rows(vectors: np.ndarray, ids: np.ndarray) -> NDArray[np.float32]:
    rows = ann.gather(vectors, ids)
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return rows


def similar_pairs(
    index: faiss.Index,
    params: IndexParams,
    vectors: np.ndarray,
    live: np.ndarray,
    allowed: np.ndarray,
    threshold: float,
    *,
    neighbours: int = NEIGHBOUR_LISTS,
    block: int = BLOCK,
) -> Pairs:
    """Every pair of live rows whose exact cosine is >= ``threshold``: all of them for a flat index; for an
    IVF index, those within a list or between a list and its ``neighbours`` nearest lists. ``allowed``
    masks out rows the index still holds but the catalog does not."""
    check_threshold(threshold)
    if params.kind == "ivfpq":
        return _bucket_pairs(faiss.extract_index_ivf(index), vectors, allowed, threshold, neighbours)
    return _range_pairs(index, vectors, live, allowed, threshold, block)


def _pairs(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Pairs:
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty, np.zeros(0, dtype=np.float32))
    a, b, s = (np.concatenate(x) for x in zip(*parts, strict=True))
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    _, first = np.unique(np.stack([lo, hi], axis=1), axis=0, return_index=True)  # a pair met from both ends once
    return Pairs(lo[first], hi[first], s[first].astype(np.float32))


def _range_pairs(index: faiss.Index, vectors: np.ndarray, live: np.ndarray, allowed: np.ndarray, threshold: float, block: int) -> Pairs:
    """Flat index: an exact FAISS range search per block of stored vectors, then an exact re-score."""
    parts = []
    live = np.sort(np.asarray(live, dtype=np.int64))
    for start in range(0, len(live), block):
        chunk = live[start : start + block]
        queries = _unit_rows(vectors, chunk)
        lims, _, found = index.range_search(queries, float(threshold - FLAT_MARGIN))
        qpos = np.repeat(np.arange(len(chunk)), np.diff(lims.astype(np.int64)))
        a, b = chunk[qpos], found.astype(np.int64)
        ok = (b >= 0) & (b < len(allowed)) & (a != b)
        ok[ok] &= allowed[b[ok]]
        qpos, a, b = qpos[ok], a[ok], b[ok]
        if len(a):
            scores = np.einsum("ij,ij->i", queries[qpos], _unit_rows(vectors, b))
            keep = scores >= threshold
            parts.append((a[keep], b[keep], scores[keep]))
    return _pairs(parts)


def inverted_lists(ivf: faiss.IndexIVF, allowed: np.ndarray) -> list[np.ndarray]:
    """The ids in each IVF list (allowed ones only), as the index assigned them: no search needed."""
    out = []
    for number in range(ivf.nlist):
        size = ivf.invlists.list_size(number)
        ids = faiss.rev_swig_ptr(ivf.invlists.get_ids(number), size).copy().astype(np.int64) if size else np.zeros(0, np.int64)
        ids = ids[(ids >= 0) & (ids < len(allowed))]
        out.append(np.sort(ids[allowed[ids]]))
    return out


def neighbour_lists(ivf: faiss.IndexIVF, neighbours: int) -> np.ndarray:
    """(nlist, neighbours): each list's nearest other lists by centroid similarity."""
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    gram = centroids @ centroids.T
    np.fill_diagonal(gram, -np.inf)
    k = min(neighbours, ivf.nlist - 1)
    if k <= 0:
        return np.zeros((ivf.nlist, 0), dtype=np.int64)
    return np.argpartition(-gram, k - 1, axis=1)[:, :k]


def _bucket_pairs(ivf: faiss.IndexIVF, vectors: np.ndarray, allowed: np.ndarray, threshold: float, neighbours: int) -> Pairs:
    """IVF index: exact cosines between the members of each list and those of the list itself and of its
    nearest lists. Near-duplicates fall in the same list or one next to it; the product is exact."""
    lists = inverted_lists(ivf, allowed)
    near = neighbour_lists(ivf, neighbours)
    order = np.concatenate(lists)
    bounds = np.concatenate([[0], np.cumsum([len(x) for x in lists])])
    rows = _unit_rows(vectors, np.sort(order))[np.argsort(np.argsort(order))]  # read in file order, then list order
    parts = []
    for number in range(ivf.nlist):
        lo, hi = bounds[number], bounds[number + 1]
        if hi == lo:
            continue
        mine = rows[lo:hi]
        others = [np.arange(bounds[n], bounds[n + 1]) for n in (number, *near[number].tolist())]
        cand = np.concatenate(others)
        scores = mine @ rows[cand].T
        i, j = np.nonzero(scores >= threshold)
        a, b = order[lo + i], order[cand[j]]
        keep = a != b
        parts.append((a[keep], b[keep], scores[i[keep], j[keep]]))
    return _pairs(parts)


# --- clusters ------------------------------------------------------------------------------------------


def components(a: np.ndarray, b: np.ndarray) -> list[NDArray[np.int64]]:
    """Connected components of the graph with edges (a[i], b[i]), as sorted id arrays, biggest first
    (ties: smallest first id). Min-label propagation with pointer jumping: O(log n) numpy rounds."""
    if len(a) == 0:
        return []
    nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    ea, eb = inverse[: len(a)], inverse[len(a) :]
    parent = np.arange(len(nodes))
    while True:
        pa, pb = parent[ea], parent[eb]
        low = np.minimum(pa, pb)
        np.minimum.at(parent, pa, low)
        np.minimum.at(parent, pb, low)
        while True:  # pointer jumping until every node points at a root
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
        if np.array_equal(parent[ea], parent[eb]):
            break
    order = np.argsort(parent, kind="stable")
    roots, starts = np.unique(parent[order], return_index=True)
    groups = [nodes[np.sort(g)] for g in np.split(order, starts[1:])]
    return sorted(groups, key=lambda g: (-len(g), int(g[0])))


def taken_or_modified(rec: ImageRecord) -> datetime:
    if rec.taken_at is not None:
        return rec.taken_at
    return datetime.fromtimestamp(rec.mtime_ns / 1e9, UTC).replace(tzinfo=None)


def keeper_key(rec: ImageRecord) -> tuple[int, datetime, int, str]:
    """Sort key: most pixels, then oldest, then shortest path, then path."""
    return (-(rec.width or 0) * (rec.height or 0), taken_or_modified(rec), len(rec.path), rec.path)


def make_cluster(records: Sequence[ImageRecord], vectors: np.ndarray) -> Cluster:
    """Keeper first (``keeper_key``), the others by cosine to the keeper, best first."""
    ordered = sorted(records, key=keeper_key)
    keeper = ordered[0]
    assert keeper.faiss_id is not None
    rows = _unit_rows(vectors, np.array([r.faiss_id for r in ordered], dtype=np.int64))
    scores = rows @ rows[0]
    members = [Member(keeper, 1.0, False)] + [
        Member(rec, float(score), bool(rec.content_hash) and rec.content_hash == keeper.content_hash)
        for rec, score in zip(ordered[1:], scores[1:], strict=True)
    ]
    ordered_members = [members[0], *sorted(members[1:], key=lambda m: (-m.score, m.record.path))]
    first_with: dict[str, str] = {}
    out = []
    for member in ordered_members:
        digest = member.record.content_hash
        out.append(replace(member, same_bytes_as=first_with.get(digest)) if digest else member)
        if digest:
            first_with.setdefault(digest, member.record.path)
    return Cluster(tuple(out))


def find_clusters(library: Any, threshold: float = DEFAULT_THRESHOLD, *, neighbours: int = NEIGHBOUR_LISTS) -> list[Cluster]:
    """The near-duplicate clusters of an open ``Library``, biggest first."""
    check_threshold(threshold)
    if len(library) == 0:
        return []
    index = library.index  # loads the index (and the rows committed after it was written)
    pairs = similar_pairs(index, library.index_params(), library.vectors, library.snapshot.live, library.allowed, threshold, neighbours=neighbours)
    groups = components(pairs.a, pairs.b)
    wanted = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
    records: dict[int, ImageRecord] = {}
    for start in range(0, len(wanted), 10_000):
        records.update(library.records(wanted[start : start + 10_000]))
    clusters = []
    for group in groups:
        found = [records[int(i)] for i in group if int(i) in records]
        if len(found) >= 2:
            clusters.append(make_cluster(found, library.vectors))
    return sorted(clusters, key=lambda c: (-len(c.members), c.keeper.record.path))
