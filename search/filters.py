"""Search filters -> a boolean mask over FAISS ids: folder, capture-date range, file formats, minimum
width/height, camera make/model and a path glob.

``allowed_mask`` turns a :class:`Filter` into the ``allowed`` argument of ``Library.search_vector``;
``facets`` lists what the filter widgets can offer (the folders, formats and capture dates present).
Both are SQL over the catalog (``search.catalog.FileRow``) inside the caller's session.

Rules:
* ``folder`` keeps the images in that folder and in every folder below it (a case-sensitive prefix
  match on whole path components: ``/a/b`` does not take in ``/a/bc``).
* A date bound keeps images whose capture date (EXIF ``DateTimeOriginal``, else ``DateTime``) lies in
  the inclusive range; images without a capture date are left out as soon as either bound is set.
* ``formats`` keeps images in any of the named formats (Pillow names: 'JPEG', 'PNG'...); empty = any.
  ``Filter.make`` accepts any case and the usual aliases (jpg, tif, heic) and refuses unknown names.
* ``min_width``/``min_height`` keep images at least that many pixels wide/high (as displayed).
* ``camera`` keeps images whose EXIF make or model contains the text (any case).
* ``tags`` keeps images that hold every one of the labels (``viewfinder tag``; any case).
* ``glob`` keeps paths matching a shell pattern (``*``, ``?``, ``[...]``; case-sensitive); a pattern
  without ``/`` is matched against the file name only (``*.png``), one with ``/`` against the whole path.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import numpy as np
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from search.catalog import FileRow
from search.filterspec import Filter, format_name  # noqa: F401 - re-exported: callers import Filter from here
from search.errors import QueryError
from search.records import Status
from search.tagdb import tag_condition


@dataclass(frozen=True, slots=True)
class Facets:
    """What the indexed images of a library span, for the filter widgets."""

    folders: tuple[tuple[str, int], ...]  # (folder, images in it and below), sorted; common root first
    formats: tuple[tuple[str, int], ...]  # (format, images), most frequent first
    first_taken: datetime | None
    last_taken: datetime | None
    dated: int  # images that have a capture date


def _indexed() -> list[ColumnElement[bool]]:
    return [FileRow.status == str(Status.INDEXED), FileRow.faiss_id.is_not(None)]


def conditions(flt: Filter) -> list[ColumnElement[bool]]:
    """The SQL conditions on ``FileRow`` that a filter adds to 'indexed'."""
    out: list[ColumnElement[bool]] = []
    if flt.folder:
        prefix = flt.folder.rstrip("/") + "/"
        out.append(func.substr(FileRow.path, 1, len(prefix)) == prefix)  # LIKE would ignore case
    if flt.date_from:
        out.append(FileRow.taken_at >= datetime.combine(flt.date_from, time.min))
    if flt.date_to:
        out.append(FileRow.taken_at < datetime.combine(flt.date_to + timedelta(days=1), time.min))
    if flt.date_from or flt.date_to:
        out.append(FileRow.taken_at.is_not(None))
    if flt.formats:
        out.append(FileRow.format.in_(sorted(flt.formats)))
    if flt.min_width:
        out.append(FileRow.width >= flt.min_width)
    if flt.min_height:
        out.append(FileRow.height >= flt.min_height)
    if flt.camera:
        needle = f"%{flt.camera.strip().lower()}%"
        out.append(
            func.lower(func.coalesce(FileRow.camera_make, "") + " " + func.coalesce(FileRow.camera_model, "")).like(needle)
        )
    if flt.glob:
        pattern = flt.glob if "/" in flt.glob else "*/" + flt.glob
        out.append(FileRow.path.op("GLOB")(pattern))
    if flt.tags:
        out.extend(tag_condition(flt.tags))
    return out


def allowed_mask(session: Session, flt: Filter, rows: int) -> np.ndarray | None:
    """A boolean mask of length ``rows`` (``library.snapshot.vector_rows``): True for the FAISS ids of the
    indexed images that pass the filter. None when the filter is empty (everything is allowed)."""
    if not flt.active:
        return None
    stmt = select(FileRow.faiss_id).where(*_indexed(), *conditions(flt))
    ids = np.fromiter(session.scalars(stmt), dtype=np.int64)
    mask = np.zeros(rows, dtype=bool)
    mask[ids[(ids >= 0) & (ids < rows)]] = True
    return mask


def folder_counts(paths: list[str]) -> tuple[tuple[str, int], ...]:
    """Every folder that holds images, and its ancestors up to the folder common to all of them, with the
    number of images in it and below. Pure."""
    if not paths:
        return ()
    direct = Counter(os.path.dirname(p) for p in paths)
    root = os.path.commonpath(list(direct)) if len(direct) > 1 else next(iter(direct))
    totals: Counter[str] = Counter()
    for folder, n in direct.items():
        current = folder
        while True:
            totals[current] += n
            if current == root or len(current) <= len(root):
                break
            current = os.path.dirname(current)
    return tuple(sorted(totals.items()))


def facets(session: Session) -> Facets:
    paths = list(session.scalars(select(FileRow.path).where(*_indexed())))
    formats = session.execute(
        select(FileRow.format, func.count()).where(*_indexed(), FileRow.format.is_not(None)).group_by(FileRow.format)
    ).all()
    first, last, dated = session.execute(
        select(func.min(FileRow.taken_at), func.max(FileRow.taken_at), func.count(FileRow.taken_at)).where(*_indexed())
    ).one()
    return Facets(
        folders=folder_counts(paths),
        formats=tuple(sorted(((f, int(n)) for f, n in formats), key=lambda item: (-item[1], item[0]))),
        first_taken=first,
        last_taken=last,
        dated=int(dated),
    )
