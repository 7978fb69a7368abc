"""Embed one batch of preprocessed images, halving the batch when the GPU runs out of memory.

A CUDA out-of-memory error is not fatal: the cache is emptied, the batch is split in halves and each half
is tried again, down to one image; an image that does not fit even alone is reported as failed (the
caller skips it with the reason ``OUT_OF_MEMORY``) and the run goes on. The smaller size that worked is
kept for the rest of the run, so one bad moment does not cost a failed attempt on every batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from search.records import Vectors

OUT_OF_MEMORY = "out of memory"
OOM_ERRORS: tuple[type[BaseException], ...] = (torch.OutOfMemoryError, MemoryError)


@dataclass(frozen=True, slots=True)
class Embedded:
    vectors: Vectors  # one row per image that was embedded, in input order
    done: list[int]  # input positions of those images
    failed: list[int]  # input positions that ran out of memory even alone
    limit: int | None  # the chunk size to use from now on: the one given, or smaller after an OOM


def free_gpu_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def embed_halving(
    encode: Callable[[NDArray[np.float32]], Vectors],
    pixels: NDArray[np.float32],
    *,
    limit: int | None = None,
    on_oom: Callable[[], None] = free_gpu_cache,
) -> Embedded:
    """Run ``encode`` over ``pixels`` in chunks of at most ``limit`` images (all at once when None);
    on out-of-memory, ``on_oom()`` and retry the chunk at half the size. Never raises for OOM."""
    n = len(pixels)
    size = max(1, min(limit or n, n))
    shrunk = False
    parts: list[Vectors] = []
    done: list[int] = []
    failed: list[int] = []
    start = 0
    while start < n:
        stop = min(n, start + size)
        try:
            parts.append(encode(pixels[start:stop]))
        except OOM_ERRORS:
            pass  # handled below, once the traceback (and the activations it holds) is released
        else:
            done.extend(range(start, stop))
            start = stop
            continue
        on_oom()
        if size > 1:
            size, shrunk = size // 2, True
        else:
            failed.append(start)
            start += 1
    vectors = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
    return Embedded(vectors=vectors, done=done, failed=failed, limit=size if shrunk else limit)


@dataclass(slots=True)
class ChunkLimit:
    """The chunk size that fits on the device, carried from one batch to the next (None: no limit yet)."""

    value: int | None = None
