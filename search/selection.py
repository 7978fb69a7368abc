"""Candidates for a filtered search: a filter must never cost results.

``allowed`` is a boolean mask over FAISS ids (the filter's matches among the snapshot's live rows). The
rule (``filtered_candidates``), chosen by measured cost (docs/BENCHMARKS.md, "Filtered search"):

* A flat index: FAISS's exact search restricted to the allowed ids (``IDSelectorBitmap``): exact.
* IVF-PQ and at most ``EXACT_BELOW`` allowed rows: every allowed row is a candidate, so the exact
  re-rank scores all of them: exactly the order of an exact scan over the matches. Gathering and
  scoring a stored float16 row costs 2-6 µs here (bench/filter.py), so 2,048 rows stay near 10 ms;
  above that the in-index branch is several times faster at recall@20 >= 0.99.
* IVF-PQ and more allowed rows: the filter runs inside the IVF search (``IDSelectorBitmap``), so every
  candidate matches. The lists probed grow as the filter narrows: ``nprobe / share`` (share = matches /
  images), so the probed lists hold about as many matches as an unfiltered search scores candidates;
  the best matches of a narrow filter lie further from the query than its unfiltered neighbours, and a
  fixed nprobe measured recall@20 0.94 at 4 % (bench/filter.py). Then ``nprobe`` doubles until the
  probed lists hold the re-rank depth of matches (or every list is probed), so a filter with k matches
  always returns k results.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from search.records import IndexParams, Vectors

EXACT_BELOW = 2048


def _selector(allowed: np.ndarray) -> tuple[faiss.IDSelector, np.ndarray]:
    bits = np.packbits(allowed.astype(bool), bitorder="little")
    return faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits)), bits  # bits must outlive the selector


def filtered_candidates(
    index: faiss.Index, params: IndexParams, query: Vectors, depth: int, allowed: np.ndarray, *, exact_below: int = EXACT_BELOW
) -> np.ndarray:
    """Ids (no -1) of up to ``depth`` candidates among the allowed rows for one (1, dim) query."""
    matches = int(allowed.sum())
    if matches == 0:
        return np.zeros(0, dtype=np.int64)
    if params.kind != "ivfpq":
        selector, _bits = _selector(allowed)
        _, ids = index.search(query, max(1, min(depth, matches)), params=faiss.SearchParameters(sel=selector))
        return ids[0][ids[0] >= 0]
    if matches <= exact_below:
        return np.flatnonzero(allowed)
    selector, _bits = _selector(allowed)
    want = min(depth, matches)
    nlist = faiss.extract_index_ivf(index).nlist
    share = matches / max(1, index.ntotal)
    nprobe = min(nlist, max(1, math.ceil(params.nprobe / max(share, 1e-9))))
    while True:
        _, ids = index.search(query, want, params=faiss.SearchParametersIVF(sel=selector, nprobe=nprobe))
        found = ids[0][ids[0] >= 0]
        if len(found) >= want or nprobe >= nlist:
            return found
        nprobe = min(nlist, nprobe * 2)
