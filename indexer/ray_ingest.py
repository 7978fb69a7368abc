"""``viewfinder index --ray``: the walk and the plan on the driver, reading, decoding and embedding on a
Ray cluster (Ray Data ``map_batches`` over an actor pool: one model per actor, a GPU each when the
cluster has GPUs), and every batch committed on the driver through the same ``LibraryWriter`` as the
local path (vectors appended and fsynced, then the catalog rows in one transaction), as results arrive.

A Ray worker that dies mid-run (kill -9) has its batch retried by Ray Data; nothing of it was committed
(only the driver commits), and each file comes back once, so a dead worker costs a retry, never a lost or
doubled row. Every file is embedded on the cluster (a content already in the library is embedded again
rather than copied from the stored vector: the workers have no access to the catalog); the rows and the
vectors (within float16 rounding) are those the local path makes.

Where the time goes: pass a ``RayTimings`` and it is filled with the driver's stages (connect, walk +
plan, waiting for batches, commit, index), the actors' own (start-up, model load, read + decode, embed:
each batch carries its actor's seconds back as columns) and Ray Data's iterator timers.

Ray is an extra: ``pip install 'viewfinder[ray]'``.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from indexer import faults
from indexer.load import Loaded, load_file
from indexer.plan import make_plan
from indexer.run import BAD_NAME, NOT_AN_IMAGE, IndexReport, NoProgress, Progress, printable, split_bad_names, to_record
from indexer.walk import FoundFile, walk
from indexer.writer import LibraryWriter
from search import ann, catalog, recall
from search.encoder import Encoder
from search.errors import ViewfinderError
from search.images import is_image_candidate
from search.records import Status

INSTALL = "pip install 'viewfinder[ray]'"


class RayUnavailable(ViewfinderError):
    """Ray is not installed, or the cluster address does not answer."""


def connect(address: str) -> Any:
    """``ray`` connected to ``address`` (``auto``: a running local cluster, else a new one on this machine)."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(f"--ray needs Ray: {INSTALL}.") from None
    if ray.is_initialized():
        return ray
    try:
        if address == "auto":
            try:
                ray.init(address="auto", log_to_driver=False)
            except ConnectionError:
                ray.init(log_to_driver=False)  # none running: start one here
        else:
            _probe(address)
            ray.init(address=address, log_to_driver=False)
    except (OSError, RuntimeError, ValueError) as err:
        raise RayUnavailable(f"The Ray cluster at {address} does not answer ({str(err).splitlines()[0]}); start it or check the address.") from None
    return ray


PROBE_S = 3.0  # a cluster's GCS port answers a TCP connect at once; ray.init would retry for a minute or more


