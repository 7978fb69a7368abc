"""ANN benchmark: the library's real search path (IVF-PQ by the rule + exact re-rank) against exact search.

    python bench/ann.py --n 1000000 --dim 512 --json        # the issue's figure (~10 min on 2 cores)
    python bench/ann.py --n 100000 --json                   # quick
    python bench/ann.py --n 100000 --dim 64 --concentration 0.96 --json   # clip art, scans, bursts
    python bench/ann.py --n 10000000 --home H --write-only --json     # 10M in two steps: write (~1 h here) ...
    python bench/ann.py --n 10000000 --home H --queries 500 --truth-queries 200 --no-check --json  # ... build + query

1. ``--n`` CLIP-like vectors (``common.ClipLike``: clustered, unit-norm, anisotropic; not uniform noise)
   are written into a new library through ``LibraryWriter`` in commits of 50k, with made-up catalog rows;
   ``finish(check=False)`` builds the index by ``search.ann``'s size/dimension rule alone (``build_s``).
   ``--concentration C`` makes the collection tightly packed: the shared direction is lengthened until
   the mean pairwise cosine is C (0.5 is about ClipLike's default, 0.87 and 0.96 are clip art and the like).
2. Two query sets: image-like (``ClipLike.queries``) and text-like (``search.recall.text_like``: the same
   kind of queries moved along a modality direction, a seeded random one here as no model is at hand),
   whose top-1 cosine is far lower, as CLIP text-image pairs are (``data.query_top1_cos``).
   Exact ground truth: an exact inner-product scan over the library's stored (float16) vectors, streamed a
   chunk at a time (faiss ``knn_ground_truth``; 10M float32 vectors would not fit in memory), for the first
   ``--truth-queries`` of each set; ``exact_qps`` is a flat index asked one image-like query at a time, as
   a user asks, timed on the first ``EXACT_SLICE`` vectors and scaled to n.
   Nothing holds all n vectors: they are generated and committed 50k at a time.
3. ``before``: a fresh process (so nothing the benchmark holds counts) opens the library, loads the index
   and asks the queries one at a time through ``Library.search_vector(q, k)``: ``qps`` and
   ``recall_at_10`` against exact, for each set.
4. The recall self-check (``LibraryWriter.check``: what every build runs, see ``search.ann``) with the
   same modality direction, timed (``self_check.seconds``, the cost asked about at 1M), then ``after``:
   step 3 again. The top-level ``recall_at_10``/``qps``/``speedup`` and ``bytes_per_vector`` (growth of
   the query process's anonymous resident memory, RssAnon: the mmapped full vectors are file pages and
   do not count, from before ``Library.open`` to after the queries, divided by n) are those of ``after``.
   ``resident_mb``: RssAnon at each step (before and after open, after the index load, after all the
   queries), the peak RSS and the file pages mapped (page cache, not counted as resident); ``disk_bytes``:
   every file of the library. ``--no-check`` skips step 4 (the rule's index alone; ``--sweep`` then runs
   on it).

Targets: recall@10 >= 0.98 for both query sets after the self-check, qps >= 20 x exact_qps, <= 80 bytes
per vector resident.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np
from common import (
    ClipLike,
    build_vector_library,
    emit,
    log,
    machine,
    memory_status,
    percentile_ms,
    timed,
    vector_stats,
)

MODEL_ID = "bench:clip-like-synthetic"
TARGETS = {"recall_at_10": 0.98, "speedup": 20.0, "bytes_per_vector": 80.0}
EXACT_SLICE = 1_000_000  # vectors the one-at-a-time exact search is timed on (scaled to n above it)


def stored_chunks(home: Path, rows: int = 262_144) -> Iterator[np.ndarray]:
    """The library's stored vectors as float32, in file order, a chunk at a time (never all in memory)."""
    from search.library import Library

    library = Library.open(home)
    try:
        vectors = library.vectors
        for start in range(0, len(vectors), rows):
            yield np.asarray(vectors[start : start + rows], dtype=np.float32)
    finally:
        library.close()


