"""The page: library checks, the query's terms, the results. Domain errors become messages here."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import streamlit as st

from search.errors import ImageDecodeError, ViewfinderError
from search.images import IMAGE_EXTENSIONS
from search.library import Library
from search.query import Term
from search.searcher import Searcher
from search.settings import Settings
from ui import dupes_view, resources, results, sidebar, tag_facet
from ui import session as ss
from ui.export import ZIP_MAX_BYTES, csv_text, zip_selection, zip_stream
from ui.launch import MAX_UPLOAD_MB

UPLOAD_TYPES = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)


# --- callbacks (run before the script reruns) -------------------------------------------------------------


def on_text(state: MutableMapping[str, Any]) -> None:
    ss.start_text(state, state.get(ss.TEXT) or "")


def _upload(state: MutableMapping[str, Any], key: str, min_side: int) -> ss.Upload | None:
    upload = state.get(key)
    if upload is None:  # the upload box was emptied
        state[ss.UPLOAD_ERROR] = None
        return None
    try:
        return ss.read_upload(upload.name, upload.getvalue(), min_side=min_side, max_bytes=MAX_UPLOAD_MB * 2**20)
    except ImageDecodeError as err:
        state[ss.UPLOAD_ERROR] = f"{upload.name} cannot be used: {err.reason}. Upload an image file (JPEG, PNG, WebP…)."
    except ViewfinderError as err:
        state[ss.UPLOAD_ERROR] = str(err)
    return None


def on_upload(state: MutableMapping[str, Any], key: str, min_side: int) -> None:
    upload = _upload(state, key, min_side)
    if upload is not None:
        ss.start_upload(state, upload)


def on_add_upload(state: MutableMapping[str, Any], key: str, min_side: int) -> None:
    upload = _upload(state, key, min_side)
    if upload is not None:
        ss.add_upload(state, upload)


def on_add_text(state: MutableMapping[str, Any]) -> None:
    text = (state.get(ss.ADD_TEXT) or "").strip()
    if text:
        ss.add_term(state, Term("text", text))
    state[ss.ADD_TEXT] = ""


def on_similar(state: MutableMapping[str, Any], path: str) -> None:
    ss.more_like(state, path)


def on_only(state: MutableMapping[str, Any], path: str) -> None:
    ss.more_like(state, path, only=True)


def on_weight(state: MutableMapping[str, Any], index: int, key: str) -> None:
    ss.set_weight(state, index, float(state.get(f"weight-{key}", 1.0)), bool(state.get(f"not-{key}", False)))


def on_remove(state: MutableMapping[str, Any], index: int) -> None:
    ss.remove_term(state, index)


def on_open(state: MutableMapping[str, Any], path: str) -> None:
    state[ss.OPEN] = path


def on_close(state: MutableMapping[str, Any]) -> None:
    state[ss.OPEN] = None


def on_more(state: MutableMapping[str, Any]) -> None:
    state[ss.PAGES] = state.get(ss.PAGES, 1) + 1


def on_show_cut(state: MutableMapping[str, Any]) -> None:
    state[ss.CUTOFF] = "none"


def on_select(state: MutableMapping[str, Any], path: str, key: str) -> None:
    chosen = set(state.get(ss.SELECTED, set()))
    (chosen.add if state.get(key) else chosen.discard)(path)
    state[ss.SELECTED] = chosen


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
        "Search", key=ss.TEXT, on_change=on_text, args=(state,), disabled=broken,
        placeholder="Describe what you are looking for, then press Enter", icon=":material/search:",
    )  # fmt: skip
    min_side = model.encoder.preprocess.min_side if model.encoder else 224
    key = f"upload-{state[ss.UPLOAD_GEN]}"
    upload_col.file_uploader(
        "Find images like this one", type=UPLOAD_TYPES, key=key, on_change=on_upload, args=(state, key, min_side),
        disabled=broken, max_upload_size=MAX_UPLOAD_MB,
    )  # fmt: skip
    if state.get(ss.UPLOAD_ERROR):
        st.error(state[ss.UPLOAD_ERROR])
    if ss.terms(state):
        term_editor(state, min_side, broken)


def term_editor(state: MutableMapping[str, Any], min_side: int, broken: bool) -> None:
    """Each term with its weight and a "not" toggle; add words or an image to the query."""
    with st.expander("Refine the query: weights, “not”, more terms", expanded=len(ss.terms(state)) > 1):
        for i, term in enumerate(ss.terms(state)):
            tk = ss.term_key(term)
            name_col, weight_col, not_col, remove_col = st.columns([4, 4, 1, 1], vertical_alignment="center")
            preview = state.get(ss.PREVIEWS, {}).get(term.label) if isinstance(term.value, bytes) else None
            if preview:
                name_col.image(preview, width=48)
            name_col.markdown(results.md(ss.term_label(term)))
            weight_col.slider(
                "Weight", 0.0, ss.MAX_WEIGHT, abs(term.weight), 0.1, key=f"weight-{tk}", on_change=on_weight, args=(state, i, tk),
                label_visibility="collapsed",
            )  # fmt: skip
            not_col.toggle("not", value=term.weight < 0, key=f"not-{tk}", on_change=on_weight, args=(state, i, tk))
            remove_col.button("✕", key=f"remove-{tk}", on_click=on_remove, args=(state, i), help="Remove this term")
        add_col, image_col = st.columns([3, 2], vertical_alignment="bottom")
        add_col.text_input("Add words", key=ss.ADD_TEXT, on_change=on_add_text, args=(state,), disabled=broken, placeholder="and… (press Enter)")
        key = f"add-upload-{state[ss.UPLOAD_GEN]}"
        image_col.file_uploader(
            "Add an image", type=UPLOAD_TYPES, key=key, on_change=on_add_upload, args=(state, key, min_side),
            disabled=broken, max_upload_size=MAX_UPLOAD_MB,
        )  # fmt: skip


def query_heading(state: MutableMapping[str, Any], query_terms: tuple[Term, ...]) -> None:
    previews = [state.get(ss.PREVIEWS, {}).get(t.label) for t in query_terms if isinstance(t.value, bytes)]
    previews = [p for p in previews if p]
    if previews:
        left, right = st.columns([1, 8], vertical_alignment="center")
        left.image(previews[0], width=96)
        right.subheader(results.md(ss.title(query_terms)))
    else:
        st.subheader(results.md(ss.title(query_terms)))


def downloads(state: MutableMapping[str, Any], hits: list[Any]) -> None:
    row = st.container(horizontal=True, gap="small")
    row.download_button("Download CSV", csv_text(hits), file_name="viewfinder-results.csv", mime="text/csv", key="csv")
    chosen = [h for h in hits if h.path in state.get(ss.SELECTED, set())]
    if chosen and row.button(f"ZIP of {len(chosen)} selected", key="zip"):
        inside, left_out = zip_selection(chosen)
        st.download_button(
            "Save the ZIP", b"".join(zip_stream(inside)), file_name="viewfinder-selected.zip", mime="application/zip", key="zip-save"
        )
        if left_out:
            st.caption(f"{len(left_out)} of the selected files are not in the ZIP: it stops at {results.human_bytes(ZIP_MAX_BYTES)} of originals.")


def main(home: Path) -> None:
    st.set_page_config(page_title="Viewfinder", page_icon=":material/image_search:", layout="wide")
    st.title("Viewfinder")
    library = open_library(home)
    state = st.session_state
    ss.init_state(state)
    home_key = str(home)
    info, found = resources.library_facts(home_key, resources.generation(library))
    sidebar.facts(info)
    if st.sidebar.button("Reload library", help="Pick up images indexed since the page was opened."):
        library.refresh()
        st.rerun()
    if dupes_view.chosen() == "Duplicates":
        dupes_view.show(library, home_key, resources.generation(library), resources.thumbnails(home_key))
        return
    flt = sidebar.filters(found)
    flt = replace(flt, tags=tag_facet.picked(home_key, resources.generation(library), library))
    per_page = sidebar.results_options()

    model = resources.load_model(library.model or "", Settings.from_env().device)
    if model.encoder is None:
        model_problem(model, home)
    query_inputs(state, model)
    try:
        query = ss.build_query(state, flt, per_page)
    except ViewfinderError as err:
        st.error(str(err))
        return
    if query is None:
        st.info("Type a description and press Enter, or drop an image on the upload box.")
        return

    thumbs = resources.thumbnails(home_key)
    searcher = ss.memo(state, "_searcher", (id(library), id(model)), lambda: Searcher(library, model.require))
    try:
        ss.check_indexed(library, query)
        page = ss.results_for(state, searcher, query, resources.generation(library))
    except ViewfinderError as err:
        st.error(str(err))
        return
    hits = page.results.hits
    if state[ss.OPEN]:
        opened = next((hit for hit in hits if hit.path == state[ss.OPEN]), None)
        results.detail(state[ss.OPEN], opened, thumbs, lambda: on_close(state), lambda p: on_similar(state, p))
    query_heading(state, query.terms)
    for notice in page.results.notices:
        st.info(notice)
    if page.results.cut:
        left, right = st.columns([6, 2], vertical_alignment="center")
        left.caption(f"{page.results.cut} results below the relevance cutoff are hidden.")
        right.button("Show them", key="show-cut", on_click=on_show_cut, args=(state,), type="tertiary")
    if not hits:
        st.info("No images match" + (" these filters." if flt.active else " this query."))
        return
    st.caption(f"{len(hits)} results in {page.seconds:.2f} s" + (" (filtered)" if flt.active else ""))
    downloads(state, hits)
    root = found.folders[0][0] if found.folders else ""
    actions = results.Actions(
        open=lambda p: on_open(state, p), similar=lambda p: on_similar(state, p), only=lambda p: on_only(state, p),
        select=lambda p, key: on_select(state, p, key), selected=frozenset(state.get(ss.SELECTED, set())),
    )  # fmt: skip
    results.grid(hits, root, thumbs, actions)
    if page.more:
        st.button("Load more", on_click=on_more, args=(state,), key="load-more")
