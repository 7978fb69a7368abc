"""The "Duplicates" view of the page: near-duplicate clusters side by side, keeper first (the rule and the
default threshold are in ``search/dupes.py``). It only shows: moving files is ``viewfinder dupes --move-to``."""

from __future__ import annotations

import os

import streamlit as st

from search.dupes import DEFAULT_THRESHOLD, Cluster, find_clusters
from search.errors import ViewfinderError
from search.library import Library
from search.thumbs import Thumbnails
from ui.results import human_bytes, md, no_preview

VIEW, THRESHOLD, SHOWN = "view", "dupes_threshold", "dupes_shown"  # widget / state keys
VIEWS = ("Search", "Duplicates")
PAGE = 20  # clusters per "show more"
PER_ROW = 5


def chosen() -> str:
    """The view picked in the sidebar."""
    return str(st.sidebar.radio("View", VIEWS, key=VIEW, horizontal=True))


@st.cache_resource(show_spinner="Looking for near-duplicates…", max_entries=4)
def clusters(home: str, generation_key: object, threshold: float, _library: Library) -> list[Cluster]:
    return find_clusters(_library, threshold)


def member_caption(cluster: Cluster, i: int) -> str:
    member = cluster.members[i]
    rec = member.record
    role = "keeper" if i == 0 else ("identical file" if member.identical else f"{member.score:.3f}")
    size = f"{rec.width}×{rec.height}" if rec.width else "?"
    return f"{role} · {size} · {human_bytes(rec.size)} · {member.when:%Y-%m-%d} · {os.path.basename(rec.path)}"


def show_cluster(number: int, cluster: Cluster, thumbs: Thumbnails) -> None:
    title = f"Cluster {number}: {len(cluster.members)} images" + (" (byte-identical)" if cluster.all_identical else "")
    with st.container(border=True, key=f"cluster-{number}"):
        st.markdown(f"**{md(title)}** — keep {md(cluster.keeper.record.path)}")
        for start in range(0, len(cluster.members), PER_ROW):
            columns = st.columns(PER_ROW)
            for column, i in zip(columns, range(start, min(start + PER_ROW, len(cluster.members))), strict=False):
                with column:
                    path = cluster.members[i].record.path
                    try:
                        st.image(thumbs.get(path), caption=member_caption(cluster, i), width="stretch")
                    except ViewfinderError as err:
                        st.warning(no_preview(err))
                        st.caption(md(member_caption(cluster, i)))


def show(library: Library, home: str, generation_key: object, thumbs: Thumbnails) -> None:
    st.header("Duplicates")
    threshold = st.slider(
        "Similarity threshold", 0.80, 1.0, value=DEFAULT_THRESHOLD, step=0.005, key=THRESHOLD,
        help="Cosine similarity at which two images count as near-duplicates.",
    )  # fmt: skip
    found = clusters(home, generation_key, float(threshold), library)
    if not found:
        st.info("No near-duplicates at this threshold.")
        return
    extra = sum(len(c.others) for c in found)
    extra_bytes = sum(m.record.size for c in found for m in c.others)
    st.caption(
        f"{len(found)} clusters: {extra} images ({human_bytes(extra_bytes)}) besides the keepers (most pixels, then oldest). "
        "Nothing is moved from here: `viewfinder dupes --move-to DIR` moves the others aside, and `--undo` puts them back."
    )
    shown = st.session_state.get(SHOWN, PAGE)
    for number, cluster in enumerate(found[:shown], start=1):
        show_cluster(number, cluster, thumbs)
    if len(found) > shown:
        st.button("Show more clusters", key="dupes-more", on_click=lambda: st.session_state.__setitem__(SHOWN, shown + PAGE))