def exact_search(home: Path, queries: np.ndarray, k: int, single: int) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Ground truth for ``queries`` (batched, streamed over the stored vectors) and the QPS of one-at-a-time
    flat search over ``single`` of them, timed on the first ``EXACT_SLICE`` vectors and scaled to n (a flat
    index of every vector would not fit in memory at 10M); returns the slice size too."""
    import faiss
    from faiss.contrib.exhaustive_search import knn_ground_truth

    scores, ids = knn_ground_truth(queries, stored_chunks(home), k, metric_type=faiss.METRIC_INNER_PRODUCT)
    first = next(stored_chunks(home, EXACT_SLICE))
    index = faiss.IndexFlatIP(first.shape[1])
    index.add(first)
    index.search(queries[:1], k)  # warm
    started = time.perf_counter()
    for q in queries[:single]:
        index.search(q.reshape(1, -1), k)
    qps = single / (time.perf_counter() - started)
    return ids, scores, qps * len(first) / _rows(home), len(first)


def _rows(home: Path) -> int:
    from search.library import Library

    library = Library.open(home)
    try:
        return library.snapshot.vector_rows
    finally:
        library.close()


def query_process(home: str, queries: np.ndarray, k: int, sweep: list[tuple[int, int]]) -> dict[str, Any]:
    """Runs in a fresh process: open, load, ask one query at a time; report latencies, hits and memory."""
    import faiss

    from search import ann
    from search.library import Library

    stages: dict[str, float] = {}
    original_candidates, original_rerank = ann.candidates, ann.rerank
    original_records = Library.records

    def candidates(*args: Any, **kwargs: Any) -> np.ndarray:
        with timed(stages, "candidates_s"):
            return original_candidates(*args, **kwargs)

    def rerank(*args: Any, **kwargs: Any) -> Any:
        with timed(stages, "rerank_s"):
            return original_rerank(*args, **kwargs)

    def records(self: Library, ids: np.ndarray) -> Any:
        with timed(stages, "catalog_s"):
            return original_records(self, ids)

    ann.candidates, ann.rerank, Library.records = candidates, rerank, records  # stage timers, nothing else
    before = memory_status()
    steps = {}
    started = time.perf_counter()
    library = Library.open(Path(home))
    open_s = time.perf_counter() - started
    steps["open"] = memory_status()["RssAnon"]
    started = time.perf_counter()
    index = library.index
    steps["index"] = memory_status()["RssAnon"]
    _ = library.allowed, library.vectors
    load_s = time.perf_counter() - started
    steps["allowed_mask"] = memory_status()["RssAnon"]
    library.search_vector(queries[0], k)  # first query: page faults of the coarse quantizer etc.
    steps["first_query"] = memory_status()["RssAnon"]
    stages.clear()

    found = np.full((len(queries), k), -1, dtype=np.int64)
    latencies = []
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        hits = library.search_vector(q, k)
        latencies.append(time.perf_counter() - t0)
        found[i, : len(hits)] = [h.record.faiss_id for h in hits]
    after = memory_status()
    default_stages = dict(stages)  # the sweep below adds to ``stages``; report the default path's alone

    params = library.index_params()
    ivf = faiss.extract_index_ivf(index) if params.kind == "ivfpq" else None
    parts = {"faiss_ids_and_codes": 0, "coarse_centroids": 0}
    if ivf is not None:
        parts["faiss_ids_and_codes"] = int(index.ntotal * (ivf.code_size + 8))
        parts["coarse_centroids"] = int(ivf.nlist * ivf.d * 4)
    parts["snapshot_live_ids"] = int(library.snapshot.live.nbytes)
    parts["allowed_mask"] = int(library.allowed.nbytes)

    swept = []
    for nprobe, depth in sweep:  # other settings on the same open library: data for tuning the rule
        tuned = replace(params, nprobe=nprobe, rerank=depth)
        library.index_params = lambda tuned=tuned: tuned  # type: ignore[method-assign]
        got = np.full((len(queries), k), -1, dtype=np.int64)
        took = []
        t0 = time.perf_counter()
        for i, q in enumerate(queries):
            t1 = time.perf_counter()
            hits = library.search_vector(q, k)
            took.append(time.perf_counter() - t1)
            got[i, : len(hits)] = [h.record.faiss_id for h in hits]
        swept.append({"nprobe": nprobe, "rerank": depth, "seconds": time.perf_counter() - t0, "found": got, "latencies": np.asarray(took)})
    library.close()
    return {
        "found": found,
        "latencies": np.asarray(latencies),
        "stages": default_stages,
        "open_s": open_s,
        "load_s": load_s,
        "rss_before": before,
        "rss_after": after,
        "rss_steps": steps,
        "params": params.to_json(),
        "parts": parts,
        "sweep": swept,
    }


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


def growth_by_step(out: dict[str, Any], n: int) -> dict[str, float]:
    """RssAnon growth per vector at each step of the query process (open, index load, ..., all queries)."""
    last, growth = out["rss_before"]["RssAnon"], {}
    for step, rss in [*out["rss_steps"].items(), ("queries", out["rss_after"]["RssAnon"])]:
        growth[step] = round((rss - last) / n, 1)
        last = rss
    return growth


def concentrated(gen: ClipLike, target: float, sample: int = 3000) -> ClipLike:
    """``gen`` with its shared direction lengthened until the mean pairwise cosine is ``target`` (bisection)."""
    from dataclasses import replace as with_

    def mean_cos(shared: float) -> float:
        x = next(with_(gen, shared=shared).batches(sample, stream=7))
        s = x @ x.T
        return float(s[~np.eye(len(s), dtype=bool)].mean())

    lo, hi = 0.0, 64.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_cos(mid) < target else (lo, mid)
    return with_(gen, shared=round((lo + hi) / 2, 4))


def modality_direction(dim: int, seed: int) -> np.ndarray:
    """A seeded random unit direction: the modality gap when no model is at hand."""
    d = np.random.default_rng([seed, 99]).standard_normal(dim)
    return (d / np.linalg.norm(d)).astype(np.float32)


def split_result(out: dict[str, Any], truth: np.ndarray, n_image: int, judged: int) -> dict[str, dict[str, float]]:
    """recall@10 (on the first ``judged`` queries of each set, those with ground truth) and qps (all of them)
    of each query set from one query process's answers (image-like first)."""
    parts = {"image": slice(0, n_image), "text": slice(n_image, 2 * n_image)}
    return {
        name: {
            "recall_at_10": round(recall(out["found"][part][:judged], truth[i * judged : (i + 1) * judged]), 4),
            "qps": round(n_image / float(out["latencies"][part].sum()), 1),
        }
        for i, (name, part) in enumerate(parts.items())
    }


