"""Filtered search: the exact branch against the in-index branch (IDSelectorBitmap), by how many images
match, on an IVF-PQ library of CLIP-like vectors. It is the evidence for ``search.selection.EXACT_BELOW``.

    python bench/filter.py --images 100000 --json

For each match count the same queries run both ways (``filtered_candidates`` with ``exact_below``
forced above and below the count), each followed by the exact re-rank as searches do; reported: p50
milliseconds of each, their ratio, and the in-index branch's recall@k against the exact branch (which
is the ground truth: it scores every match).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ClipLike, build_vector_library, emit, log, machine, percentile_ms

from search import ann, selection
from search.library import Library

COUNTS = (100, 1_000, 4_096, 10_000, 50_000)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="viewfinder-bench-filter-"))
    try:
        gen = ClipLike(dim=512)
        log(f"writing a library of {args.images:,} vectors")
        build_vector_library(home, gen.base(args.images), model_id="bench", dim=gen.dim)
        library = Library.open(home)
        params = library.index_params()
        queries = gen.queries(args.queries)
        rng = np.random.default_rng(7)
        rows = []
        for count in (c for c in COUNTS if c < args.images):
            allowed = np.zeros(library.snapshot.vector_rows, dtype=bool)
            allowed[rng.choice(args.images, size=count, replace=False)] = True
            depth = max(params.rerank, 10 * args.k)
            exact_s, index_s, recalls = [], [], []
            for query in queries:
                q = query.reshape(1, -1).astype(np.float32)
                t0 = time.perf_counter()
                truth, _ = ann.rerank(q, selection.filtered_candidates(library.index, params, q, depth, allowed, exact_below=count), library.vectors, allowed, args.k)
                t1 = time.perf_counter()
                found, _ = ann.rerank(q, selection.filtered_candidates(library.index, params, q, depth, allowed, exact_below=0), library.vectors, allowed, args.k)
                t2 = time.perf_counter()
                exact_s.append(t1 - t0)
                index_s.append(t2 - t1)
                recalls.append(len(set(truth.tolist()) & set(found.tolist())) / max(1, len(truth)))
            row = {
                "matches": count,
                "exact_p50_ms": percentile_ms(exact_s, 50),
                "in_index_p50_ms": percentile_ms(index_s, 50),
                "in_index_recall": round(float(np.mean(recalls)), 4),
            }
            row["exact_over_in_index"] = round(row["exact_p50_ms"] / max(row["in_index_p50_ms"], 1e-6), 2)
            rows.append(row)
            log(str(row))
        result: dict[str, Any] = {"bench": "filter", "images": args.images, "k": args.k, "index": params.to_json(),
                                  "exact_below": selection.EXACT_BELOW, "rows": rows, "machine": machine()}
    finally:
        shutil.rmtree(home, ignore_errors=True)
    emit(result, args.json)


if __name__ == "__main__":
    main()
