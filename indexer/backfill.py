"""Back-fill metadata that a newer reader extracts (``search.exif.META_VERSION``) into rows written by an
older one: the files' headers are read again (no pixels decoded, no model), one transaction per batch.

Runs inside ``viewfinder index`` for the unchanged files under the folders it was given (changed files
are read in full anyway). A file that cannot be read now keeps its row as it was and is tried again
by the next run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from search.catalog import FileRow, is_under
from search.errors import ImageDecodeError
from search.exif import META_VERSION
from search.images import ImageInfo, read_image_info
from search.records import Status

BATCH = 500


def stale_paths(session: Session, roots: Sequence[str]) -> list[str]:
    """Indexed rows under ``roots`` whose metadata came from an older reader."""
    stmt = select(FileRow.path).where(
        FileRow.status == str(Status.INDEXED),
        or_(FileRow.meta_version.is_(None), FileRow.meta_version < META_VERSION),
    )
    return sorted(p for p in session.scalars(stmt) if any(is_under(p, root) for root in roots))


def read_infos(paths: Sequence[str], workers: int, read: Callable[[str], ImageInfo] = read_image_info) -> dict[str, ImageInfo]:
    """path -> header info, for the files that can still be read."""

    def one(path: str) -> tuple[str, ImageInfo | None]:
        try:
            return path, read(path)
        except (ImageDecodeError, OSError):
            return path, None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return {path: info for path, info in pool.map(one, paths) if info is not None}


def apply(session: Session, infos: dict[str, ImageInfo]) -> None:
    """Write the back-filled columns, inside the caller's transaction."""
    for path, info in infos.items():
        session.execute(
            update(FileRow)
            .where(FileRow.path == path)
            .values(camera_make=info.camera_make, camera_model=info.camera_model, taken_at=info.taken_at, meta_version=META_VERSION)
        )


def backfill(open_session: Callable[[], Session], writing: Callable[[str], object], roots: Sequence[str], workers: int) -> int:
    """Back-fill the stale rows under ``roots``; returns how many rows were updated."""
    with open_session() as session:
        paths = stale_paths(session, roots)
    done = 0
    for start in range(0, len(paths), BATCH):
        infos = read_infos(paths[start : start + BATCH], workers)
        with writing("catalog"), open_session() as session, session.begin():  # type: ignore[attr-defined]
            apply(session, infos)
        done += len(infos)
    return done
