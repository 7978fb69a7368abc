"""Load: one file -> its content hash and, unless that content is already embedded, model-ready pixels.

Runs in worker threads (Pillow and hashlib release the GIL), a bounded number of files ahead of the
model, so that reading and decoding hide behind the forward pass.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from indexer.walk import FoundFile
from search.errors import ImageDecodeError
from search.images import ImageInfo, decode_image, read_image_info

T = TypeVar("T")
R = TypeVar("R")

SIGNAL_POLL_S = 0.25  # how often a waiting main thread wakes to run a pending Ctrl-C


def result_of(future: Future[R]) -> R:
    """``future.result()``, waking every ``SIGNAL_POLL_S``: Linux may deliver a process's SIGINT to any of
    its threads, and then a main thread blocked without a timeout would not run the handler until the
    future completes (found as a Ctrl-C that waited out a 60 s model load on a loaded CI machine)."""
    while True:
        try:
            return future.result(timeout=SIGNAL_POLL_S)
        except TimeoutError:
            continue


@dataclass(frozen=True, slots=True)
class Loaded:
    file: FoundFile  # size and mtime as read, not as walked
    content_hash: str | None = None
    info: ImageInfo | None = None
    pixels: NDArray[np.float32] | None = None  # to embed
    reuse_id: int | None = None  # FAISS id whose stored vector has the same content
    reason: str | None = None  # why it was skipped

    @property
    def skipped(self) -> bool:
        return self.reason is not None


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def load_file(
    file: FoundFile,
    known: Mapping[str, int],
    preprocess: Callable[[], Callable[..., NDArray[np.float32]]],
    min_side: Callable[[], int | None],
) -> Loaded:
    """Never raises for a bad file: the reason goes into the result and the run goes on."""
    try:
        with open(file.path, "rb") as fh:
            data = fh.read()
            st = os.fstat(fh.fileno())
    except OSError as err:
        return Loaded(file=file, reason=f"unreadable: {err.strerror or err}")
    file = FoundFile(path=file.path, size=st.st_size, mtime_ns=st.st_mtime_ns)
    digest = content_hash(data)
    try:
        if digest in known:
            return Loaded(file=file, content_hash=digest, info=read_image_info(data), reuse_id=known[digest])
        image, info = decode_image(data, min_side=min_side())
        return Loaded(file=file, content_hash=digest, info=info, pixels=preprocess()(image))
    except ImageDecodeError as err:
        return Loaded(file=file, content_hash=digest, reason=err.reason)
    except MemoryError:
        return Loaded(file=file, content_hash=digest, reason="out of memory while decoding")


def bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int) -> Iterator[R]:
    """``map`` over a thread pool, in order, with at most ``ahead`` results waiting (memory stays flat)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="viewfinder-load")
    pending: deque = deque()
    interrupted = False
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield result_of(pending.popleft())
        while pending:
            yield result_of(pending.popleft())
    except KeyboardInterrupt:
        interrupted = True  # answer Ctrl-C now: a worker may be waiting for the model (run.LazyEncoder)
        raise
    finally:  # on an error or an abandoned generator, drop the work not started yet
        pool.shutdown(wait=not interrupted, cancel_futures=True)
