"""One indexing run: walk -> plan -> load (threads) -> embed (batches) -> commit -> remove -> index."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from indexer import faults
from indexer.backfill import backfill
from indexer.dedupe import plan_embedding
from indexer.embed import OUT_OF_MEMORY, ChunkLimit, embed_halving
from indexer.load import SIGNAL_POLL_S, Loaded, bounded_map, load_file
from indexer.plan import make_plan
from indexer.walk import FoundFile, walk
from indexer.writer import LibraryWriter, utcnow
from search import ann, catalog
from search.encoder import Encoder
from search.images import is_image_candidate
from search.exif import META_VERSION
from search.records import ImageRecord, IndexParams, Status


class Progress(Protocol):
    def stage(self, text: str | None) -> None: ...
    def start(self, total: int) -> None: ...
    def advance(self, n: int) -> None: ...
    def finish(self) -> None: ...


class NoProgress:
    def stage(self, text: str | None) -> None:
        pass

    def start(self, total: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass(slots=True)
class IndexReport:
    indexed: int = 0  # embedded by the model in this run
    unchanged: int = 0
    backfilled: int = 0  # unchanged rows whose newer metadata (camera) was read from the files
    reused: int = 0  # new or changed files whose content was already embedded (renames, duplicates)
    removed: int = 0
    gone: list[dict[str, Any]] = field(default_factory=list)  # [{path, removed}]: roots given that no longer exist
    skipped: list[dict[str, str]] = field(default_factory=list)  # [{path, reason}] in this run
    unreadable_folders: list[dict[str, str]] = field(default_factory=list)
    images: int = 0  # indexed images in the library after the run
    index: IndexParams | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "backfilled": self.backfilled,
            "reused": self.reused,
            "removed": self.removed,
            "gone": self.gone,
            "skipped": self.skipped,
            "unreadable_folders": self.unreadable_folders,
            "images": self.images,
            "index": self.index.to_json() if self.index else None,
            "seconds": round(self.seconds, 3),
        }


class LazyEncoder:
    """Loads the model the first time a file actually needs embedding (thread-safe): a run that only
    finds unchanged files or renames never pays for it.

    The load (imports included: seconds) runs in a daemon thread that callers wait for, so Ctrl-C during
    it is answered at once: ``abandon()`` releases the waiting decoder threads and the process exits
    without waiting for the load to finish (as after a kill, nothing half-done is left: ``on_load``
    commits in one transaction)."""

    def __init__(self, factory: Callable[[], Encoder], on_load: Callable[[Encoder], None]) -> None:
        self._factory, self._on_load = factory, on_load
        self._encoder: Encoder | None = None
        self._failure: BaseException | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._started = False

    @property
    def loaded(self) -> Encoder | None:
        """The model if this run has loaded it, else None (never loads it)."""
        return self._encoder

    def _load(self) -> None:
        try:
            encoder = self._factory()
            self._on_load(encoder)
            self._encoder = encoder
        except BaseException as err:  # noqa: BLE001 - handed to every caller of get()
            self._failure = err
        finally:
            self._done.set()

    def get(self) -> Encoder:
        with self._lock:
            if not self._started:
                self._started = True
                threading.Thread(target=self._load, name="viewfinder-model-load", daemon=True).start()
        while not self._done.wait(SIGNAL_POLL_S):  # timed: a Ctrl-C another thread received is run here soon
            pass
        if self._failure is not None:  # every waiting worker gets the first failure, not a new attempt
            raise self._failure
        assert self._encoder is not None
        return self._encoder

    def abandon(self) -> None:
        """The run stops (Ctrl-C, an error): whoever still waits for the model stops waiting."""
        if not self._done.is_set():
            self._failure = self._failure or RunAbandoned("the run stopped before the model was loaded")
            self._done.set()


class RunAbandoned(Exception):
    """What a decoder thread waiting for the model gets when the run stops first."""


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


def batches(items: Iterable[Loaded], batch_size: int) -> Iterator[list[Loaded]]:
    """Groups of loaded files holding up to ``batch_size`` images to embed (reuses and skips ride along)."""
    group: list[Loaded] = []
    to_embed = 0
    for item in items:
        group.append(item)
        to_embed += item.pixels is not None
        if to_embed >= batch_size or len(group) >= 4 * batch_size:
            yield group
            group, to_embed = [], 0
    if group:
        yield group


BAD_NAME = "the file name is not valid UTF-8 (rename the file to index it)"
NOT_AN_IMAGE = "not an image (neither its name nor its content says it is one)"


def printable(path: str) -> str:
    """A path whose name holds bytes that are not UTF-8, with those bytes shown as \\xNN."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def split_bad_names(files: Sequence[FoundFile]) -> tuple[list[FoundFile], list[str]]:
    """(files the catalog can store, paths it cannot: names with bytes that are not UTF-8). Pure."""
    good: list[FoundFile] = []
    bad: list[str] = []
    for f in files:
        try:
            f.path.encode("utf-8")
        except UnicodeEncodeError:
            bad.append(f.path)
        else:
            good.append(f)
    return good, bad


def to_record(item: Loaded, status: Status) -> ImageRecord:
    info = item.info
    return ImageRecord(
        path=item.file.path,
        size=item.file.size,
        mtime_ns=item.file.mtime_ns,
        status=status,
        content_hash=item.content_hash,
        width=info.width if info else None,
        height=info.height if info else None,
        format=info.format if info else None,
        taken_at=info.taken_at if info else None,
        reason=item.reason,
        indexed_at=utcnow(),
        camera_make=info.camera_make if info else None,
        camera_model=info.camera_model if info else None,
        meta_version=META_VERSION,
    )


