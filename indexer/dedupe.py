"""Each content once per run: which images of a batch go through the model, and which take the vector
of an identical file (embedded earlier in the run, earlier in the same batch, or in a previous run).

Loading runs ahead of committing in worker threads, so whether a duplicate was already known when it was
loaded depends on timing; deciding again here, at commit time, makes the counts the same on every run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dedup:
    embed: list[int]  # positions to run through the model: the first of each content not stored yet
    copies: list[tuple[int, int]]  # (position, position in ``embed`` order of the same content)
    stored: list[tuple[int, int]]  # (position, FAISS id of a stored vector with the same content)


def plan_embedding(hashes: Sequence[str | None], known: Mapping[str, int]) -> Dedup:
    """Pure. ``hashes[i]`` is the content hash of the i-th image to embed; ``known`` maps content hashes
    to stored FAISS ids. An image without a hash is always embedded."""
    embed: list[int] = []
    copies: list[tuple[int, int]] = []
    stored: list[tuple[int, int]] = []
    first: dict[str, int] = {}  # content hash -> its place in ``embed``
    for pos, digest in enumerate(hashes):
        if digest is not None and digest in known:
            stored.append((pos, known[digest]))
        elif digest is not None and digest in first:
            copies.append((pos, first[digest]))
        else:
            if digest is not None:
                first[digest] = len(embed)
            embed.append(pos)
    return Dedup(embed=embed, copies=copies, stored=stored)
