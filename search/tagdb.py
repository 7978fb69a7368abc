"""The tag tables (catalog revision 0003) and what the read path asks of them: the label set, counts
per label, each image's tags, and the SQL condition of a tag filter. Scoring is in ``search/tags.py``;
writing in ``indexer/tagging.py``.

``meta['tagging']`` holds the rule of the stored label set (``TagRule.to_json()``), the model and the
prompt templates its label vectors were made with.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, ColumnElement, Float, ForeignKey, Integer, LargeBinary, Text, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from search.catalog import Base, FileRow, MetaRow
from search.records import Status, Vectors
from search.tags import TagRule

META_KEY = "tagging"


class LabelRow(Base):
    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class TagRow(Base):
    __tablename__ = "tags"

    faiss_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    label_id: Mapped[int] = mapped_column(Integer, ForeignKey("labels.id", ondelete="CASCADE"), primary_key=True)
    score: Mapped[float] = mapped_column(Float)


@dataclass(frozen=True, slots=True)
class LabelSet:
    """The library's labels (catalog order = ``ids`` order) with their text vectors and the rule."""

    ids: tuple[int, ...]
    names: tuple[str, ...]
    vectors: Vectors  # (labels, dim) float32
    rule: TagRule
    info: dict[str, Any]  # meta['tagging']: rule, model, templates, tagged_at


def label_set(session: Session) -> LabelSet | None:
    """The stored label set, or None when ``viewfinder tag`` has never run on this library."""
    raw = session.get(MetaRow, META_KEY)
    rows = session.execute(select(LabelRow.id, LabelRow.name, LabelRow.vector).order_by(LabelRow.id)).all()
    if raw is None or not rows:
        return None
    info = json.loads(raw.value)
    vectors = np.stack([np.frombuffer(vec, dtype=np.float32) for _, _, vec in rows])
    return LabelSet(
        ids=tuple(int(i) for i, _, _ in rows),
        names=tuple(name for _, name, _ in rows),
        vectors=vectors,
        rule=TagRule.from_json(info["rule"]),
        info=info,
    )


def _live_tags() -> Any:
    """tags joined to the indexed rows they belong to (tags of replaced FAISS ids match nothing)."""
    return (
        select(LabelRow.name, TagRow.faiss_id, TagRow.score)
        .join(TagRow, TagRow.label_id == LabelRow.id)
        .join(FileRow, FileRow.faiss_id == TagRow.faiss_id)
        .where(FileRow.status == str(Status.INDEXED))
    )


def tag_counts(session: Session) -> tuple[tuple[str, int], ...]:
    """(label, indexed images holding it) for every label of the set, most frequent first (0 included)."""
    counted = session.execute(
        select(LabelRow.name, func.count(FileRow.id))
        .select_from(LabelRow)
        .outerjoin(TagRow, TagRow.label_id == LabelRow.id)
        .outerjoin(FileRow, (FileRow.faiss_id == TagRow.faiss_id) & (FileRow.status == str(Status.INDEXED)))
        .group_by(LabelRow.id)
    ).all()
    return tuple(sorted(((name, int(n)) for name, n in counted), key=lambda item: (-item[1], item[0].casefold())))


def tags_of(session: Session, faiss_ids: Iterable[int]) -> dict[int, tuple[tuple[str, float], ...]]:
    """faiss id -> its (label, score) pairs, best first."""
    wanted = [int(i) for i in faiss_ids]
    out: dict[int, list[tuple[str, float]]] = {}
    for start in range(0, len(wanted), 500):
        stmt = (
            select(TagRow.faiss_id, LabelRow.name, TagRow.score)
            .join(LabelRow, LabelRow.id == TagRow.label_id)
            .where(TagRow.faiss_id.in_(wanted[start : start + 500]))
        )
        for fid, name, score in session.execute(stmt):
            out.setdefault(int(fid), []).append((name, float(score)))
    return {fid: tuple(sorted(pairs, key=lambda p: -p[1])) for fid, pairs in out.items()}


def tag_condition(names: Iterable[str]) -> list[ColumnElement[bool]]:
    """Conditions on ``FileRow``: the image holds every one of the labels (case-insensitive names)."""
    out: list[ColumnElement[bool]] = []
    for name in sorted(set(names)):
        holders = (
            select(TagRow.faiss_id)
            .join(LabelRow, LabelRow.id == TagRow.label_id)
            .where(func.lower(LabelRow.name) == name.casefold())
        )
        out.append(FileRow.faiss_id.in_(holders))
    return out


def unknown_labels(session: Session, names: Iterable[str]) -> list[str]:
    """The names that are not labels of the library's set (for a clear message)."""
    known = {n.casefold() for n in session.scalars(select(LabelRow.name))}
    return sorted(n for n in set(names) if n.casefold() not in known)
