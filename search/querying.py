"""Running a :class:`~search.query.Query` on a library: embed the terms, filter inside the search, cut,
group, sort and page. ``Searcher.run`` is the one entry point the CLI, the server and the page use.

Steps (each a pure function in ``search.ranking``/``search.cutoff`` where it can be):
1. Embed: a text term through ``search.texts`` (as typed, or a short one through its prompt ensemble
   when the query asks for it; long texts in windows), an indexed image by its stored vector (no
   model), any other image by the model.
   The query vector is the normalised weighted sum (``ranking.combine``).
2. Rank the ``pool`` best matches of the filter (``Library.rank``: a filter never costs results).
   With one indexed image as the only positive term, that image is placed first (it is its own best
   match, whatever the index returned or how ties fell).
3. Cut (``search.cutoff``), group near-duplicates (``ranking.group_near_duplicates``), sort, page.
   ``pool`` is ``offset + k``; with a date sort it is at least ``ranking.SORT_POOL``; grouping fetches
   more until ``offset + k`` groups are found or the matches run out.
"""

from __future__ import annotations

import os
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from search import ann, cutoff, ranking
from search.filters import allowed_mask
from search.query import Query, Results, Term
from search.records import Hit, Vectors

if TYPE_CHECKING:
    from search.searcher import Searcher

GROUP_FETCH = 4  # candidates fetched per wanted group before fetching more


@dataclass
class Embedded:
    vector: Vectors
    notices: list[str] = field(default_factory=list)
    self_id: int | None = None  # the FAISS id of the one indexed image that is the query's only positive term
    has_text: bool = False


def embed(searcher: Searcher, query: Query) -> Embedded:
    texts = [t for t in query.terms if t.kind == "text"]
    images = [t for t in query.terms if t.kind == "image"]
    vectors: list[Vectors] = []
    weights: list[float] = []
    notices: list[str] = []
    if texts:
        text_vecs, notices = searcher.texts.vectors([str(t.value) for t in texts], ensemble=query.ensemble)
        vectors.extend(text_vecs)
        weights.extend(t.weight for t in texts)
    self_id = None
    for term in images:
        vectors.append(searcher.image_vector(_image_source(term)))
        weights.append(term.weight)
    positives = [t for t in query.terms if t.weight > 0]
    if len(positives) == 1 and positives[0].kind == "image" and isinstance(positives[0].value, str):
        record = searcher.library.record(positives[0].value)
        self_id = record.faiss_id if record is not None else None
    vector = ranking.combine(np.stack(vectors), weights) if len(vectors) > 1 else _unit(vectors[0])
    return Embedded(vector=vector, notices=notices, self_id=self_id, has_text=bool(texts))


def _image_source(term: Term) -> str | bytes:
    if isinstance(term.value, bytes):
        return term.value
    path = os.path.abspath(os.path.expanduser(term.value))
    return path


def _unit(vector: Vectors) -> Vectors:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def run(searcher: Searcher, query: Query) -> Results:
    library = searcher.library
    if len(library) == 0:
        library.refresh()  # a first index run may have committed since the library was opened
    if len(library) == 0:
        library.ensure_searchable()  # nothing indexed and no indexer at work: say how to index
        return Results(hits=[], notices=(f"An indexer is writing to {library.home} and has not committed any image yet; try again in a moment.",))
    return ranked(searcher, query, embed(searcher, query))


def run_vector(searcher: Searcher, vector: Vectors, query: Query) -> Results:
    """``run`` with the query's vector already computed (its terms only say whether it holds text)."""
    has_text = any(t.kind == "text" for t in query.terms)
    return ranked(searcher, query, Embedded(vector=_unit(vector), has_text=has_text))


