"""Query benchmark: end-to-end text query latency on a library of N images, next to the text encoder alone.

    python bench/checkpoint.py /tmp/vitb32                      # once: random ViT-B/32 weights
    python bench/query.py --model /tmp/vitb32 --images 100000 --json
    python bench/query.py --model /tmp/vitb32 --images 20000 --json   # quick

The library holds ``--images`` CLIP-like vectors (``common.ClipLike``) with made-up catalog rows, written
through ``LibraryWriter`` and indexed by the rule, as ``bench/ann.py`` does: embedding 100k real photos
with a ViT-B/32 on 2 CPU cores would take hours and would not change the search's speed.

Each query text is timed three ways, one after the other in the same loop (same machine load):

* ``encode``: ``Encoder.encode_text([text])`` (tokenizer + text tower + normalise): the floor;
* ``end to end``: ``Searcher.search(text, k)``: encode + ``Library.search_vector`` (IVF-PQ or flat
  candidates, exact re-rank from the mmapped vectors, catalog rows for the hits);
* ``search``: ``Library.search_vector(vector, k)`` alone, with the vector encoded before.

``end to end`` reads the text as typed (the default), as the encoder alone does; the text cache is cleared
before every query so each one pays its encoding. Two more cases, in the same loop:

* ``ensemble``: each short (1-3 word) query through its prompt ensemble (``search/prompts.py``: every
  template in one batch), what ``--ensemble`` costs such texts; its p50 and its ratio to ``encode`` of
  the same texts.
* ``filtered``: ``Searcher.run`` with a 1 % folder filter (one folder of the made-up library), search +
  re-rank + catalog with the vector encoded before (the filter's mask is computed once per snapshot and
  reused, as paging does; its first computation is reported on its own).

``--cold [--runs N]``: whole ``viewfinder search``/``similar``/``info`` processes instead, against Python +
torch + the model load in the same rounds (``bench/cli_cold.py``, which holds that logic and its
targets); ``--backend onnx|openvino`` passes to the queries, torch leaves the CLI's own choice.

Targets: p50 <= 1.15 x encode p50; search (+ re-rank + catalog) p50 <= 10 ms at 100k images, with and
without the 1 % filter.

``--backend onnx`` loads the model a second time on that backend (``search.backends``: ONNX Runtime;
its export is cached under ``--onnx-cache``) and times, in the same loop, its ``encode_text`` and its
end-to-end query next to the torch ones, the baseline: ``backend.encode_p50_ratio`` = its encode p50 /
torch's (target <= 0.7), with the lowest cosine between the two runtimes' query vectors.
The one-off costs a new process pays before its first answer are reported on their own.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Self

from common import (
    ClipLike,
    Patches,
    build_vector_library,
    emit,
    log,
    machine,
    percentile_ms,
    process_age_s,
)

from search import ann, prompts, querying
from search.encoder import Encoder, resolve_model_id
from search.filterspec import Filter
from search.library import Library
from search.query import Query, Term
from search.searcher import Searcher

PROCESS_START_S = process_age_s()
TARGET_RATIO = 1.15
TARGET_SEARCH_MS = 10.0
TARGET_BACKEND_RATIO = 0.7  # --backend onnx: its text encoding p50 / torch's

QUERIES = [
    "dog",
    "a dog running on the beach",
    "sunset over the mountains",
    "birthday cake with candles",
    "red car parked in the street at night",
    "two children playing in the snow",
    "a cup of coffee on a wooden table",
    "cat sleeping on a sofa",
    "fireworks",
    "old black and white photo of my grandparents",
    "whiteboard with handwritten notes from the meeting",
    "screenshot of a spreadsheet",
    "people hiking in a forest with autumn leaves",
    "close up of a flower with a bee",
    "the eiffel tower",
    "a plate of sushi",
    "wedding ceremony outdoors in the rain",
    "receipt",
    "passport photo page",
    "view from an airplane window above the clouds",
    "a man riding a bicycle across a bridge over a river in the city at sunset",
    "blurry photo of a concert stage with purple lights",
    "kitchen",
    "baby",
    "lake reflection with mountains and a small wooden boat",
    "christmas tree with presents underneath",
    "graduation",
    "a horse in a field",
    "the northern lights over a snowy landscape",
    "a diagram of a cell from a biology textbook",
]


class StageTimers(Patches):
    """Timers around the search path's stages (candidates, re-rank, catalog) for one ``with`` block."""

    def __enter__(self) -> Self:
        self.time(ann, "candidates", "candidates")
        self.time(ann, "rerank", "rerank")
        self.time(Library, "records", "catalog")
        return self


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Text query latency vs. the text encoder alone.")
    parser.add_argument("--model", required=True, help="checkpoint folder (bench/checkpoint.py makes one)")
    parser.add_argument("--images", type=int, default=100_000, help="vectors in the library")
    parser.add_argument("--queries", type=int, default=300, help="timed queries (texts are cycled)")
    parser.add_argument("--k", type=int, default=20, help="results per query (the CLI's default)")
    parser.add_argument("--home", type=Path, help="library folder (default: a temporary one, removed after)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx", "openvino"], help="also time this backend against torch")
    parser.add_argument("--onnx-cache", type=Path, default=Path(tempfile.gettempdir()) / "viewfinder-bench-onnx", help="where the export is kept")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "int8"], help="of the other backend (int8: onnx only)")
    parser.add_argument("--cold", action="store_true", help="whole `viewfinder` processes instead (bench/cli_cold.py's cases)")
    parser.add_argument("--runs", type=int, default=9, help="with --cold: runs of each case")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    if args.cold:  # one place for the cold-process logic: bench/cli_cold.py
        import cli_cold  # type: ignore[import-not-found]

        backend = [] if args.backend == "torch" else ["--backend", args.backend]  # torch: the CLI's default for one query
        cli_cold.main(["--model", args.model, "--runs", str(args.runs), *backend, *(["--json"] if args.json else [])])
        return

    home = args.home or Path(tempfile.mkdtemp(prefix="viewfinder-bench-query-"))
    model_id = resolve_model_id(args.model)
    try:
        log(f"writing a library of {args.images:,} CLIP-like vectors in {home}")
        gen = ClipLike(dim=512)
        build = build_vector_library(home, gen.base(args.images), model_id=model_id, dim=gen.dim)

        started = time.perf_counter()
        encoder = Encoder.load(args.model, args.device)
        model_load_s = time.perf_counter() - started
        started = time.perf_counter()
        library = Library.open(home, model=model_id)
        open_s = time.perf_counter() - started
        searcher = Searcher(library, encoder)
        started = time.perf_counter()
        searcher.search(QUERIES[0], args.k)  # loads the index, the vectors' map, the allowed mask
        first_query_s = time.perf_counter() - started
        for text in QUERIES[:5]:
            searcher.search(text, args.k)
        fast, fast_load_s = None, 0.0
        if args.backend != "torch":
            started = time.perf_counter()
            fast = Encoder.load(args.model, args.device, backend=args.backend, cache=args.onnx_cache, precision=args.precision)
            fast_load_s = time.perf_counter() - started
            if fast.backend != args.backend:
                raise SystemExit(f"--backend {args.backend} fell back to {fast.backend} (see the line above)")
            fast_searcher = Searcher(library, fast)
            for text in QUERIES[:5]:
                fast_searcher.search(text, args.k)
        fast_encode_s: list[float] = []
        fast_full_s: list[float] = []
        cosines: list[float] = []

        log(f"timing {args.queries} queries (k={args.k}): encode, end to end, search alone")
        encode_s, full_s, search_s, ensemble_s, filtered_s, short_encode_s = [], [], [], [], [], []
        filtered = Query(terms=(Term("text", "x"),), filter=Filter.make(folder="/bench/photos/0000"), k=args.k)
        first_mask_s = _timed(lambda: querying.run_vector(searcher, encoder.encode_text(["x"])[0], filtered))
        filter_share = int(querying._mask(library, filtered).sum()) / len(library)
        with StageTimers() as stages:
            for i in range(args.queries):
                text = QUERIES[i % len(QUERIES)]
                t0 = time.perf_counter()
                vector = encoder.encode_text([text])[0]
                t1 = time.perf_counter()
                searcher.texts.clear()
                hits = searcher.search(text, args.k)
                t2 = time.perf_counter()
                library.search_vector(vector, args.k)
                t3 = time.perf_counter()
                searcher.texts.clear()
                if prompts.is_short(text):  # only short texts get the ensemble; longer ones are read as typed
                    ensemble_s.append(_timed(lambda text=text: searcher.texts.vectors([text], ensemble=True)))
                    short_encode_s.append(t1 - t0)
                filtered_s.append(_timed(lambda vector=vector: querying.run_vector(searcher, vector, filtered)))
                encode_s.append(t1 - t0)
                full_s.append(t2 - t1)
                search_s.append(t3 - t2)
                if fast is not None:
                    t0 = time.perf_counter()
                    other = fast.encode_text([text])[0]
                    t1 = time.perf_counter()
                    fast_searcher.search(text, args.k)
                    fast_encode_s.append(t1 - t0)
                    fast_full_s.append(time.perf_counter() - t1)
                    cosines.append(float(other @ vector))
                assert len(hits) == args.k
        params = library.index_params()
        library.close()
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)

    p50, encode_p50, search_p50 = (percentile_ms(s, 50) for s in (full_s, encode_s, search_s))
    result: dict[str, Any] = {
        "bench": "query",
        "images": args.images,
        "queries": args.queries,
        "k": args.k,
        "p50_ms": p50,
        "p99_ms": percentile_ms(full_s, 99),
        "encode_p50_ms": encode_p50,
        "encode_p99_ms": percentile_ms(encode_s, 99),
        "ratio_p50": round(p50 / encode_p50, 3),
        "search_p50_ms": search_p50,
        "search_p99_ms": percentile_ms(search_s, 99),
        "ensemble": {  # short texts only (search/prompts.py): all templates in one batch vs the bare text
            "p50_ms": percentile_ms(ensemble_s, 50),
            "bare_p50_ms": percentile_ms(short_encode_s, 50),
            "ratio_p50": round(percentile_ms(ensemble_s, 50) / percentile_ms(short_encode_s, 50), 3),
        },
        "filtered": {
            "share": round(filter_share, 4),
            "search_p50_ms": percentile_ms(filtered_s, 50),
            "search_p99_ms": percentile_ms(filtered_s, 99),
            "first_query_with_mask_ms": round(first_mask_s * 1000, 2),
        },
        # Stages run twice per loop (inside search() and alone): per search call, averaged.
        "search_stage_ms": {k: round(v * 1000 / (2 * args.queries), 3) for k, v in stages.seconds.items()},
        "index": params.to_json(),
        "cold_start_s": {
            "process_start": round(PROCESS_START_S, 2),
            "model_load": round(model_load_s, 2),
            "library_open": round(open_s, 3),
            "first_query": round(first_query_s, 3),
        },
        "library_build_s": {k: round(v, 1) for k, v in build.items()},
        "machine": machine(),
    }
    result["meets_target"] = {
        "ratio_p50": result["ratio_p50"] <= TARGET_RATIO,
        "search_p50_ms": search_p50 <= TARGET_SEARCH_MS,
        "filtered_search_p50_ms": result["filtered"]["search_p50_ms"] <= TARGET_SEARCH_MS,
    }
    if fast_encode_s:
        fast_encode_p50 = percentile_ms(fast_encode_s, 50)
        result["backend"] = {
            "name": args.backend,
            "precision": args.precision,
            "encode_p50_ms": fast_encode_p50,
            "encode_p99_ms": percentile_ms(fast_encode_s, 99),
            "p50_ms": percentile_ms(fast_full_s, 50),
            "p99_ms": percentile_ms(fast_full_s, 99),
            "encode_p50_ratio": round(fast_encode_p50 / encode_p50, 3),
            "min_cosine_to_torch": round(min(cosines), 6),
            "model_load_s": round(fast_load_s, 2),
        }
        result["meets_target"]["backend_encode_p50_ratio"] = result["backend"]["encode_p50_ratio"] <= TARGET_BACKEND_RATIO
    emit(result, args.json)


def _timed(call: Any) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
