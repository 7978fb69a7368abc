"""Fault injection for the kill/resume and disk-full tests: a no-op unless ``VIEWFINDER_FAULT`` is set.

``VIEWFINDER_FAULT="POINT[:N]"`` kills this process with SIGKILL (no cleanup, no ``finally``, no flush:
what ``kill -9``, the OOM killer or a power cut does) the N-th time (default 1st) the indexer reaches
``POINT``. ``"enospc@POINT[:N]"`` raises ``OSError(ENOSPC)`` there instead, as a full disk would.

The points, in the order a run meets them:

=====================  ===========================================================================
``walk``               each regular file the walk looks at (so ``walk:5`` dies in the middle of the walk)
``batch.embedded``     a batch has been through the model; nothing of it is written yet
``vectors.appended``   the batch's vectors are appended and fsynced; its catalog rows are not committed
``vectors.append``     just before the batch's vectors are written (``enospc@`` here: disk full)
``batch.committed``    the batch's catalog transaction has committed
``removed``            catalog rows of deleted files are removed; the index is not updated yet
``index.train``        the index is about to be (re)built or updated from the stored vectors
``index.shards``       an on-disk build's shards are written (temp files); nothing is merged yet
``index.merged``       an on-disk base (``index-G-K.base`` + ``.ivfdata``) is in place; no catalog row names it
``index.write``        just before the new index file is written (``enospc@`` here: disk full)
``index.tmp_written``  the new index is in ``index-N.faiss.tmp``, not yet renamed
``index.renamed``      ``index-N.faiss`` is in place; the catalog still names the previous index
``index.committed``    the catalog names the new index; the previous index file is not yet removed
=====================  ===========================================================================
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

ENV = "VIEWFINDER_FAULT"
POINTS = frozenset(
    {
        "walk",
        "batch.embedded",
        "vectors.append",
        "vectors.appended",
        "batch.committed",
        "removed",
        "index.train",
        "index.shards",
        "index.merged",
        "index.write",
        "index.tmp_written",
        "index.renamed",
        "index.committed",
    }
)
ACTIONS = frozenset({"kill", "enospc"})

T = TypeVar("T")
_seen: Counter[str] = Counter()
_lock = threading.Lock()


def parse(spec: str) -> tuple[str, str, int]:
    """``'[ACTION@]POINT[:N]'`` -> (action, point, n). Pure; raises ValueError on a typo (a silently
    ignored fault would make a test pass for the wrong reason)."""
    action, _, rest = spec.strip().rpartition("@")
    point, _, count = rest.partition(":")
    action = action or "kill"
    if action not in ACTIONS or point not in POINTS or (count and not count.isdigit()):
        raise ValueError(f"{ENV}={spec!r}: expected [kill@|enospc@]POINT[:N] with POINT one of {sorted(POINTS)}")
    return action, point, int(count or 1)


def reached(point: str) -> None:
    """Mark that the indexer got to ``point``; fire the configured fault when it is this one's turn."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    action, wanted, n = parse(spec)
    if point != wanted:
        return
    with _lock:
        _seen[point] += 1
        due = _seen[point] == n
    if not due:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def watched(point: str, fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` itself, or (while a fault is configured) ``fn`` reaching ``point`` before each call."""
    if not os.environ.get(ENV):
        return fn

    def call(*args: object, **kwargs: object) -> T:
        reached(point)
        return fn(*args, **kwargs)

    return call


def reset() -> None:
    """Forget how often each point was reached (for tests that run several faulty runs in one process)."""
    with _lock:
        _seen.clear()
