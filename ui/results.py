"""The result grid (thumbnails, best first) and the larger view of one result."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from search.errors import ImageDecodeError, ViewfinderError
from search.records import Hit, ImageRecord
from search.thumbs import PREVIEW_SIDE, Thumbnails

PER_ROW = 5
OnPath = Callable[[str], None]

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def md(text: str) -> str:
    """Text shown literally inside Markdown (file names may hold * _ [ ...)."""
    return _MARKDOWN.sub(r"\\\1", text)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def no_preview(err: ViewfinderError) -> str:
    reason = err.reason if isinstance(err, ImageDecodeError) else str(err)
    return f"No preview: {reason}"


def short_folder(path: str, root: str) -> str:
    """The folder of ``path`` from the library's top folder on (``pictures/2021/june``)."""
    folder = os.path.dirname(path)
    if root and (folder == root or folder.startswith(root.rstrip("/") + "/")):
        return os.path.relpath(folder, os.path.dirname(root.rstrip("/")) or "/")
    return folder


@dataclass(frozen=True, slots=True)
class Actions:
    """What a result's buttons do (callbacks into the page's state)."""

    open: OnPath
    similar: OnPath  # add the result to the query
    only: OnPath  # replace the query with the result
    select: Callable[[str, str], None]  # (path, checkbox key)
    selected: frozenset[str] = frozenset()


def card(hit: Hit, root: str, thumbs: Thumbnails, actions: Actions) -> None:
    name, folder = os.path.basename(hit.path), short_folder(hit.path, root)
    try:
        st.image(thumbs.get(hit.path), caption=f"{hit.score:.3f} · {name}", width="stretch")
    except ViewfinderError as err:  # the file went away or broke since it was indexed
        st.warning(no_preview(err))
        st.caption(f"{hit.score:.3f} · {md(name)}")
    st.caption(md(folder))
    row = st.container(horizontal=True, gap="small")
    row.button("Open", key=f"open-{hit.rank}", on_click=actions.open, args=(hit.path,), type="tertiary")
    row.button("More like this", key=f"similar-{hit.rank}", on_click=actions.similar, args=(hit.path,), type="tertiary",
               help="Add this image to the query")
    row.button("Only this", key=f"only-{hit.rank}", on_click=actions.only, args=(hit.path,), type="tertiary",
               help="Search for images like this one alone")
    key = f"select-{hit.rank}"
    st.checkbox("Select", value=hit.path in actions.selected, key=key, on_change=actions.select, args=(hit.path, key))
    if hit.group:
        with st.expander(f"+{len(hit.group)} near-duplicate{'s' if len(hit.group) > 1 else ''}"):
            for member in hit.group:
                try:
                    st.image(thumbs.get(member.path), caption=f"{member.score:.3f} · {os.path.basename(member.path)}", width="stretch")
                except ViewfinderError as err:
                    st.caption(f"{member.score:.3f} · {md(os.path.basename(member.path))} ({no_preview(err)})")


def grid(hits: list[Hit], root: str, thumbs: Thumbnails, actions: Actions) -> None:
    """Thumbnails, best first; ``root`` is the library's top folder (folders are shown from there on)."""
    for start in range(0, len(hits), PER_ROW):
        columns = st.columns(PER_ROW)
        for column, hit in zip(columns, hits[start : start + PER_ROW], strict=False):
            with column:
                card(hit, root, thumbs, actions)


def metadata(record: ImageRecord, hit: Hit | None) -> str:
    rows = [
        ("Score", f"{hit.score:.4f} (rank {hit.rank})" if hit else "-"),
        ("Folder", md(os.path.dirname(record.path))),
        (
            "Size",
            f"{record.width} × {record.height} px, {human_bytes(record.size)}"
            if record.width
            else human_bytes(record.size),
        ),
        ("Format", record.format or "-"),
        ("Camera", " ".join(x for x in (record.camera_make, record.camera_model) if x) or "-"),
        ("Taken", record.taken_at.strftime("%Y-%m-%d %H:%M:%S") if record.taken_at else "unknown"),
        ("Indexed", record.indexed_at.strftime("%Y-%m-%d %H:%M UTC") if record.indexed_at else "-"),
    ]
    return "  \n".join(f"**{key}:** {value}" for key, value in rows)


def detail(path: str, hit: Hit | None, thumbs: Thumbnails, on_close: Callable[[], None], on_similar: OnPath) -> None:
    """The open result, larger, with its metadata and full path."""
    with st.container(border=True, key="detail"):
        try:
            record = thumbs.record(path)
        except ViewfinderError as err:
            st.warning(str(err))
            st.button("Close", key="detail-close", on_click=on_close)
            return
        left, right = st.columns([3, 2])
        with left:
            try:
                st.image(thumbs.get(path, PREVIEW_SIDE), caption=os.path.basename(path), width="stretch")
            except ViewfinderError as err:
                st.warning(no_preview(err))
        with right:
            st.subheader(md(os.path.basename(path)))
            st.code(record.path, language=None, wrap_lines=True)
            st.markdown(metadata(record, hit))
            row = st.container(horizontal=True)
            row.button("More like this", key="detail-similar", on_click=on_similar, args=(path,))
            row.button("Close", key="detail-close", on_click=on_close)
