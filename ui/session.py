"""One browser session's state and the query it builds. No rendering here; ``state`` is
``st.session_state`` in the app and any dict in a test.

The page holds the terms of one ``search.query.Query``: the search box or an upload starts a new query
(one term); "Add" puts another text or image term next to it; each term has a weight and a "not"
toggle; "More like this" on a result adds that image as a term ("Only this" replaces the query with it).
The sidebar's filters, sort, cutoff and grouping complete the query; ``Searcher.run`` answers it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from search.errors import QueryError
from search.filters import Filter
from search.images import decode_image, make_thumbnail, read_image_info
from search.query import Cutoff, Query, Results, Term
from search.searcher import Searcher

T = TypeVar("T")

MAX_RESULTS = 500  # "load more" stops here
UPLOAD_MAX_PIXELS = 64_000_000  # an upload with more pixels is refused before its pixels are decoded
UPLOAD_PREVIEW_SIDE = 256
MAX_WEIGHT = 3.0  # the weight slider's top

# st.session_state keys
TERMS, PAGES, OPEN, UPLOAD_GEN, UPLOAD_ERROR, TEXT, PREVIEWS = "terms", "pages", "open", "upload_gen", "upload_error", "text", "previews"
SORT, CUTOFF, CUTOFF_SCORE, GROUP, SELECTED, ADD_TEXT = "sort", "cutoff", "cutoff_score", "group", "selected", "add_text"
ENSEMBLE = "ensemble"


@dataclass(frozen=True, slots=True)
class Upload:
    """An uploaded image checked and decoded once; its bytes become the term, its preview is shown."""

    name: str
    data: bytes
    preview: bytes


def init_state(state: MutableMapping[str, Any]) -> None:
    defaults = (
        (TERMS, ()), (PAGES, 1), (OPEN, None), (UPLOAD_GEN, 0), (UPLOAD_ERROR, None), (TEXT, ""), (PREVIEWS, {}),
        (SORT, "relevance"), (CUTOFF, "auto"), (CUTOFF_SCORE, 0.2), (GROUP, True), (ENSEMBLE, False), (SELECTED, set()), (ADD_TEXT, ""),
    )  # fmt: skip
    for key, value in defaults:
        state.setdefault(key, value)


def terms(state: MutableMapping[str, Any]) -> tuple[Term, ...]:
    return tuple(state.get(TERMS, ()))


def set_terms(state: MutableMapping[str, Any], new: tuple[Term, ...], *, fresh: bool) -> None:
    """Change the query's terms. ``fresh``: a new query (page 1, nothing open or selected, inputs cleared)."""
    state[TERMS] = new
    state[PAGES] = 1
    state[UPLOAD_ERROR] = None
    if fresh:
        state[OPEN] = None
        state[SELECTED] = set()
        if not (len(new) == 1 and new[0].kind == "text"):
            state[TEXT] = ""
        state[UPLOAD_GEN] = state.get(UPLOAD_GEN, 0) + 1  # a new key empties the upload boxes


def start_text(state: MutableMapping[str, Any], text: str) -> None:
    text = text.strip()
    set_terms(state, (Term("text", text),) if text else (), fresh=True)


def start_upload(state: MutableMapping[str, Any], upload: Upload) -> None:
    state[PREVIEWS] = {**state.get(PREVIEWS, {}), upload.name: upload.preview}
    set_terms(state, (Term("image", upload.data, label=upload.name),), fresh=True)


def add_term(state: MutableMapping[str, Any], term: Term) -> None:
    """Put a term next to the current ones (a term already there is not added twice)."""
    current = terms(state)
    if any(t.kind == term.kind and t.value == term.value for t in current):
        return
    set_terms(state, (*current, term), fresh=not current)


def add_upload(state: MutableMapping[str, Any], upload: Upload) -> None:
    state[PREVIEWS] = {**state.get(PREVIEWS, {}), upload.name: upload.preview}
    add_term(state, Term("image", upload.data, label=upload.name))


def more_like(state: MutableMapping[str, Any], path: str, *, only: bool = False) -> None:
    """"More like this": the result joins the query; ``only``: it replaces the query."""
    term = Term("image", path)
    if only or not terms(state):
        set_terms(state, (term,), fresh=True)
    else:
        add_term(state, term)


def set_weight(state: MutableMapping[str, Any], index: int, weight: float, negate: bool) -> None:
    current = list(terms(state))
    if 0 <= index < len(current):
        current[index] = replace(current[index], weight=-abs(weight) if negate else abs(weight))
        set_terms(state, tuple(current), fresh=False)


