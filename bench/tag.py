"""Tag benchmark: ``viewfinder tag``'s work on 1M images x 1,000 labels, against the bare matrix product.

    python bench/tag.py --n 1000000 --labels 1000 --json                 # builds a library first (~3 min)
    python bench/tag.py --home /tmp/lib-from-bench-dupes --json          # reuses one (bench/dupes.py --home)

1. A real library of ``--n`` CLIP-like vectors (``common.ClipLike``), built through ``LibraryWriter``
   unless ``--home`` already holds one.
2. ``--labels`` label vectors: CLIP-like vectors of another stream (near the same topics, as text
   vectors of real labels are near the images they describe); the rule is the CLIP softmax with a
   logit scale of 100 (openai/clip-vit-base-patch32's) and ``search.tags.DEFAULT_THRESHOLD``.
3. Baseline, same run: the bare numpy product of every stored vector (read from the memory map,
   float16 -> float32) with the label matrix, in the same blocks (``baseline_s``).
4. ``scoring_s``: ``search.tags.tag_vectors`` alone (product + softmax + threshold/top, nothing written).
5. ``seconds``: ``indexer.tagging.tag_library`` in one catalog transaction, as ``viewfinder tag`` runs it
   (label set stored, every (image, label, score) row written to SQLite, counts per label read back).
   ``ratio`` = seconds / baseline_s; ``images_per_s`` = n / seconds.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ClipLike, build_vector_library, emit, log, machine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Zero-shot tagging of a whole library against the bare matrix product.")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--top", type=int, default=None)
    parser.add_argument("--scale", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=1338)
    parser.add_argument("--home", type=Path, help="library folder to build and keep, or reuse (default: a temporary one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from indexer.tagging import tag_library
    from indexer.writer import LibraryWriter
    from search.snapshot import read_snapshot
    from search.tags import BLOCK, DEFAULT_THRESHOLD, TagRule, tag_vectors
    from search.vectors import open_vectors

    home = args.home or Path(tempfile.mkdtemp(prefix="vf-bench-tag-"))
    try:
        stages: dict[str, float] = {}
        if not (home / "catalog.sqlite").is_file():
            log(f"building a library of {args.n} vectors in {home}")
            stages = build_vector_library(home, ClipLike(dim=args.dim, seed=args.seed).base(args.n), model_id="bench/synthetic", dim=args.dim)
        labels = np.concatenate(list(ClipLike(dim=args.dim, seed=args.seed).batches(args.labels, stream=2, noise_scale=1.5)))
        names = [f"label {i}" for i in range(args.labels)]
        rule = TagRule(scale=args.scale, threshold=DEFAULT_THRESHOLD, top=args.top)
        with LibraryWriter.open(home) as writer:
            assert writer.dim is not None
            vectors = open_vectors(writer.vectors_path, writer.dim, writer.meta["dtype"], writer.vector_rows)
            live = read_snapshot(writer.engine).live
            n = len(live)
            log(f"baseline: bare matrix product of {n} x {args.labels}")
            started = time.perf_counter()
            for start in range(0, n, BLOCK):
                chunk = live[start : start + BLOCK]
                np.asarray(vectors[chunk[0] : chunk[-1] + 1], dtype=np.float32) @ labels.T
            baseline_s = time.perf_counter() - started
            log("scoring alone")
            started = time.perf_counter()
            kept = sum(len(t.faiss_ids) for t in tag_vectors(vectors, live, labels, rule))
            scoring_s = time.perf_counter() - started
            log("tag_library: score + write every row + counts, one transaction")
            started = time.perf_counter()
            with writer.session() as session, session.begin():
                report = tag_library(session, vectors, live, names, labels, rule, {"model": "bench/synthetic"})
            seconds = time.perf_counter() - started
        result = {
            "bench": "tag",
            "n": n,
            "labels": args.labels,
            "dim": args.dim,
            "rule": rule.to_json(),
            "seconds": round(seconds, 1),
            "images_per_s": round(n / seconds),
            "baseline": "bare numpy float32 matmul of the stored vectors with the labels, same blocks",
            "baseline_s": round(baseline_s, 1),
            "ratio": round(seconds / baseline_s, 2),
            "scoring_s": round(scoring_s, 1),
            "write_and_count_s": round(seconds - scoring_s, 1),
            "tags_written": report.tags,
            "tags_per_image": round(report.tags / max(1, n), 2),
            "images_tagged": report.tagged,
            "labels_used": int((np.array([c for _, c in report.counts]) > 0).sum()),
            "kept_in_scoring_pass": kept,
            "library_build_s": {k: round(v, 1) for k, v in stages.items()},
            "machine": machine(),
        }
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)
    emit(result, args.json)


if __name__ == "__main__":
    main()
