"""What the recall self-check's measurement costs on an existing library, apart from any rebuild.

    python bench/ann.py --n 1000000 --home /tmp/vf-bench/ann1m --no-check --json   # once: a 1M library
    python bench/check_cost.py /tmp/vf-bench/ann1m --json

Times the two parts of one ``search.recall.tune`` measurement on the library's own index: the exact
ground truth of its seeded query sets (image-like, and text-like along the library's modality direction,
or a seeded random one when the library has none), and one step (every query through the index and the
exact re-rank, as searches run). A full check is the ground truth once plus one step per setting tried,
plus a build per finer-codes step (docs/BENCHMARKS.md, "ANN self-check").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import emit, machine  # type: ignore[import-not-found]

from search import ann, recall
from search.library import Library


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The recall self-check's measurement cost on a library.")
    parser.add_argument("home", type=Path, help="library folder (bench/ann.py --home ... --no-check makes one)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    library = Library.open(args.home)
    params, index = library.index_params(), library.index
    vectors, live = library.vectors, library.snapshot.live
    stored = library.snapshot.meta.get("modality_direction")
    direction = np.asarray(stored if stored is not None else np.random.default_rng(0).normal(size=library.dim), dtype=np.float32)
    started = time.perf_counter()
    meter = recall._Meter(vectors, live, recall.check_queries(vectors, live, direction), ann.CHECK_K)
    truth_s = time.perf_counter() - started
    started = time.perf_counter()
    step = meter(index, params)
    step_s = time.perf_counter() - started
    library.close()
    emit(
        {
            "bench": "check_cost",
            "n": int(len(live)),
            "queries_per_set": ann.CHECK_QUERIES,
            "ground_truth_s": round(truth_s, 2),
            "one_step_s": round(step_s, 2),
            "index": params.to_json(),
            "step_recall": {"image": step.image, "text": step.text},
            "machine": machine(),
        },
        args.json,
    )


if __name__ == "__main__":
    main()
