"""The page: library checks, the query inputs, the results. Domain errors become messages here."""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import streamlit as st

from search.errors import ImageDecodeError, ViewfinderError
from search.images import IMAGE_EXTENSIONS
from search.library import Library
from search.searcher import Searcher
from search.settings import Settings
from ui import resources, results, sidebar
from ui.launch import MAX_UPLOAD_MB
from ui.session import (
    OPEN,
    PAGES,
    QUERY,
    TEXT,
    UPLOAD_ERROR,
    UPLOAD_GEN,
    Query,
    SimilarQuery,
    TextQuery,
    UploadQuery,
    init_state,
    read_upload,
    results_for,
    set_query,
)

UPLOAD_TYPES = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)


# --- callbacks (run before the script reruns) -------------------------------------------------------------


def on_text(state: MutableMapping[str, Any]) -> None:
    text = (state.get(TEXT) or "").strip()
    set_query(state, TextQuery(text) if text else None)


def on_upload(state: MutableMapping[str, Any], key: str, min_side: int) -> None:
    upload = state.get(key)
    if upload is None:  # the upload box was emptied
        if isinstance(state.get(QUERY), UploadQuery):
            state[QUERY] = None
        state[UPLOAD_ERROR] = None
        return
    try:
        query = read_upload(
            upload.name, upload.file_id, upload.getvalue(), min_side=min_side, max_bytes=MAX_UPLOAD_MB * 2**20
        )
    except ImageDecodeError as err:
        state[UPLOAD_ERROR] = f"{upload.name} cannot be used: {err.reason}. Upload an image file (JPEG, PNG, WebP…)."
        return
    except ViewfinderError as err:
        state[UPLOAD_ERROR] = str(err)
        return
    set_query(state, query)


def on_similar(state: MutableMapping[str, Any], path: str) -> None:
    set_query(state, SimilarQuery(path))


def on_open(state: MutableMapping[str, Any], path: str) -> None:
    state[OPEN] = path


def on_close(state: MutableMapping[str, Any]) -> None:
    state[OPEN] = None


def on_more(state: MutableMapping[str, Any]) -> None:
    state[PAGES] = state.get(PAGES, 1) + 1


# --- the page -------------------------------------------------------------------------------------------


def open_library(home: Path) -> Library:
    """The cached library, or a message saying what to run (and the script stops)."""
    try:
        library = resources.open_library(str(home))
    except ViewfinderError as err:
        st.error(str(err))
        st.stop()
    if len(library) == 0:
        library.refresh()  # indexed since the page was last loaded?
    if len(library) == 0:
        skipped = library.info().skipped
        st.warning(
            f"The library in {home} has no indexed images yet"
            + (f" ({skipped} files were skipped as unreadable)" if skipped else "")
            + f": run `viewfinder index FOLDER --home {home}`, then reload this page."
        )
        st.stop()
    return library


def model_problem(state: resources.ModelState, home: Path) -> None:
    st.error(
        f"The library's model cannot be loaded, so text and image search are off. {state.error} "
        f'To see the problem in a terminal, run `viewfinder search "test" --home {home}`; once that works, press Retry.'
    )
    if st.button("Retry loading the model"):
        resources.load_model.clear()
        st.rerun()


def query_inputs(state: MutableMapping[str, Any], model: resources.ModelState) -> None:
    broken = model.encoder is None
    text_col, upload_col = st.columns([3, 2], vertical_alignment="bottom")
    text_col.text_input(
        "Search", key=TEXT, on_change=on_text, args=(state,), disabled=broken,
        placeholder="Describe what you are looking for, then press Enter", icon=":material/search:",
    )  # fmt: skip
    min_side = model.encoder.preprocess.min_side if model.encoder else 224
    key = f"upload-{state[UPLOAD_GEN]}"
    upload_col.file_uploader(
        "Find images like this one", type=UPLOAD_TYPES, key=key, on_change=on_upload, args=(state, key, min_side),
        disabled=broken, max_upload_size=MAX_UPLOAD_MB,
    )  # fmt: skip
    if state.get(UPLOAD_ERROR):
        st.error(state[UPLOAD_ERROR])


def query_heading(query: Query) -> None:
    if isinstance(query, UploadQuery):
        left, right = st.columns([1, 8], vertical_alignment="center")
        left.image(query.preview, width=96)
        right.subheader(results.md(query.title))
    else:
        st.subheader(results.md(query.title))


def main(home: Path) -> None:
    st.set_page_config(page_title="Viewfinder", page_icon=":material/image_search:", layout="wide")
    st.title("Viewfinder")
    library = open_library(home)
    state = st.session_state
    init_state(state)
    home_key = str(home)
    info, found = resources.library_facts(home_key, resources.generation(library))
    sidebar.facts(info)
    if st.sidebar.button("Reload library", help="Pick up images indexed since the page was opened."):
        library.refresh()
        st.rerun()
    flt = sidebar.filters(found)
    per_page = sidebar.page_size()

    model = resources.load_model(library.model or "", Settings.from_env().device)
    if model.encoder is None:
        model_problem(model, home)
    query_inputs(state, model)
    query: Query | None = state[QUERY]
    if query is None:
        st.info("Type a description and press Enter, or drop an image on the upload box.")
        return

    thumbs = resources.thumbnails(home_key)
    searcher = Searcher(library, model.require)
    k = per_page * state[PAGES]
    try:
        found_results = results_for(state, searcher, query, flt, k, resources.generation(library))
    except ViewfinderError as err:
        st.error(str(err))
        return
    hits = found_results.hits
    if state[OPEN]:
        opened = next((hit for hit in hits if hit.path == state[OPEN]), None)
        results.detail(state[OPEN], opened, thumbs, lambda: on_close(state), lambda p: on_similar(state, p))
    query_heading(query)
    if not hits:
        st.info("No images match" + (" these filters." if flt.active else " this query."))
        return
    st.caption(f"{len(hits)} results in {found_results.seconds:.2f} s" + (" (filtered)" if flt.active else ""))
    root = found.folders[0][0] if found.folders else ""
    results.grid(hits, root, thumbs, lambda p: on_open(state, p), lambda p: on_similar(state, p))
    if found_results.more:
        st.button("Load more", on_click=on_more, args=(state,), key="load-more")
