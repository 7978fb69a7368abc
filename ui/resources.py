"""What the web UI keeps across queries and sessions (``st.cache_resource``): the library, the model,
the thumbnail cache. Nothing here is reloaded per query."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from sqlalchemy.orm import Session

from search.encoder import Encoder
from search.errors import ModelLoadError
from search.filters import Facets, facets
from search.library import Library
from search.records import LibraryInfo
from search.thumbs import THUMB_DIR, Thumbnails


@dataclass(frozen=True, slots=True)
class ModelState:
    """The loaded model, or the sentence saying why it could not be loaded (kept, so a broken model is
    not retried on every click; ``load_model.clear()`` retries)."""

    model_id: str
    encoder: Encoder | None = None
    error: str | None = None

    def require(self) -> Encoder:
        if self.encoder is None:
            raise ModelLoadError(self.error or f"The model '{self.model_id}' is not loaded.")
        return self.encoder


@st.cache_resource(show_spinner=False)
def open_library(home: str) -> Library:
    """Raises the library's ``ViewfinderError``s (not cached: the next run tries again)."""
    return Library.open(Path(home))


@st.cache_resource(show_spinner="Loading the model…")
def load_model(model_id: str, device: str) -> ModelState:
    try:
        return ModelState(model_id, encoder=Encoder.load(model_id, device))
    except ModelLoadError as err:
        return ModelState(model_id, error=str(err))


@st.cache_resource(show_spinner=False)
def thumbnails(home: str) -> Thumbnails:
    library = open_library(home)
    return Thumbnails(library.home / THUMB_DIR, library.record)


def generation(library: Library) -> tuple[int, str]:
    """Changes when the library is refreshed after an indexer has committed: keys what is cached per state."""
    meta = library.snapshot.meta
    return library.snapshot.vector_rows, str(meta.get("last_indexed_at"))


@st.cache_resource(show_spinner=False, max_entries=8)
def library_facts(home: str, generation_key: tuple[int, str]) -> tuple[LibraryInfo, Facets]:
    library = open_library(home)
    with Session(library.engine) as session:
        return library.info(), facets(session)