def remove_term(state: MutableMapping[str, Any], index: int) -> None:
    current = list(terms(state))
    if 0 <= index < len(current):
        del current[index]
        set_terms(state, tuple(current), fresh=not current)


def term_key(term: Term) -> str:
    """A widget key for a term that stays with it when other terms are added or removed."""
    import hashlib

    raw = term.value if isinstance(term.value, bytes) else term.value.encode("utf-8", "surrogateescape")
    return hashlib.blake2b(term.kind.encode() + b"\0" + raw, digest_size=6).hexdigest()


def term_label(term: Term) -> str:
    shown = term.shown if term.kind == "text" else os.path.basename(term.shown)
    return f"“{shown}”" if term.kind == "text" else shown


def title(query_terms: tuple[Term, ...]) -> str:
    """'Results for “beach” + sunset.jpg − “people” (0.5)'."""
    parts = []
    for i, term in enumerate(query_terms):
        sign = ("− " if term.weight < 0 else "+ ") if i else ("not " if term.weight < 0 else "")
        weight = f" ({abs(term.weight):g})" if abs(term.weight) != 1 else ""
        parts.append(f"{sign}{term_label(term)}{weight}")
    return "Results for " + " ".join(parts)


def read_upload(name: str, data: bytes, *, min_side: int, max_bytes: int) -> Upload:
    """Check an upload, kept in memory only. Raises ``QueryError`` (too many bytes or pixels: checked from
    the header, before any pixel is decoded) or ``ImageDecodeError`` (not an image, corrupt)."""
    if len(data) > max_bytes:
        raise QueryError(f"{name} is {len(data) / 2**20:.0f} MB; images up to {max_bytes // 2**20} MB can be uploaded.")
    info = read_image_info(data)
    if info.width * info.height > UPLOAD_MAX_PIXELS:
        raise QueryError(
            f"{name} is {info.width} × {info.height} pixels, too large to search with: "
            f"upload a copy of at most {UPLOAD_MAX_PIXELS // 1_000_000} megapixels."
        )
    image, _ = decode_image(data, min_side=min_side, max_pixels=UPLOAD_MAX_PIXELS)
    return Upload(name, data, make_thumbnail(image, UPLOAD_PREVIEW_SIDE))


def cutoff_of(state: MutableMapping[str, Any]) -> Cutoff:
    mode = state.get(CUTOFF, "auto")
    return Cutoff(mode="score", score=float(state.get(CUTOFF_SCORE, 0.2))) if mode == "score" else Cutoff(mode=mode)


def build_query(state: MutableMapping[str, Any], flt: Filter, per_page: int) -> Query | None:
    """The query the page shows, or None before the user has asked anything. ``QueryError`` when the
    terms cannot be searched (every one subtracted)."""
    query_terms = terms(state)
    if not query_terms:
        return None
    k = min(MAX_RESULTS, per_page * state.get(PAGES, 1))
    return Query(
        terms=query_terms, filter=flt, sort=state.get(SORT, "relevance"), cutoff=cutoff_of(state), k=k,
        group=bool(state.get(GROUP, True)), ensemble=bool(state.get(ENSEMBLE, False)),
    )  # fmt: skip


def check_indexed(library: Any, query: Query) -> None:
    """The page never reads a file by its path: an image term given as a path must be in the library
    (a result since removed from it is refused instead of read from disk)."""
    for term in query.terms:
        if term.kind == "image" and isinstance(term.value, str) and library.record(term.value) is None:
            raise QueryError(f"{term.value} is no longer in the library; remove it from the query or run another search.")


@dataclass(frozen=True, slots=True)
class PageResults:
    results: Results
    seconds: float

    @property
    def more(self) -> bool:
        """Whether "load more" can show more."""
        return self.results.more and len(self.results.hits) < MAX_RESULTS


def memo(state: MutableMapping[str, Any], slot: str, key: object, compute: Callable[[], T]) -> T:
    """The last value computed for ``slot``, while its key is unchanged."""
    held = state.get(slot)
    if held is not None and held[0] == key:
        return held[1]
    value = compute()
    state[slot] = (key, value)
    return value


def results_for(state: MutableMapping[str, Any], searcher: Searcher, query: Query, generation: object) -> PageResults:
    """Run the query, reusing this session's last results while they still apply (opening or selecting a
    result does not search again). ``seconds`` covers encoding too."""

    def compute() -> PageResults:
        started = time.perf_counter()
        found = searcher.run(query)
        return PageResults(results=found, seconds=time.perf_counter() - started)

    return memo(state, "_results", (query, generation), compute)