def index_paths(
    roots: Sequence[Path],
    writer: LibraryWriter,
    encoder_factory: Callable[[], Encoder],
    *,
    model_id: str,
    batch_size: int,
    progress: Progress | None = None,
    workers: int | None = None,
    flat_below: int = ann.FLAT_BELOW,
) -> IndexReport:
    started = time.perf_counter()
    progress = progress or NoProgress()
    report = IndexReport()
    progress.stage(f"looking for images in {', '.join(str(r) for r in roots)}")
    found = walk(roots, is_candidate=faults.watched("walk", is_image_candidate))
    files, bad_names = split_bad_names(found.files)
    root_paths = [os.path.abspath(os.path.expanduser(r)) for r in roots]
    gone = [r for r in root_paths if not os.path.lexists(r)]  # given but deleted: what was indexed there goes
    with writer.session() as session:
        states = catalog.file_states(session, root_paths)
        known = catalog.known_hashes(session)
    plan = make_plan(files, states, root_paths, [p for p in found.unreadable_dirs if p not in gone])
    report.gone = [{"path": g, "removed": sum(catalog.is_under(p, g) for p in plan.removed)} for g in gone]
    report.unchanged = plan.unchanged
    report.skipped.extend({"path": printable(p), "reason": BAD_NAME} for p in bad_names)
    report.skipped.extend({"path": printable(p), "reason": NOT_AN_IMAGE} for p in found.not_images)
    report.unreadable_folders = [{"path": printable(p), "reason": r} for p, r in found.unreadable if p not in gone]

    lazy = LazyEncoder(encoder_factory, on_load=lambda enc: writer.bind(model_id, enc.dim))
    load = lambda f: load_file(f, known, lambda: lazy.get().preprocess, lambda: lazy.get().preprocess.min_side)  # noqa: E731
    n_workers = workers or default_workers()
    limit = ChunkLimit()
    progress.start(len(plan.todo))
    try:
        stream = bounded_map(load, plan.todo, n_workers, ahead=max(2 * batch_size, 4 * n_workers))
        for group in batches(stream, batch_size):
            _commit_group(group, writer, lazy, known, report, limit)
            progress.advance(len(group))
    except BaseException:
        lazy.abandon()  # Ctrl-C while the model loads: the decoder threads stop waiting for it
        raise
    finally:
        progress.finish()
    progress.stage("reading metadata a newer Viewfinder keeps (no re-embedding)")
    report.backfilled = backfill(writer.session, writer.writing, root_paths, n_workers)
    if plan.removed:
        writer.remove(plan.removed)
        report.removed = len(plan.removed)
        faults.reached("removed")
    progress.stage("updating the index")
    try:
        if lazy.loaded is not None:  # the model is at hand: where its text queries sit, for the recall self-check
            writer.learn_modality(lazy.loaded.encode_text)
        report.index = writer.finish(flat_below=flat_below)
    finally:
        progress.stage(None)
    with writer.session() as session:
        report.images = catalog.counts(session)["indexed"]
    report.seconds = time.perf_counter() - started
    return report


def _commit_group(
    group: list[Loaded], writer: LibraryWriter, lazy: LazyEncoder, known: dict[str, int], report: IndexReport, limit: ChunkLimit
) -> None:
    loaded = [x for x in group if x.pixels is not None]
    reuse = [x for x in group if x.reuse_id is not None]
    skipped = [x for x in group if x.skipped]
    no_memory: list[Loaded] = []  # reported, not recorded: the next run tries them again
    plan = plan_embedding([x.content_hash for x in loaded], known)  # each content through the model once
    reuse += [replace(loaded[pos], pixels=None, reuse_id=fid) for pos, fid in plan.stored]
    embed = [loaded[pos] for pos in plan.embed]
    parts: list[np.ndarray] = []
    copies: list[Loaded] = []
    if embed:
        out = embed_halving(lazy.get().encode_pixels, np.stack([x.pixels for x in embed]), limit=limit.value)
        limit.value = out.limit
        row_of = {i: row for row, i in enumerate(out.done)}  # place in ``embed`` -> row of out.vectors
        no_memory = [replace(embed[i], pixels=None, reason=OUT_OF_MEMORY) for i in out.failed]
        no_memory += [replace(loaded[pos], pixels=None, reason=OUT_OF_MEMORY) for pos, i in plan.copies if i not in row_of]
        embed = [embed[i] for i in out.done]
        copied = [(pos, row_of[i]) for pos, i in plan.copies if i in row_of]
        copies = [replace(loaded[pos], pixels=None) for pos, _ in copied]
        if embed:
            parts.append(out.vectors)
        if copies:
            parts.append(out.vectors[[row for _, row in copied]])
    if reuse:
        parts.append(writer.stored([x.reuse_id for x in reuse]))
    reuse = [*copies, *reuse]
    records = [to_record(x, Status.INDEXED) for x in (*embed, *reuse)]
    vectors = np.concatenate(parts) if parts else np.zeros((0, writer.dim or 0), dtype=np.float32)
    faults.reached("batch.embedded")
    writer.commit(records, vectors, [to_record(x, Status.SKIPPED) for x in skipped])
    faults.reached("batch.committed")
    skipped = [*skipped, *no_memory]
    first = writer.vector_rows - len(records)
    for i, rec in enumerate(records):  # later duplicates of this content reuse the new vector
        if rec.content_hash:
            known.setdefault(rec.content_hash, first + i)
    report.indexed += len(embed)
    report.reused += len(reuse)
    report.skipped.extend({"path": x.file.path, "reason": x.reason or ""} for x in skipped)
