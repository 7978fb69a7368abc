"""The sidebar: library facts, the filters, and how many results a page shows."""

from __future__ import annotations

import os
from datetime import date, datetime

import streamlit as st

from search.filters import Facets, Filter
from search.records import LibraryInfo
from ui.infotext import index_line, last_indexed_line

PAGE_SIZES = (12, 24, 48, 96)
DEFAULT_PAGE_SIZE = 24

# widget keys
FOLDER, DATE_ON, DATES, FORMATS, PER_PAGE = "folder", "date_on", "dates", "formats", "per_page"
MIN_WIDTH, MIN_HEIGHT, CAMERA, GLOB = "min_width", "min_height", "camera", "glob"
SORT_LABELS = {"relevance": "Relevance", "newest": "Newest first", "oldest": "Oldest first", "modified": "Recently modified"}
CUTOFF_LABELS = {"auto": "Automatic", "none": "Show everything", "score": "Minimum score"}


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "never"


def model_name(model: str) -> str:
    """A local model folder by its name (the full path is in the tooltip), a Hub model by its id."""
    return os.path.basename(model.rstrip("/")) if model.startswith("/") else model


def facts(info: LibraryInfo) -> None:
    st.sidebar.header("Library")
    kind = info.index.kind if info.index else "none"
    exact = {"flat": "exact", "ivfpq": "approximate, re-ranked exactly"}.get(kind, "")
    st.sidebar.markdown(
        "\n".join(
            [
                f"- Images indexed: **{info.images}**",
                f"- Skipped: **{info.skipped}**",
                f"- Model: `{model_name(info.model) or '(none yet)'}`",
                f"- Index: {index_line(info.to_json())}" if info.pending else f"- Index: {kind}" + (f" ({exact})" if exact else ""),
                f"- Last indexed: {when(info.last_indexed_at)}" if info.last_indexed_at and not info.pending
                else f"- Last indexed: {last_indexed_line(info.to_json())}",
            ]
        ),
        help=f"Library folder: {info.home}\n\nModel: {info.model}",
    )


def folder_label(folder: str, root: str, count: int) -> str:
    shown = folder if folder == root else os.path.relpath(folder, root)
    return f"{shown} ({count})"


def filters(found: Facets) -> Filter:
    """The filter widgets; returns what they select."""
    st.sidebar.header("Filters")
    counts = dict(found.folders)
    root = found.folders[0][0] if found.folders else ""
    folder = st.sidebar.selectbox(
        "Folder",
        ["", *counts],
        format_func=lambda f: "All folders" if not f else folder_label(f, root, counts.get(f, 0)),
        key=FOLDER,
    )
    start = end = None
    if found.dated and found.first_taken and found.last_taken:
        first, last = found.first_taken.date(), found.last_taken.date()
        on = st.sidebar.checkbox(
            "Filter by capture date",
            key=DATE_ON,
            help=f"{found.dated} images have a capture date (EXIF); the others are left out.",
        )
        picked = st.sidebar.date_input(
            "Capture date", value=(first, last), key=DATES, disabled=not on, format="YYYY-MM-DD"
        )
        if on:
            start, end = date_range(picked)
    else:
        st.sidebar.caption("No image in this library has a capture date (EXIF).")
    format_counts = dict(found.formats)
    formats = st.sidebar.multiselect(
        "File format",
        list(format_counts),
        format_func=lambda f: f"{f} ({format_counts.get(f, 0)})",
        key=FORMATS,
        placeholder="Any format",
    )
    with st.sidebar.expander("More filters"):
        min_width = st.number_input("Minimum width (px)", min_value=0, value=0, step=100, key=MIN_WIDTH)
        min_height = st.number_input("Minimum height (px)", min_value=0, value=0, step=100, key=MIN_HEIGHT)
        camera = st.text_input("Camera make or model", key=CAMERA, placeholder="e.g. Canon, iPhone")
        glob = st.text_input("File name pattern", key=GLOB, placeholder="e.g. *.png or */2024/*")
    return Filter.make(
        folder=folder or None, date_from=start, date_to=end, formats=frozenset(formats),
        min_width=int(min_width) or None, min_height=int(min_height) or None,
        camera=camera.strip() or None, glob=glob.strip() or None,
    )  # fmt: skip


def date_range(picked: object) -> tuple[date | None, date | None]:
    """A date_input range value (a tuple of 0, 1 or 2 dates while the user picks) -> (from, to)."""
    if isinstance(picked, date):
        return picked, picked
    if isinstance(picked, (tuple, list)) and picked:
        return picked[0], picked[-1]
    return None, None


def results_options() -> int:
    """Sort, relevance cutoff and grouping (kept in session state under ``ui.session``'s keys); returns
    how many results a page shows."""
    from ui import session as ss

    st.sidebar.header("Results")
    st.sidebar.selectbox("Sort by", list(SORT_LABELS), format_func=SORT_LABELS.__getitem__, key=ss.SORT)
    st.sidebar.selectbox(
        "Relevance cutoff", list(CUTOFF_LABELS), format_func=CUTOFF_LABELS.__getitem__, key=ss.CUTOFF,
        help="Automatic hides results that match no better than a generic photo would (search/cutoff.py).",
    )  # fmt: skip
    if st.session_state.get(ss.CUTOFF) == "score":
        st.sidebar.slider("Minimum score", -1.0, 1.0, step=0.01, key=ss.CUTOFF_SCORE)
    st.sidebar.checkbox("Group near-duplicates", key=ss.GROUP)
    st.sidebar.checkbox(
        "Prompt ensemble", key=ss.ENSEMBLE,
        help="Read a 1-3 word text through several photo templates averaged (search/prompts.py), not as typed.",
    )  # fmt: skip
    return st.sidebar.selectbox("Results per page", PAGE_SIZES, index=PAGE_SIZES.index(DEFAULT_PAGE_SIZE), key=PER_PAGE)
