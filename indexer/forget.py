"""Forget files that are gone: the catalog rows of paths that no longer exist on disk, removed under the
writer lock, and the index brought up to date (``viewfinder forget``, and ``viewfinder index`` on a path
that no longer exists).

A file indexed by itself (``viewfinder index photo.jpg``) and later deleted is under no folder that a
later ``index`` walks, so nothing else would ever remove it. Only paths that are gone are forgotten: a file
or folder that still exists is refused (the next ``index`` of its folder would add it back), and for a
folder that exists, ``viewfinder index FOLDER`` already removes the files deleted under it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from indexer.writer import LibraryWriter
from search import ann, catalog
from search.errors import ForgetError
from search.records import IndexParams

Exists = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class Forgotten:
    paths: list[str]  # catalog rows removed
    images: int  # indexed images in the library afterwards
    index: IndexParams | None

    def to_json(self) -> dict[str, Any]:
        return {"forgotten": len(self.paths), "paths": self.paths, "images": self.images, "index": self.index.to_json() if self.index else None}


def absolute(path: str | Path) -> str:
    return os.path.abspath(os.path.expanduser(path))


def rows_under(session: Session, paths: Sequence[str]) -> dict[str, list[str]]:
    """For each given (absolute) path: the catalog paths equal to it or under it as a folder."""
    found: dict[str, list[str]] = {p: [] for p in paths}
    for (row,) in session.execute(select(catalog.FileRow.path)):
        for p in paths:
            if catalog.is_under(row, p):
                found[p].append(row)
    return found


def gone_rows(session: Session, exists: Exists = os.path.lexists) -> list[str]:
    """Catalog paths whose files are no longer on disk (a file on an unmounted disk counts as gone)."""
    return sorted(row for (row,) in session.execute(select(catalog.FileRow.path)) if not exists(row))


def plan_forget(session: Session, paths: Sequence[str], exists: Exists = os.path.lexists) -> list[str]:
    """The catalog paths to remove for the given paths; ``ForgetError`` (nothing removed) for a path that
    still exists or that the library does not hold."""
    wanted = [absolute(p) for p in paths]
    present = [p for p in wanted if exists(p)]
    if present:
        raise ForgetError(
            f"{', '.join(present)} still exist{'s' if len(present) == 1 else ''} on disk; `viewfinder forget` removes "
            "only paths that are gone (for a folder, `viewfinder index FOLDER` removes the files deleted under it)."
        )
    matches = rows_under(session, wanted)
    unknown = [p for p, rows in matches.items() if not rows]
    if unknown:
        raise ForgetError(f"The library holds nothing at {', '.join(unknown)}.")
    return sorted({row for rows in matches.values() for row in rows})


def forget(writer: LibraryWriter, rows: Sequence[str], *, flat_below: int = ann.FLAT_BELOW) -> Forgotten:
    """Remove ``rows`` (catalog paths) and bring the index up to date, under the writer's lock."""
    if rows:
        writer.remove(list(rows))
    index = writer.finish(flat_below=flat_below) if rows else writer.index_params
    with writer.session() as session:
        images = catalog.counts(session)["indexed"]
    return Forgotten(paths=list(rows), images=images, index=index)
