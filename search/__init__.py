"""Viewfinder's core: the shared contracts and the read path (open a library, search it)."""

from search.errors import (
    ImageDecodeError,
    LibraryCorrupt,
    LibraryLocked,
    LibraryNotFound,
    ModelLoadError,
    ModelMismatch,
    QueryError,
    SchemaTooNew,
    ViewfinderError,
)
from search.records import Hit, ImageRecord, IndexParams, LibraryInfo, Status
from search.settings import DEFAULT_MODEL, Settings

__all__ = [
    "DEFAULT_MODEL",
    "Hit",
    "ImageDecodeError",
    "ImageRecord",
    "IndexParams",
    "LibraryCorrupt",
    "LibraryInfo",
    "LibraryLocked",
    "LibraryNotFound",
    "ModelLoadError",
    "ModelMismatch",
    "QueryError",
    "SchemaTooNew",
    "Settings",
    "Status",
    "ViewfinderError",
]
