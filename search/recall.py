"""The recall self-check of an IVF-PQ index: measure recall@k on the library's own vectors against an
exact scan, and when it is short of the target, take the cheapest lever that reaches it.

The numbers (target, sample size, query perturbations, the order of the levers) are stated once, in
``search.ann``'s docstring; this module is the mechanism. ``tune`` is pure apart from the ``build``
callback it is given (which builds an index for other parameters).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import faiss
import numpy as np

from search import ann
from search.records import IndexParams, Vectors

EXACT_CHUNK = 65_536
SATURATED = 0.002  # a deeper nprobe that gains less recall than this is not helping
GENERIC_CAPTIONS = (  # text queries about anything, for the modality direction (mean text - mean image)
    "a photo of a person", "a photo of a dog", "a photo of a cat", "a picture of a house", "a landscape with mountains",
    "a city street at night", "a plate of food", "a car on the road", "a drawing of a flower", "a scanned document",
    "a beach with the sea", "a close-up of a face", "an icon", "a screenshot", "a group of people", "a bird in a tree",
)


@dataclass(frozen=True, slots=True)
class Step:
    """One measured setting: its parameters and recall@k on each query set (``text`` None when not run)."""

    params: IndexParams
    image: float
    text: float | None = None

    @property
    def recall(self) -> float:
        return self.image if self.text is None else min(self.image, self.text)

    def to_json(self) -> dict[str, Any]:
        p = self.params
        return {"kind": p.kind, "m": p.m, "nprobe": p.nprobe, "rerank": p.rerank, "image": round(self.image, 4),
                "text": None if self.text is None else round(self.text, 4)}


@dataclass(frozen=True, slots=True)
class RecallCheck:
    """What the self-check measured: the rule's choice (``before``), the one kept (``after``), every step."""

    target: float
    k: int
    queries: int  # per query set
    text_queries: bool
    before: Step
    after: Step
    steps: tuple[Step, ...]
    rebuilds: int
    seconds: float

    @property
    def recall(self) -> float:
        return self.after.recall

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "k": self.k,
            "queries": self.queries,
            "text_queries": self.text_queries,
            "recall_at_10": round(self.after.recall, 4),
            "recall_before": round(self.before.recall, 4),
            "before": self.before.to_json(),
            "after": self.after.to_json(),
            "steps": [s.to_json() for s in self.steps],
            "rebuilds": self.rebuilds,
            "seconds": round(self.seconds, 2),
        }