def override_rule(overrides: dict[str, int]) -> None:
    """Wrap ``search.ann.choose_index_params`` so that IVF-PQ builds use the given fields (an experiment)."""
    from search import ann

    rule = ann.choose_index_params

    def choose(n: int, dim: int, **kwargs: Any) -> Any:
        params = rule(n, dim, **kwargs)
        return replace(params, **overrides) if params.kind == "ivfpq" else params

    ann.choose_index_params = choose


def parse_sweep(text: str) -> list[tuple[int, int]]:
    pairs = []
    for item in filter(None, text.split(",")):
        nprobe, _, depth = item.partition(":")
        pairs.append((int(nprobe), int(depth or 200)))
    return pairs


def written(home: Path, n: int, dim: int) -> bool:
    """Whether ``home`` holds a bench library of exactly ``n`` vectors of dimension ``dim`` (a --write-only run)."""
    from search.library import Library

    if not (home / "catalog.sqlite").is_file():
        return False
    library = Library.open(home)
    try:
        return library.model == MODEL_ID and library.dim == dim and library.snapshot.vector_rows == n
    finally:
        library.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Recall and speed of the library's IVF-PQ search against exact search.")
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the library")
    parser.add_argument("--dim", type=int, default=512, help="vector dimension (64: a small model)")
    parser.add_argument("--concentration", type=float, help="mean pairwise cosine of the collection, e.g. 0.5, 0.87, 0.96")
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall and qps")
    parser.add_argument("--truth-queries", type=int, help="queries of each set that recall is measured on (default: all)")
    parser.add_argument("--exact-queries", type=int, default=50, help="queries timed on the flat index")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1338)
    parser.add_argument("--sweep", default="", help="extra NPROBE:RERANK settings to try, e.g. 64:200,128:400")
    parser.add_argument(
        "--params",
        default="",
        help="experiment: override fields of the rule's choice for the build, e.g. m=32,nprobe=64,rerank=400 "
        "(search.ann.choose_index_params is wrapped in this process; the project's code is not changed)",
    )
    parser.add_argument("--home", type=Path, help="library folder (default: a temporary one, removed after)")
    parser.add_argument(
        "--write-only", action="store_true",
        help="only write the vectors and catalog rows into --home (no index); a later run with the same --home, "
        "--n, --dim and --seed reuses them and builds the index (the 10M run in two steps)",
    )
    parser.add_argument("--ondisk-above", type=int, help="the rule's on-disk threshold (default search.ann.ONDISK_ABOVE)")
    parser.add_argument("--no-check", action="store_true", help="skip the recall self-check (the rule's index alone)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    import faiss

    overrides = {k: int(v) for k, _, v in (item.partition("=") for item in filter(None, args.params.split(",")))}
    if overrides:
        override_rule(overrides)
    started = time.perf_counter()
    gen = ClipLike(dim=args.dim, seed=args.seed)
    if args.concentration is not None:
        gen = concentrated(gen, args.concentration)
    direction = modality_direction(args.dim, args.seed)
    home = args.home or Path(tempfile.mkdtemp(prefix="viewfinder-bench-ann-"))
    reused = written(home, args.n, args.dim)
    if not reused and home.exists() and any(home.iterdir()):
        raise SystemExit(f"{home} is not empty and holds no {args.n:,} x {args.dim} bench library; pass a new --home")
    try:
        stages: dict[str, float] = {}
        if reused:
            log(f"reusing the {args.n:,} vectors written into {home} by an earlier --write-only run")
        else:
            log(f"writing {args.n:,} CLIP-like vectors (dim {args.dim}) into {home} (commits of 50k)")
            stages = build_vector_library(home, gen.base(args.n), model_id=MODEL_ID, dim=args.dim, finish=False)
            log(f"written in {stages['commit_s']:.0f} s")
        if args.write_only:
            emit({"bench": "ann", "write_only": True, "n": args.n, "dim": args.dim, "home": str(home),
                  "catalog_commit_s": round(stages.get("commit_s", 0.0), 1)}, args.json)
            return
        from indexer.writer import LibraryWriter

        log("building the index by the rule alone")
        from search import ann

        ondisk_above = args.ondisk_above or ann.ONDISK_ABOVE
        with LibraryWriter.open(home, ondisk_above=ondisk_above) as writer, timed(stages, "index_build_s"):
            writer.finish(check=False)
        log(f"built in {stages['index_build_s']:.0f} s")
        from search import recall as self_check

        image_queries = gen.queries(args.queries)
        text_queries = self_check.text_like(next(gen.batches(args.queries, stream=2, noise_scale=gen.query_noise)), direction)
        queries = np.concatenate([image_queries, text_queries])

        log(f"exact ground truth over the stored vectors and one-at-a-time flat search ({args.exact_queries} queries)")
        n_q = len(image_queries)
        judged = min(n_q, args.truth_queries or n_q)
        truth, truth_scores, exact_qps, exact_slice = exact_search(
            home, np.concatenate([image_queries[:judged], text_queries[:judged]]), args.k, args.exact_queries
        )
        sample = next(stored_chunks(home, 4000))
        stats = vector_stats(sample, image_queries, truth_scores[:judged]) if args.k >= 10 else {}
        if args.k >= 10:
            stats["text_query_top1_cos"] = round(float(truth_scores[judged:, 0].mean()), 3)

        ctx = multiprocessing.get_context("spawn")
        log(f"before the self-check: Library.search_vector in a fresh process ({len(queries)} queries)")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            first = pool.submit(query_process, str(home), queries, args.k, parse_sweep(args.sweep) if args.no_check else []).result()
        checked, check_s, out = None, 0.0, first
        if not args.no_check:
            log("the recall self-check")
            with LibraryWriter.open(home, ondisk_above=ondisk_above) as writer:
                writer.set_modality_direction(direction)
                started_check = time.perf_counter()
                checked = writer.check()
                check_s = time.perf_counter() - started_check
            log(f"after the self-check: Library.search_vector in a fresh process ({len(queries)} queries)")
            with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                out = pool.submit(query_process, str(home), queries, args.k, parse_sweep(args.sweep)).result()
        files = {p.name: p.stat().st_size for p in sorted(home.iterdir()) if p.is_file()}
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)

    latencies = out["latencies"][:n_q]
    before, after = split_result(first, truth, n_q, judged), split_result(out, truth, n_q, judged)
    qps = after["image"]["qps"]
    resident = out["rss_after"]["RssAnon"] - out["rss_before"]["RssAnon"]
    result: dict[str, Any] = {
        "bench": "ann",
        "n": args.n,
        "dim": args.dim,
        "concentration": args.concentration,
        "k": args.k,
        "queries": n_q,
        "queries_with_ground_truth": judged,
        "recall_at_10": after["image"]["recall_at_10"],
        "text_recall_at_10": after["text"]["recall_at_10"],
        "qps": qps,
        "exact_qps": round(exact_qps, 2),
        "speedup": round(qps / exact_qps, 1),
        "before": before,
        "after": after,
        "rule_index": first["params"],
        "self_check": None if checked is None else {
            "seconds": round(check_s, 2),
            "recall_before": round(checked.before.recall, 4),
            "recall_after": round(checked.recall, 4),
            "rebuilds": checked.rebuilds,
            "steps": len(checked.steps),
        },
        "p50_ms": percentile_ms(latencies, 50),
        "p99_ms": percentile_ms(latencies, 99),
        "stage_ms_per_query": {k.removesuffix("_s"): round(v * 1000 / len(queries), 3) for k, v in out["stages"].items()},
        "build_s": round(stages["index_build_s"], 1),
        "catalog_commit_s": round(stages["commit_s"], 1) if "commit_s" in stages else None,
        "reused_written_library": reused,
        "exact_qps_timed_on": exact_slice,
        "resident_mb": {
            "before_open": round(out["rss_before"]["RssAnon"] / 2**20, 1),
            "after_open": round(out["rss_steps"]["open"] / 2**20, 1),
            "after_index_load": round(out["rss_steps"]["index"] / 2**20, 1),
            "after_queries": round(out["rss_after"]["RssAnon"] / 2**20, 1),
            "peak_rss": round(out["rss_after"]["VmHWM"] / 2**20, 1),
            "file_pages_after_queries": round(out["rss_after"]["RssFile"] / 2**20, 1),
        },
        "disk_bytes": files,
        "open_s": round(out["open_s"], 2),
        "index_load_s": round(out["load_s"], 2),
        "bytes_per_vector": round(resident / args.n, 1),
        "bytes_per_vector_parts": {k: round(v / args.n, 2) for k, v in out["parts"].items()},
        "bytes_per_vector_growth_by_step": growth_by_step(out, args.n),
        "index_file_bytes_per_vector": round(sum(v for k, v in files.items() if k.startswith("index-")) / args.n, 1),
        "index": out["params"],
        "rule_overrides": overrides,
        "data": {"generator": "common.ClipLike", **{k: v for k, v in vars(gen).items() if k != "dim"}, **stats},
        "sweep": [
            {
                "nprobe": s["nprobe"],
                "rerank": s["rerank"],
                "recall_at_10": round(recall(s["found"][:judged], truth[:judged]), 4),
                "text_recall_at_10": round(recall(s["found"][n_q : n_q + judged], truth[judged:]), 4),
                "qps": round(len(queries) / s["seconds"], 1),
                "p50_ms": percentile_ms(s["latencies"], 50),
                "p99_ms": percentile_ms(s["latencies"], 99),
            }
            for s in out["sweep"]
        ],
        "machine": machine() | {"faiss": faiss.__version__},
        "seconds": round(time.perf_counter() - started, 1),
    }
    result["meets_target"] = {
        "recall_at_10": min(result["recall_at_10"], result["text_recall_at_10"]) >= TARGETS["recall_at_10"],
        "speedup": result["speedup"] >= TARGETS["speedup"],
        "bytes_per_vector": result["bytes_per_vector"] <= TARGETS["bytes_per_vector"],
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
