"""Duplicates benchmark: ``search.dupes.find_clusters`` over a whole library, with planted near-duplicates.

    python bench/dupes.py --n 1000000 --json      # the issue's figure (library build ~3 min + the pass)
    python bench/dupes.py --n 100000 --json       # quick

1. ``--n`` CLIP-like vectors (``common.ClipLike``) with ``--groups`` planted groups of near-duplicates:
   an original and 1-4 copies ``normalise(v + s·g/√d)`` (g Gaussian, s uniform in [0.05, 0.33]: cosine
   0.95-0.999 to the original), written at random rows into a real library (``LibraryWriter``, made-up
   catalog rows, the index built by the rule: IVF-PQ at 1M).
2. ``find_clusters(library, DEFAULT_THRESHOLD)`` as ``viewfinder dupes`` runs it (range searches on the
   library's index, exact re-score, connected components, catalog rows of every member): ``seconds``.
3. Planted recall: the planted pairs (original-copy and copy-copy) that end up in one cluster.
   Found pairs are exact by construction (re-scored from the stored vectors); ``unplanted_clusters``
   counts clusters that hold no planted image (pairs of the synthetic data that really are that close).
4. Baseline, same run: an exact ``IndexFlatIP`` range search of ``--baseline-queries`` vectors against
   all n (what a scan without the index costs), extrapolated to n queries: ``baseline_s_extrapolated``
   and ``speedup`` = that / ``seconds``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ClipLike, build_vector_library, emit, log, machine


def planted(n: int, dim: int, groups: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(the library's vectors in chunks, the planted groups as arrays of row ids)."""
    base = np.concatenate(list(ClipLike(dim=dim, seed=seed).base(n)))
    rng = np.random.default_rng(seed + 7)
    sizes = rng.integers(2, 6, size=groups)  # original + 1..4 copies
    rows = rng.choice(n, size=int(sizes.sum()), replace=False)
    out, start = [], 0
    for size in sizes:
        ids = rows[start : start + size]
        start += size
        original = base[ids[0]]
        for copy in ids[1:]:
            s = rng.uniform(0.05, 0.33)
            v = original + s * rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
            base[copy] = v / np.linalg.norm(v)
        out.append(np.sort(ids))
    return [base[i : i + 50_000] for i in range(0, n, 50_000)], out


def pair_set(groups: list[np.ndarray]) -> set[tuple[int, int]]:
    pairs: set[tuple[int, int]] = set()
    for g in groups:
        ids = sorted(int(i) for i in g)
        pairs.update((a, b) for i, a in enumerate(ids) for b in ids[i + 1 :])
    return pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Near-duplicate clusters over a whole library, planted duplicates.")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--groups", type=int, default=10_000, help="planted groups of near-duplicates")
    parser.add_argument("--baseline-queries", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=1338)
    parser.add_argument("--home", type=Path, help="library folder to build and keep, or reuse (default: a temporary one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import faiss

    from search.dupes import DEFAULT_THRESHOLD, find_clusters
    from search.library import Library

    home = args.home or Path(tempfile.mkdtemp(prefix="vf-bench-dupes-"))
    try:
        chunks, groups = planted(args.n, args.dim, args.groups, args.seed)
        stages: dict[str, float] = {}
        if (home / "catalog.sqlite").is_file():  # a --home kept from an earlier run with the same arguments
            log(f"reusing the library in {home}")
        else:
            log(f"building a library of {args.n} vectors with {len(groups)} planted groups in {home}")
            stages = build_vector_library(home, iter(chunks), model_id="bench/synthetic", dim=args.dim)
        library = Library.open(home)
        started = time.perf_counter()
        library.index  # noqa: B018  (loaded before the clock: a search would load it too)
        load_s = time.perf_counter() - started
        log("finding duplicates")
        started = time.perf_counter()
        clusters = find_clusters(library, DEFAULT_THRESHOLD)
        seconds = time.perf_counter() - started

        cluster_of: dict[int, int] = {}
        for number, cluster in enumerate(clusters):
            for member in cluster.members:
                assert member.record.faiss_id is not None
                cluster_of[member.record.faiss_id] = number
        truth = pair_set(groups)
        found = sum(1 for a, b in truth if a in cluster_of and cluster_of.get(a) == cluster_of.get(b))
        planted_ids = {int(i) for g in groups for i in g}
        unplanted = sum(1 for c in clusters if not any(m.record.faiss_id in planted_ids for m in c.members))

        log("baseline: exact range search of a sample against all vectors")
        flat = faiss.IndexFlatIP(args.dim)
        for chunk in chunks:
            flat.add(np.ascontiguousarray(chunk, dtype=np.float32))
        sample = np.concatenate(chunks)[np.random.default_rng(0).choice(args.n, args.baseline_queries, replace=False)]
        started = time.perf_counter()
        flat.range_search(np.ascontiguousarray(sample), DEFAULT_THRESHOLD)
        baseline_s = (time.perf_counter() - started) * args.n / args.baseline_queries
        result = {
            "bench": "dupes",
            "n": args.n,
            "dim": args.dim,
            "threshold": DEFAULT_THRESHOLD,
            "index": library.index_params().to_json(),
            "seconds": round(seconds, 2),
            "vectors_per_s": round(args.n / seconds),
            "index_load_s": round(load_s, 2),
            "clusters": len(clusters),
            "planted_groups": len(groups),
            "planted_pairs": len(truth),
            "planted_pair_recall": round(found / max(1, len(truth)), 4),
            "unplanted_clusters": unplanted,
            "baseline": f"exact IndexFlatIP range search, {args.baseline_queries} queries, extrapolated to n",
            "baseline_s_extrapolated": round(baseline_s, 1),
            "speedup": round(baseline_s / seconds, 1),
            "library_build_s": {k: round(v, 1) for k, v in stages.items()},
            "machine": machine(),
        }
        library.close()
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)
    emit(result, args.json)


if __name__ == "__main__":
    main()
