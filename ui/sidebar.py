"""The sidebar: library facts, the filters, and how many results a page shows."""

from __future__ import annotations

import os
from datetime import date, datetime

import streamlit as st

from search.filters import Facets, Filter
from search.records import LibraryInfo

PAGE_SIZES = (12, 24, 48, 96)
DEFAULT_PAGE_SIZE = 24

# widget keys
FOLDER, DATE_ON, DATES, FORMATS, PER_PAGE = "folder", "date_on", "dates", "formats", "per_page"


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
                f"- Index: {kind}" + (f" ({exact})" if exact else ""),
                f"- Last indexed: {when(info.last_indexed_at)}",
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
    return Filter(folder=folder or None, date_from=start, date_to=end, formats=frozenset(formats))


def date_range(picked: object) -> tuple[date | None, date | None]:
    """A date_input range value (a tuple of 0, 1 or 2 dates while the user picks) -> (from, to)."""
    if isinstance(picked, date):
        return picked, picked
    if isinstance(picked, (tuple, list)) and picked:
        return picked[0], picked[-1]
    return None, None


def page_size() -> int:
    st.sidebar.header("Results")
    return st.sidebar.selectbox("Results per page", PAGE_SIZES, index=PAGE_SIZES.index(DEFAULT_PAGE_SIZE), key=PER_PAGE)