# --- queries --------------------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> Vectors:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def image_like(vectors: np.ndarray, live: np.ndarray, count: int, seed: int) -> Vectors:
    """``count`` stored vectors, each moved by ``IMAGE_JITTER`` x the difference of two other stored vectors."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(live, size=(3, min(count, len(live))), replace=True)
    x, y, z = (ann.gather(vectors, p) for p in picks)
    return _unit(x + ann.IMAGE_JITTER * (y - z))


def text_like(queries: Vectors, direction: np.ndarray) -> Vectors:
    """Queries moved ``MODALITY_GAP`` along the (unit) modality direction: far from every image, as text is."""
    d = np.asarray(direction, dtype=np.float32).reshape(1, -1)
    return _unit(queries + ann.MODALITY_GAP * d / max(float(np.linalg.norm(d)), 1e-12))


def modality_direction(text: Vectors, images: Vectors) -> Vectors:
    """The unit vector from the mean image to the mean text embedding (CLIP's modality gap)."""
    gap = np.asarray(text, np.float32).mean(axis=0) - np.asarray(images, np.float32).mean(axis=0)
    return _unit(gap.reshape(1, -1))[0]


def check_queries(vectors: np.ndarray, live: np.ndarray, direction: np.ndarray | None, seed: int = 1338) -> dict[str, Vectors]:
    """The seeded query sets of the self-check: image-like, and text-like when a modality direction is known."""
    sets = {"image": image_like(vectors, live, ann.CHECK_QUERIES, seed)}
    if direction is not None:
        sets["text"] = text_like(image_like(vectors, live, ann.CHECK_QUERIES, seed + 1), direction)
    return sets


# --- measuring -------------------------------------------------------------------------------------------


def exact_top(vectors: np.ndarray, live: np.ndarray, queries: Vectors, k: int) -> np.ndarray:
    """The exact k-th best cosine of every query over the live vectors (scored as ``ann.rerank`` scores)."""
    best = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    for start in range(0, len(live), EXACT_CHUNK):
        rows = ann.gather(vectors, live[start : start + EXACT_CHUNK])
        scores = (queries @ rows.T) / np.maximum(np.linalg.norm(rows, axis=1), 1e-12)
        both = np.concatenate([best, scores], axis=1)
        keep = min(k, both.shape[1])
        best = -np.partition(-both, keep - 1, axis=1)[:, :keep]
    return np.sort(best, axis=1)[:, 0] if best.shape[1] else np.full(len(queries), -np.inf, np.float32)


def ann_scores(index: faiss.Index, params: IndexParams, vectors: np.ndarray, allowed: np.ndarray, queries: Vectors, k: int) -> list[np.ndarray]:
    """Exact scores of the k results a search returns for each query (candidates + exact re-rank)."""
    depth = max(1, min(ann.rerank_depth(params, k), index.ntotal))
    if params.kind == "ivfpq":
        _, cands = index.search(queries, depth, params=faiss.SearchParametersIVF(nprobe=params.nprobe))
    else:
        _, cands = index.search(queries, depth)
    return [ann.rerank(q, c, vectors, allowed, k)[1] for q, c in zip(queries, cands, strict=True)]


def recall_at(found: list[np.ndarray], kth: np.ndarray, k: int) -> float:
    """Share of the true top-k reached: a result counts when it scores at least the exact k-th best
    (so ties and byte-identical duplicates at the boundary are not counted as misses)."""
    hits = [min(k, int(np.count_nonzero(f >= t - 1e-5))) for f, t in zip(found, kth, strict=True)]
    return float(np.mean(hits)) / k if hits else 1.0


# --- the ladder ------------------------------------------------------------------------------------------


class _Meter:
    def __init__(self, vectors: np.ndarray, live: np.ndarray, sets: dict[str, Vectors], k: int) -> None:
        self.vectors, self.sets, self.k = vectors, sets, k
        self.allowed = np.zeros(int(live.max()) + 1 if len(live) else 0, dtype=bool)
        self.allowed[live] = True
        self.kth = {name: exact_top(vectors, live, q, k) for name, q in sets.items()}
        self.steps: list[Step] = []

    def __call__(self, index: faiss.Index, params: IndexParams) -> Step:
        r = {n: recall_at(ann_scores(index, params, self.vectors, self.allowed, q, self.k), self.kth[n], self.k) for n, q in self.sets.items()}
        step = Step(params, r["image"], r.get("text"))
        self.steps.append(step)
        return step


def _climb(index: faiss.Index, params: IndexParams, measure: _Meter, n: int) -> Step:
    """Deeper probing, then deeper re-rank (then probing brought back down): the first setting that
    reaches the target, or the last one tried."""
    target = ann.RECALL_TARGET + ann.CHECK_MARGIN
    step = measure(index, params)
    while step.recall < target and step.params.nprobe < params.nlist:
        deeper = measure(index, replace(step.params, nprobe=min(params.nlist, 2 * step.params.nprobe)))
        if deeper.recall >= target:
            return deeper
        if deeper.recall - step.recall < SATURATED:
            break
        step = deeper
    cap = min(ann.MAX_RERANK, n)
    while step.recall < target and step.params.rerank < cap:
        step = measure(index, replace(step.params, rerank=min(cap, 2 * step.params.rerank)))
    while step.recall >= target and step.params.nprobe > params.nprobe:
        fewer = measure(index, replace(step.params, nprobe=max(params.nprobe, step.params.nprobe // 2)))
        if fewer.recall < target:
            break
        step = fewer
    return step


def tune(
    index: faiss.Index,
    params: IndexParams,
    vectors: np.ndarray,
    live: np.ndarray,
    build: Callable[[IndexParams], faiss.Index],
    *,
    direction: np.ndarray | None = None,
    seed: int = 1338,
) -> tuple[faiss.Index, IndexParams, RecallCheck]:
    """Measure ``index`` (built with ``params`` over ``live``) and return the index and parameters to keep,
    with what was measured. ``build(p)`` builds a new index over the same vectors (used for finer codes and
    the exact fallback)."""
    started = time.perf_counter()
    k = ann.CHECK_K
    measure = _Meter(vectors, live, check_queries(vectors, live, direction, seed), k)
    rule = params
    step = _climb(index, params, measure, len(live))
    before = measure.steps[0]
    rebuilds = 0
    while step.recall < ann.RECALL_TARGET + ann.CHECK_MARGIN:
        finer = ann.finer_codes(params)
        if finer is None and not ann.exact_fits(len(live), params.dim):
            break  # the best index tried stays, below target: recorded, and doctor reports it
        if finer is None:
            params = IndexParams(kind="flat", dim=params.dim, trained_on=len(live), tuned=True)
            index, rebuilds = build(params), rebuilds + 1
            step = Step(params, 1.0, None if direction is None else 1.0)  # exact by construction
            measure.steps.append(step)
            break
        params = finer
        index, rebuilds = build(params), rebuilds + 1
        step = _climb(index, params, measure, len(live))
    kept = step.params if step.params.kind == "flat" else replace(step.params, tuned=step.params != rule)
    check = RecallCheck(
        target=ann.RECALL_TARGET,
        k=k,
        queries=ann.CHECK_QUERIES,
        text_queries=direction is not None,
        before=before,
        after=replace(step, params=kept),
        steps=tuple(measure.steps),
        rebuilds=rebuilds,
        seconds=time.perf_counter() - started,
    )
    return index, kept, check
