"""One browser session's state (the active query, pages shown, the open result) and the searches it asks
for. No rendering here; ``state`` is ``st.session_state`` in the app and any dict in a test."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from search.errors import QueryError
from search.filters import Filter, allowed_mask
from search.images import decode_image, make_thumbnail, read_image_info
from search.library import Library
from search.records import Hit, Vectors
from search.searcher import Searcher

T = TypeVar("T")

MAX_RESULTS = 500  # "load more" stops here
UPLOAD_MAX_PIXELS = 64_000_000  # an upload with more pixels is refused before its pixels are decoded
UPLOAD_PREVIEW_SIDE = 256

# st.session_state keys
QUERY, PAGES, OPEN, UPLOAD_GEN, UPLOAD_ERROR, TEXT = "query", "pages", "open", "upload_gen", "upload_error", "text"


@dataclass(frozen=True, slots=True)
class TextQuery:
    text: str

    @property
    def title(self) -> str:
        return f"Results for “{self.text}”"


@dataclass(frozen=True, slots=True)
class SimilarQuery:
    """Images like one that is in the library (its stored vector: no model, no file read)."""

    path: str

    @property
    def title(self) -> str:
        return f"Images like {os.path.basename(self.path)}"


@dataclass(frozen=True, slots=True)
class UploadQuery:
    """An uploaded image, decoded once (at the size the model needs) and kept in memory only."""

    name: str
    file_id: str
    image: Image.Image = field(compare=False, repr=False)
    preview: bytes = field(compare=False, repr=False)

    @property
    def title(self) -> str:
        return f"Images like the uploaded {self.name}"


Query = TextQuery | SimilarQuery | UploadQuery


@dataclass(frozen=True, slots=True)
class Results:
    hits: list[Hit]
    k: int  # how many were asked for
    seconds: float

    @property
    def more(self) -> bool:
        """Whether "load more" can show more."""
        return len(self.hits) == self.k and self.k < MAX_RESULTS


def init_state(state: MutableMapping[str, Any]) -> None:
    for key, value in ((QUERY, None), (PAGES, 1), (OPEN, None), (UPLOAD_GEN, 0), (UPLOAD_ERROR, None), (TEXT, "")):
        state.setdefault(key, value)


def set_query(state: MutableMapping[str, Any], query: Query | None) -> None:
    """A new query starts on page 1 with nothing open; the input it did not come from is cleared."""
    state[QUERY] = query
    state[PAGES] = 1
    state[OPEN] = None
    state[UPLOAD_ERROR] = None
    if not isinstance(query, TextQuery):
        state[TEXT] = ""
    if not isinstance(query, UploadQuery):
        state[UPLOAD_GEN] = state.get(UPLOAD_GEN, 0) + 1  # a new key empties the upload box


def read_upload(name: str, file_id: str, data: bytes, *, min_side: int, max_bytes: int) -> UploadQuery:
    """Decode an upload, kept in memory only. Raises ``QueryError`` (too many bytes or pixels: checked from
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
    return UploadQuery(name, file_id, image, make_thumbnail(image, UPLOAD_PREVIEW_SIDE))


def query_vector(searcher: Searcher, query: Query) -> Vectors:
    if isinstance(query, TextQuery):
        if not query.text.strip():
            raise QueryError("The text query is empty.")
        return searcher.encoder.encode_text([query.text])[0]
    if isinstance(query, SimilarQuery):  # never read from disk: only an image the library holds
        vector = searcher.library.vector_for_path(query.path)
        if vector is None:
            raise QueryError(f"{query.path} is no longer in the library; run another search.")
        return vector
    return searcher.image_vector(query.image)


def memo(state: MutableMapping[str, Any], slot: str, key: object, compute: Callable[[], T]) -> T:
    """The last value computed for ``slot``, while its key is unchanged."""
    held = state.get(slot)
    if held is not None and held[0] == key:
        return held[1]
    value = compute()
    state[slot] = (key, value)
    return value


def mask_for(library: Library, flt: Filter) -> np.ndarray | None:
    with Session(library.engine) as session:
        return allowed_mask(session, flt, library.snapshot.vector_rows)


def run_search(library: Library, vector: Vectors, k: int, allowed: np.ndarray | None) -> list[Hit]:
    if allowed is not None and not allowed.any():
        return []  # the filters leave nothing
    return library.search_vector(vector, k, allowed)


def results_for(
    state: MutableMapping[str, Any], searcher: Searcher, query: Query, flt: Filter, k: int, generation: object
) -> Results:
    """Search, reusing this session's last query vector, filter mask and results while they still apply
    (opening a result, or paging, does not encode the query again). ``seconds`` covers encoding too."""

    def compute() -> Results:
        started = time.perf_counter()
        vector = memo(state, "_vector", (query, generation), lambda: query_vector(searcher, query))
        allowed = memo(state, "_mask", (flt, generation), lambda: mask_for(searcher.library, flt))
        hits = run_search(searcher.library, vector, k, allowed)
        return Results(hits=hits, k=k, seconds=time.perf_counter() - started)

    return memo(state, "_results", (query, flt, k, generation), compute)
