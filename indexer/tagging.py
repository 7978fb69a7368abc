"""The write side of zero-shot tags: store a label set and tag every indexed image with it (one
transaction: a kill leaves the previous tags), and tag the rows each index batch commits (in that
batch's own transaction, see ``LibraryWriter.commit``). Scoring rules: ``search/tags.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from search import catalog
from search.errors import QueryError
from search.snapshot import read_snapshot
from search.records import Vectors
from search.tagdb import META_KEY, LabelRow, LabelSet, TagRow, tag_counts
from search.tags import (
    BLOCK,
    Tagged,
    TagRule,
    check_rule,
    check_threshold,
    clean_labels,
    label_vectors,
    model_rule,
    tag_block,
    tag_vectors,
    templates_version,
)
from search.vectors import open_vectors

if TYPE_CHECKING:
    from indexer.writer import LibraryWriter

_INSERT = "INSERT OR REPLACE INTO tags (faiss_id, label_id, score) VALUES (?, ?, ?)"
WRITE_ROWS = 200_000  # tag rows per executemany


@dataclass(frozen=True, slots=True)
class TagReport:
    labels: tuple[str, ...]
    rule: TagRule
    images: int  # indexed images scored
    tagged: int  # images that kept at least one label
    tags: int  # (image, label) rows written
    counts: tuple[tuple[str, int], ...]  # per label, most frequent first
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "rule": self.rule.to_json(),
            "images": self.images,
            "tagged": self.tagged,
            "untagged": self.images - self.tagged,
            "tags": self.tags,
            "counts": [{"label": name, "images": n} for name, n in self.counts],
            "seconds": round(self.seconds, 3),
        }


def write_tags(session: Session, tagged: Tagged, label_ids: np.ndarray) -> int:
    """Insert the kept (image, label, score) rows inside the caller's transaction; returns how many."""
    rows = list(zip(tagged.faiss_ids.tolist(), label_ids[tagged.labels].tolist(), tagged.scores.tolist(), strict=True))
    conn = session.connection()
    for start in range(0, len(rows), WRITE_ROWS):
        conn.exec_driver_sql(_INSERT, rows[start : start + WRITE_ROWS])
    return len(rows)


def store_label_set(session: Session, names: Sequence[str], vectors: Vectors, rule: TagRule, info: dict[str, Any]) -> np.ndarray:
    """Replace the library's label set (and drop every tag); returns the new label ids in ``names`` order."""
    session.execute(delete(TagRow))
    session.execute(delete(LabelRow))
    data = [{"name": name, "vector": np.ascontiguousarray(vec, dtype=np.float32).tobytes()} for name, vec in zip(names, vectors, strict=True)]
    session.execute(insert(LabelRow), data)
    session.flush()
    by_name = dict(session.execute(LabelRow.__table__.select().with_only_columns(LabelRow.name, LabelRow.id)).all())
    catalog.write_meta(session, {META_KEY: {**info, "rule": rule.to_json()}})
    return np.array([by_name[name] for name in names], dtype=np.int64)


def tag_library(
    session: Session,
    vectors: np.ndarray,
    live: np.ndarray,
    names: Sequence[str],
    label_vecs: Vectors,
    rule: TagRule,
    info: dict[str, Any],
    on_block: Callable[[int], None] | None = None,
) -> TagReport:
    """Store the label set and tag every live row, inside the caller's one transaction."""
    started = time.perf_counter()
    label_ids = store_label_set(session, names, label_vecs, rule, info)
    written, tagged_images, done = 0, 0, 0
    for block in tag_vectors(vectors, live, label_vecs, rule, BLOCK):
        written += write_tags(session, block, label_ids)
        tagged_images += len(np.unique(block.faiss_ids))
        step = min(BLOCK, len(live) - done)
        done += step
        if on_block:
            on_block(step)
    session.flush()
    return TagReport(
        labels=tuple(names),
        rule=rule,
        images=len(live),
        tagged=tagged_images,
        tags=written,
        counts=tag_counts(session),
        seconds=time.perf_counter() - started,
    )


def tag_committed(session: Session, labels: LabelSet | None, first_id: int, vectors: Vectors) -> int:
    """Tag rows ``first_id ..`` just committed with ``vectors`` (the index hook); 0 without a label set."""
    if labels is None or len(vectors) == 0:
        return 0
    ids = np.arange(first_id, first_id + len(vectors), dtype=np.int64)
    return write_tags(session, tag_block(vectors, ids, labels.vectors, labels.rule), np.asarray(labels.ids, dtype=np.int64))


def tag_with(writer: LibraryWriter, encoder: Any, labels: Sequence[str], *, threshold: float, top: int | None,
             on_block: Callable[[int], None] | None = None) -> TagReport:  # fmt: skip
    """``viewfinder tag``: label vectors from the text tower (prompt ensemble), then every stored image
    vector scored and the label set + tags replaced in one transaction. The vision tower never runs.
    Raises ``QueryError`` for bad input before anything is written."""
    names = clean_labels(labels)
    rule = model_rule(encoder.model, threshold=check_threshold(threshold), top=top)
    check_rule(rule, len(names))
    if writer.dim is None or writer.vector_rows == 0:
        raise QueryError(f"The library in {writer.home} has no indexed images yet: run `viewfinder index FOLDER --home {writer.home}` first.")
    label_vecs = label_vectors(encoder.encode_text, names)
    from indexer.writer import utcnow

    info = {"model": writer.model, "templates": templates_version(), "tagged_at": utcnow().isoformat()}
    vectors = open_vectors(writer.vectors_path, writer.dim, writer.meta["dtype"], writer.vector_rows)
    live = read_snapshot(writer.engine).live
    with writer.writing("catalog"), writer.session() as session, session.begin():
        report = tag_library(session, vectors, live, names, label_vecs, rule, info, on_block)
    writer.forget_label_set()
    return report