def _probe(address: str) -> None:
    """Raise ``ConnectionError`` unless ``host:port`` (optionally ``ray://``) accepts a TCP connection."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    with socket.create_connection((host, int(port)), timeout=PROBE_S):
        pass


@dataclass
class RayTimings:
    """Seconds of one ``index_paths_ray`` run, by stage. Driver: ``connect_s`` (ray.init), ``plan_s`` (walk
    + plan), ``first_batch_s`` (execution start to the first batch back: actors start, load the model and
    embed one batch), ``waiting_s`` (blocked on the next batch), ``commit_s``, ``finish_s`` (index). Actors
    (summed over them): ``actor_start_s`` (execution start to the actor's constructor: scheduling, a worker
    process, imports), ``model_load_s``, ``load_s`` (read + hash + decode + preprocess), ``embed_s``;
    ``ready_s``: execution start to the last actor holding its model. ``ray_data``: Ray Data's own timers
    (``get_s``: ray.get of blocks from the object store into this process; ``map_*``: the actors' tasks)."""

    actors: int = 0
    connect_s: float = 0.0
    plan_s: float = 0.0
    first_batch_s: float = 0.0
    waiting_s: float = 0.0
    commit_s: float = 0.0
    finish_s: float = 0.0
    actor_start_s: float = 0.0
    model_load_s: float = 0.0
    load_s: float = 0.0
    embed_s: float = 0.0
    ready_s: float = 0.0
    ray_data: dict[str, float] = field(default_factory=dict)


class Embedder:
    """One Ray actor: loads the model once, then reads, decodes and embeds batches of files. Each batch
    carries its seconds back (``load_s``, ``embed_s`` per row; the actor's ``constructed_at`` wall clock and
    ``model_load_s`` on the first row of its first batch, 0 elsewhere)."""

    def __init__(self, make_encoder: Callable[[str], Encoder], device: str) -> None:
        self.constructed_at = time.time()
        self.encoder = make_encoder(device)
        self.model_load_s = time.time() - self.constructed_at
        self.reported = False

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        enc = self.encoder
        files = [FoundFile(str(p), int(s), int(m)) for p, s, m in zip(batch["path"], batch["size"], batch["mtime_ns"], strict=True)]
        load_s = np.zeros(len(files))
        loaded = []
        for i, f in enumerate(files):
            started = time.perf_counter()
            loaded.append(load_file(f, {}, lambda: enc.preprocess, lambda: enc.preprocess.min_side))
            load_s[i] = time.perf_counter() - started
        todo = [i for i, x in enumerate(loaded) if x.pixels is not None]
        vectors = np.zeros((len(files), enc.dim), dtype=np.float32)
        started = time.perf_counter()
        if todo:
            vectors[todo] = enc.encode_pixels(np.stack([loaded[i].pixels for i in todo]))
        embed_s = np.full(len(files), (time.perf_counter() - started) / max(1, len(files)))
        once = np.zeros((2, len(files)))
        if not self.reported and len(files):
            once[:, 0] = self.constructed_at, self.model_load_s
            self.reported = True
        return {
            "loaded": np.array([pickle.dumps(replace(x, pixels=None)) for x in loaded], dtype=object),
            "embedded": np.array([x.pixels is not None for x in loaded]),
            "vector": vectors,
            "load_s": load_s,
            "embed_s": embed_s,
            "constructed_at": once[0],
            "model_load_s": once[1],
        }


def index_paths_ray(
    roots: Sequence[Path],
    writer: LibraryWriter,
    make_encoder: Callable[[str], Encoder],
    *,
    address: str,
    model_id: str,
    batch_size: int,
    progress: Progress | None = None,
    flat_below: int = ann.FLAT_BELOW,
    actors: int | None = None,
    timings: RayTimings | None = None,
) -> IndexReport:
    started = time.perf_counter()
    progress = progress or NoProgress()
    t = timings if timings is not None else RayTimings()
    ray = connect(address)
    t.connect_s += time.perf_counter() - started
    report = IndexReport()
    found = walk(roots, is_candidate=faults.watched("walk", is_image_candidate))
    files, bad_names = split_bad_names(found.files)
    root_paths = [os.path.abspath(os.path.expanduser(r)) for r in roots]
    gone = [r for r in root_paths if not os.path.lexists(r)]
    with writer.session() as session:
        states = catalog.file_states(session, root_paths)
    plan = make_plan(files, states, root_paths, [p for p in found.unreadable_dirs if p not in gone])
    report.gone = [{"path": g, "removed": sum(catalog.is_under(p, g) for p in plan.removed)} for g in gone]
    report.unchanged = plan.unchanged
    report.skipped.extend({"path": printable(p), "reason": BAD_NAME} for p in bad_names)
    report.skipped.extend({"path": printable(p), "reason": NOT_AN_IMAGE} for p in found.not_images)
    report.unreadable_folders = [{"path": printable(p), "reason": r} for p, r in found.unreadable if p not in gone]
    t.plan_s += time.perf_counter() - started - t.connect_s

    progress.start(len(plan.todo))
    if plan.todo:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        pool = actors or max(1, gpus or cpus)
        t.actors = pool
        items = [{"path": f.path, "size": f.size, "mtime_ns": f.mtime_ns} for f in plan.todo]
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // batch_size)).map_batches(
            Embedder,
            fn_constructor_kwargs={"make_encoder": make_encoder, "device": "cuda" if gpus else "cpu"},
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=pool,
            num_gpus=1 if gpus else 0,
            num_cpus=0 if gpus else 1,
            max_task_retries=-1,
            max_restarts=-1,
        )
        executed_at, waited = time.time(), time.perf_counter()
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
            now = time.perf_counter()
            t.waiting_s += now - waited
            t.first_batch_s = t.first_batch_s or time.time() - executed_at
            _commit(batch, writer, model_id, report)
            progress.advance(len(batch["loaded"]))
            _add_actor_times(t, batch, executed_at)
            waited = time.perf_counter()
            t.commit_s += waited - now
        t.waiting_s -= t.first_batch_s
        t.ray_data = _ray_data_times(ds)
    progress.finish()
    if plan.removed:
        writer.remove(plan.removed)
        report.removed = len(plan.removed)
    finishing = time.perf_counter()
    if plan.todo and "modality_direction" not in writer.meta:  # once per library, as the local path does
        captions = ray.get(ray.remote(num_cpus=0)(_caption_vectors).remote(make_encoder))  # 0 CPUs: the pool may hold them all
        writer.learn_modality(lambda texts: captions)
    report.index = writer.finish(flat_below=flat_below)
    t.finish_s += time.perf_counter() - finishing
    with writer.session() as session:
        report.images = catalog.counts(session)["indexed"]
    report.seconds = time.perf_counter() - started
    return report


