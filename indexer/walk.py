"""Walk: folder trees -> the image files in them, each once, in a stable order."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from search.images import is_image_candidate


@dataclass(frozen=True, slots=True)
class FoundFile:
    path: str  # absolute, symlinks in the walked folders kept as written
    size: int
    mtime_ns: int


@dataclass(slots=True)
class WalkResult:
    files: list[FoundFile] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (folder or file, reason)
    not_images: list[str] = field(default_factory=list)  # files named as roots that are not images

    @property
    def unreadable_dirs(self) -> list[str]:
        return [path for path, _ in self.unreadable]


def walk(roots: Iterable[Path], *, is_candidate: Callable[[Path], bool] = is_image_candidate) -> WalkResult:
    """Every image candidate under the roots. Symlinked folders are followed once (no loops), a file
    reached twice (hard link, symlink) is listed once, and unreadable folders are reported, not fatal."""
    result = WalkResult()
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    for root in roots:
        root_path = Path(os.path.abspath(os.path.expanduser(root)))
        try:
            st = root_path.stat()
        except OSError as err:
            result.unreadable.append((str(root_path), err.strerror or str(err)))
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk_dir(root_path, result, seen_dirs, seen_files, is_candidate)
        elif not _add_file(root_path, st, result, seen_files, is_candidate):
            result.not_images.append(str(root_path))  # named on purpose: say so (in a folder it is ignored)
    return result


def _walk_dir(top: Path, result: WalkResult, seen_dirs: set, seen_files: set, is_candidate: Callable[[Path], bool]) -> None:
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:  # a symlink loop or a folder linked twice
                continue
            seen_dirs.add(key)
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            result.unreadable.append((str(folder), err.strerror or str(err)))
            continue
        subdirs = []
        for entry in entries:
            try:
                est = entry.stat(follow_symlinks=True)
            except OSError:
                continue  # a dangling symlink, or a file that vanished during the walk
            if stat.S_ISDIR(est.st_mode):
                subdirs.append(Path(entry.path))
            elif stat.S_ISREG(est.st_mode):
                _add_file(Path(entry.path), est, result, seen_files, is_candidate)
        stack.extend(reversed(subdirs))  # depth-first, in name order


def _add_file(path: Path, st: os.stat_result, result: WalkResult, seen_files: set, is_candidate: Callable[[Path], bool]) -> bool:
    """Lists the file once; False when it is not an image candidate."""
    key = (st.st_dev, st.st_ino)
    if key in seen_files:
        return True
    if not is_candidate(path):
        return False
    seen_files.add(key)
    result.files.append(FoundFile(path=str(path), size=st.st_size, mtime_ns=st.st_mtime_ns))
    return True
