"""The tag facet in the sidebar: the library's labels (``viewfinder tag``) with how many images hold each;
picking some keeps the images that hold all of them (``Filter.tags``)."""

from __future__ import annotations

import streamlit as st
from sqlalchemy.orm import Session

from search.library import Library
from search.tagdb import tag_counts

TAGS = "tags"  # widget key


@st.cache_resource(show_spinner=False, max_entries=8)
def counts(home: str, generation_key: object, _library: Library) -> tuple[tuple[str, int], ...]:
    with Session(_library.engine) as session:
        return tag_counts(session)


def picked(home: str, generation_key: object, library: Library) -> frozenset[str]:
    """The tag multiselect (only when the library has labels); returns the labels picked."""
    found = counts(home, generation_key, library)
    if not found:
        return frozenset()
    by_name = dict(found)
    chosen = st.sidebar.multiselect(
        "Tags",
        [name for name, n in found if n > 0],
        format_func=lambda name: f"{name} ({by_name.get(name, 0)})",
        key=TAGS,
        placeholder="Any tag",
        help="Labels given by `viewfinder tag`; images holding every label picked are kept.",
    )
    return frozenset(chosen)