def ranked(searcher: Searcher, query: Query, embedded: Embedded) -> Results:
    """Steps 2 and 3 of the module docstring, for an embedded query."""
    library = searcher.library
    allowed = _mask(library, query)
    matched = int(library.allowed.sum()) if allowed is None else int((library.allowed & _fit(allowed, len(library.allowed))).sum())
    need = query.offset + query.k
    pool = need if query.sort == "relevance" else max(need, ranking.SORT_POOL)
    fetch = pool * (GROUP_FETCH if query.group else 1)
    while True:
        ids, scores = _ranked(library, embedded, min(fetch, max(matched, 1)), allowed)
        keep = _keep(searcher, query, embedded, ids, scores)
        cut = int((~keep).sum())
        ids, scores = ids[keep], scores[keep]
        groups = ranking.group_near_duplicates(ann.gather(library.vectors, ids)) if query.group else [[i] for i in range(len(ids))]
        exhausted = fetch >= matched
        if not query.group or len(groups) >= pool or exhausted:
            break
        fetch *= 2
    groups = groups[:pool]
    leaders = ids[[g[0] for g in groups]] if groups else ids[:0]
    records = library.records(np.concatenate([ids[g] for g in groups]) if groups else ids[:0])
    order = ranking.sort_order([records[int(i)] for i in leaders if int(i) in records], query.sort) if query.sort != "relevance" else list(range(len(groups)))
    groups = [g for g in groups if int(ids[g[0]]) in records]
    page = [groups[i] for i in order][query.offset : query.offset + query.k]
    hits = []
    for rank, group in enumerate(page, start=query.offset + 1):
        members = [Hit(rank=rank, score=float(scores[j]), record=records[int(ids[j])]) for j in group if int(ids[j]) in records]
        hits.append(Hit(rank=rank, score=members[0].score, record=members[0].record, group=tuple(members[1:])))
    more = len(groups) > query.offset + query.k or (not exhausted and len(groups) >= pool)
    return Results(hits=hits, cut=cut, matched=matched, notices=tuple(embedded.notices), more=more)


MASK_CACHE = 16  # filters remembered per library snapshot (paging and re-sorting reuse them)
_masks: weakref.WeakKeyDictionary[Any, OrderedDict[Any, tuple[Any, np.ndarray | None]]] = weakref.WeakKeyDictionary()


def _mask(library: Any, query: Query) -> np.ndarray | None:
    """The filter's matches as a mask over FAISS ids, computed once per (filter, snapshot): a catalog scan
    at 1M rows costs tens of milliseconds, a page turn or a new sort must not pay it again."""
    if not query.filter.active:
        return None
    from sqlalchemy.orm import Session

    cache = _masks.setdefault(library, OrderedDict())
    snapshot = library.snapshot
    held = cache.get(query.filter)
    if held is not None and held[0] is snapshot:  # the snapshot it was computed on is held: no id reuse
        cache.move_to_end(query.filter)
        return held[1]
    with Session(library.engine) as session:
        mask = allowed_mask(session, query.filter, snapshot.vector_rows)
    cache[query.filter] = (snapshot, mask)
    cache.move_to_end(query.filter)
    while len(cache) > MASK_CACHE:
        cache.popitem(last=False)
    return mask


def _fit(mask: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, dtype=bool)
    out[: min(length, len(mask))] = mask[:length]
    return out


def _ranked(library: Any, embedded: Embedded, n: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    ids, scores = library.rank(embedded.vector, n, allowed)
    return self_first(library, ids, scores, embedded.self_id, embedded.vector, n, allowed)


def self_first(
    library: Any, ids: np.ndarray, scores: np.ndarray, own: int | None, query: Vectors, n: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Ranked (ids, scores) with the query image ``own`` first, scored exactly, whether the index returned
    it or not and however many byte-identical copies tie with it; left out only where the snapshot or
    ``allowed`` leaves it out (``Searcher.similar`` uses it too)."""
    if own is None or own >= len(library.allowed) or not library.allowed[own]:
        return ids, scores
    if allowed is not None and not (own < len(allowed) and allowed[own]):
        return ids, scores
    own_score = float(ann.rerank(np.asarray(query, np.float32).reshape(1, -1), np.array([own]), library.vectors, library.allowed, 1)[1][0])
    rest = ids != own
    ids = np.concatenate([[own], ids[rest]])[: max(n, 1)]
    scores = np.concatenate([[own_score], scores[rest]])[: max(n, 1)]
    return ids.astype(np.int64), scores.astype(np.float32)


def _keep(searcher: Searcher, query: Query, embedded: Embedded, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    mode = query.cutoff.mode
    if mode == "none" or len(ids) == 0:
        return np.ones(len(ids), dtype=bool)
    if mode == "score":
        return scores >= query.cutoff.score
    library = searcher.library
    if embedded.has_text:
        nulls, _ = searcher.texts.vectors(list(cutoff.NULL_PROMPTS))
        return cutoff.keep_over_null(scores, ann.gather(library.vectors, ids), nulls)
    sample = ann.gather(library.vectors, cutoff.sample_ids(library.snapshot.live[library.snapshot.live < len(library.allowed)]))
    threshold = cutoff.outlier_threshold(sample @ embedded.vector)
    keep = scores >= threshold
    if embedded.self_id is not None and len(ids) and ids[0] == embedded.self_id:
        keep[0] = True
    return keep
