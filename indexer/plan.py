"""Plan: what the filesystem holds vs. what the catalog holds -> what this run has to do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from indexer.walk import FoundFile
from search.catalog import is_under


@dataclass(frozen=True, slots=True)
class Plan:
    todo: list[FoundFile]  # new or changed (size or mtime differ): read, hash, embed or reuse
    unchanged: int
    removed: list[str]  # in the catalog, under a walked root, gone from disk


def make_plan(
    found: Sequence[FoundFile],
    catalog: Mapping[str, tuple[int, int]],
    roots: Sequence[str],
    unreadable: Sequence[str] = (),
) -> Plan:
    """Pure. ``catalog`` maps path -> (size, mtime_ns). A file under a folder that could not be read
    this time is kept, not removed: an unmounted disk or a permission glitch must not lose the index."""
    on_disk = {f.path for f in found}
    todo = [f for f in found if catalog.get(f.path) != (f.size, f.mtime_ns)]
    removed = [
        path
        for path in catalog
        if path not in on_disk
        and any(is_under(path, root) for root in roots)
        and not any(is_under(path, gone) for gone in unreadable)
    ]
    return Plan(todo=todo, unchanged=len(found) - len(todo), removed=sorted(removed))
