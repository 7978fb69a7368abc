"""Typed records shared by the read and the write path."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

if TYPE_CHECKING:  # numpy only for the type: the CLI's client path imports these records without numpy
    import numpy as np
    from numpy.typing import NDArray

Vectors: TypeAlias = "NDArray[np.float32]"  # (n, dim), rows L2-normalised


class Status(StrEnum):
    INDEXED = "indexed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One catalog row: a file the indexer has seen."""

    path: str
    size: int
    mtime_ns: int
    status: Status
    faiss_id: int | None = None
    content_hash: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    taken_at: datetime | None = None
    reason: str | None = None
    indexed_at: datetime | None = None
    camera_make: str | None = None  # EXIF Make
    camera_model: str | None = None  # EXIF Model
    meta_version: int | None = None  # search.exif.META_VERSION of the reader that filled the row; None: before it

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = str(self.status)
        for key in ("taken_at", "indexed_at"):
            value = out[key]
            out[key] = value.isoformat() if value is not None else None
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageRecord:
        """The inverse of ``to_json`` (keys it does not know are ignored)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["status"] = Status(known["status"])
        for key in ("taken_at", "indexed_at"):
            if known.get(key):
                known[key] = datetime.fromisoformat(known[key])
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Hit:
    rank: int  # 1-based
    score: float  # cosine similarity, exact (re-ranked from the stored vectors)
    record: ImageRecord
    group: tuple[Hit, ...] = ()  # near-duplicates collapsed into this hit (search.ranking), best first

    @property
    def path(self) -> str:
        return self.record.path

    def to_json(self) -> dict[str, Any]:
        out = {"rank": self.rank, "path": self.record.path, "score": round(self.score, 6), **{
            k: v for k, v in self.record.to_json().items() if k != "path"
        }}
        if self.group:
            out["group"] = [{"path": h.path, "score": round(h.score, 6)} for h in self.group]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Hit:
        """The inverse of ``to_json`` (the score as rounded there)."""
        group = tuple(
            cls(rank=0, score=float(g["score"]), record=ImageRecord(path=g["path"], size=0, mtime_ns=0, status=Status.INDEXED))
            for g in data.get("group") or ()
        )
        return cls(rank=int(data["rank"]), score=float(data["score"]), record=ImageRecord.from_json(data), group=group)


@dataclass(frozen=True, slots=True)
class IndexParams:
    """How the FAISS index is built. ``kind='flat'`` is exact; ``'ivfpq'`` is approximate + exact re-rank."""

    kind: Literal["flat", "ivfpq"]
    dim: int
    nlist: int = 0
    m: int = 0
    nbits: int = 0
    nprobe: int = 0
    rerank: int = 0  # candidates fetched from the index and re-scored exactly, at least
    trained_on: int = 0  # collection size the index was chosen/trained for
    tuned: bool = False  # the recall self-check changed the rule's choice (search.ann docstring)
    ondisk: bool = False  # inverted lists memory-mapped from disk (search.ondisk), not held in memory

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IndexParams:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class LibraryInfo:
    home: str
    model: str
    dim: int
    images: int
    skipped: int
    index: IndexParams | None
    last_indexed_at: datetime | None
    bytes_on_disk: dict[str, int] = field(default_factory=dict)
    index_check: dict[str, Any] | None = None  # the last recall self-check (search.recall.RecallCheck.to_json)
    pending: int = 0  # indexed images the index file does not hold yet (searched exactly until a run finishes)
    last_committed_at: datetime | None = None  # the last batch committed (an interrupted run commits, never finishes)

    def to_json(self) -> dict[str, Any]:
        return {
            "home": self.home,
            "model": self.model,
            "dim": self.dim,
            "images": self.images,
            "skipped": self.skipped,
            "index": self.index.to_json() if self.index else None,
            "last_indexed_at": self.last_indexed_at.isoformat() if self.last_indexed_at else None,
            "bytes_on_disk": self.bytes_on_disk,
            "index_check": self.index_check,
            "pending": self.pending,
            "last_committed_at": self.last_committed_at.isoformat() if self.last_committed_at else None,
        }
