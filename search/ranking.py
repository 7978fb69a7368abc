"""Pure steps of a query after the index has answered: combine terms, cut, group, sort.

* ``combine``: the query vector is the normalised weighted sum of its terms' unit vectors.
* ``group_near_duplicates``: results whose stored vectors have cosine >= ``GROUP_THRESHOLD`` with a
  better-ranked result collapse into that result's group (greedy, best first, so every group is led by
  its best member). The threshold is the one ``viewfinder dupes`` uses (``search.dupes.DEFAULT_THRESHOLD``,
  chosen there on real transformations of real images): a group in the results is what ``dupes``
  would call near-duplicates.
* ``sort_order``: ``relevance`` (score, best first), ``newest``/``oldest`` (capture date, else the file's
  modification time), ``modified`` (file time, newest first). Ties keep relevance order.
* With a sort other than relevance, the ``SORT_POOL`` best matches that pass the cutoff are ordered
  (or ``offset + k`` of them when that is more): a date sort of a whole library would be a listing, not
  a search.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timezone

import numpy as np

from search.dupes import DEFAULT_THRESHOLD
from search.errors import QueryError
from search.records import ImageRecord, Vectors

GROUP_THRESHOLD = DEFAULT_THRESHOLD
SORT_POOL = 500


def combine(vectors: Vectors, weights: Sequence[float]) -> Vectors:
    """(n, dim) unit vectors and their weights -> one unit vector; QueryError when they cancel out."""
    total = np.asarray(weights, dtype=np.float32) @ np.asarray(vectors, dtype=np.float32)
    norm = float(np.linalg.norm(total))
    if not np.isfinite(norm) or norm < 1e-6:
        raise QueryError("The query's terms cancel each other out: change a weight or remove a --not term.")
    return (total / norm).astype(np.float32)


def group_near_duplicates(rows: Vectors, threshold: float = GROUP_THRESHOLD) -> list[list[int]]:
    """Indices into ``rows`` (ranked best first) grouped: each group is [leader, members...] in rank order."""
    n = len(rows)
    if n == 0:
        return []
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    groups: dict[int, list[int]] = {}
    for i in range(n):
        leaders = [j for j in groups if sims[i, j] >= threshold]
        if leaders:
            lead = min(leaders)
            groups[lead].append(i)
        else:
            groups[i] = [i]
    return [groups[i] for i in sorted(groups)]


def sort_key_time(record: ImageRecord, *, capture_first: bool) -> float:
    if capture_first and record.taken_at is not None:  # EXIF time has no zone: read as UTC, like the file time
        return record.taken_at.replace(tzinfo=timezone.utc).timestamp()
    return record.mtime_ns / 1e9


def sort_order(records: Sequence[ImageRecord], sort: str) -> list[int]:
    """Positions of ``records`` (given in relevance order) in the requested order; stable."""
    positions = list(range(len(records)))
    if sort == "relevance":
        return positions
    if sort in ("newest", "oldest"):
        keys = [sort_key_time(r, capture_first=True) for r in records]
        return sorted(positions, key=lambda i: keys[i], reverse=(sort == "newest"))
    if sort == "modified":
        return sorted(positions, key=lambda i: records[i].mtime_ns, reverse=True)
    raise QueryError(f"Unknown sort '{sort}'.")
