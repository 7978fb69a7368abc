"""Domain errors. The library raises these; only the CLI and the UI turn them into messages."""

from __future__ import annotations


class ViewfinderError(Exception):
    """Base class: every error the library raises on purpose. ``str(err)`` is a user-facing sentence."""


class LibraryNotFound(ViewfinderError):
    """No library exists at the given home folder."""


class LibraryCorrupt(ViewfinderError):
    """A library file is missing, truncated or disagrees with the catalog."""


class SchemaTooNew(ViewfinderError):
    """The catalog was written by a newer Viewfinder than this one."""


class ModelMismatch(ViewfinderError):
    """The library was built with another model (or vector dimension) than the one asked for."""


class ModelLoadError(ViewfinderError):
    """The embedding model could not be loaded."""


class LibraryLocked(ViewfinderError):
    """Another indexer is writing to this library."""


class CatalogUnavailable(ViewfinderError):
    """The catalog's database server cannot be used: bad URL, missing driver, unreachable, refused login."""


class LibraryWriteError(ViewfinderError):
    """A library file could not be written (disk full, read-only disk, I/O error); the last committed
    state is kept as it was."""


class ImageDecodeError(ViewfinderError):
    """A file or upload could not be decoded as an image. ``reason`` is short, e.g. 'truncated file'."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class QueryError(ViewfinderError):
    """A query cannot be run (empty text, nothing indexed, unknown image path...)."""


class ForgetError(ViewfinderError):
    """``forget`` was given a path that still exists or that the library does not hold (nothing is removed)."""


class EvalInputError(ViewfinderError):
    """An evaluation input (captions file, images folder, class tree) cannot be used."""