def _caption_vectors(make_encoder: Callable[[str], Encoder]) -> np.ndarray:
    """On a Ray worker: the model's vectors of the generic captions, for the recall self-check's
    text-like queries (``LibraryWriter.learn_modality``); the driver never loads the model."""
    return make_encoder("cpu").encode_text(list(recall.GENERIC_CAPTIONS))


def _commit(batch: dict[str, np.ndarray], writer: LibraryWriter, model_id: str, report: IndexReport) -> None:
    loaded: list[Loaded] = [pickle.loads(b) for b in batch["loaded"]]
    embedded = batch["embedded"].astype(bool)
    vectors = np.asarray(batch["vector"], dtype=np.float32)[embedded]
    if writer.dim is None and len(vectors):
        writer.bind(model_id, int(vectors.shape[1]))
    indexed = [to_record(x, Status.INDEXED) for x, e in zip(loaded, embedded, strict=True) if e]
    skipped = [x for x, e in zip(loaded, embedded, strict=True) if not e]
    writer.commit(indexed, vectors, [to_record(x, Status.SKIPPED) for x in skipped])
    faults.reached("batch.committed")
    report.indexed += len(indexed)
    report.skipped.extend({"path": x.file.path, "reason": x.reason or ""} for x in skipped)


def _add_actor_times(t: RayTimings, batch: dict[str, np.ndarray], executed_at: float) -> None:
    t.load_s += float(batch["load_s"].sum())
    t.embed_s += float(batch["embed_s"].sum())
    t.model_load_s += float(batch["model_load_s"].sum())
    first = batch["constructed_at"] > 0
    t.actor_start_s += float((batch["constructed_at"][first] - executed_at).sum())
    ready = batch["constructed_at"][first] + batch["model_load_s"][first] - executed_at
    t.ready_s = max(t.ready_s, float(ready.max(initial=0.0)))


def _ray_data_times(ds: Any) -> dict[str, float]:
    """Ray Data's own timers of the run (DeveloperAPI; empty if this Ray lacks them)."""
    try:
        ops = ds.get_stats_summary().operators_stats
        # The public summary leaves the iterator's timers at 0 in Ray 2.60; they live on the cached stats.
        it = ds._cache.get_stats().to_summary().iter_stats
        maps = [op for op in ops if "Embedder" in op.operator_name] or ops[-1:]
        return {
            "map_wall_s": sum(op.wall_time.sum for op in maps if op.wall_time),  # the actors' tasks
            "map_cpu_s": sum(op.cpu_time.sum for op in maps if op.cpu_time),
            "map_udf_s": sum(op.function_body_time.sum for op in maps if op.function_body_time),
            "get_s": it.get_time.get(),  # ray.get of the blocks (object store to this process)
            "batching_s": it.next_time.get() + it.format_time.get(),
            "blocked_s": it.block_time.get(),
            "user_s": it.user_time.get(),  # this loop's body: the commits
            "total_s": it.total_time.get(),
        }
    except (AttributeError, TypeError):
        return {}
