"""``viewfinder index --ray``: the walk and the plan on the driver, reading, decoding and embedding on a
Ray cluster (Ray Data ``map_batches`` over an actor pool: one model per actor, a GPU each when the
cluster has GPUs), and every batch committed on the driver through the same ``LibraryWriter`` as the
local path (vectors appended and fsynced, then the catalog rows in one transaction), as results arrive.

A Ray worker that dies mid-run (kill -9) has its batch retried by Ray Data; nothing of it was committed
(only the driver commits), and each file comes back once, so a dead worker costs a retry, never a lost or
doubled row. Every file is embedded on the cluster (a content already in the library is embedded again
rather than copied from the stored vector: the workers have no access to the catalog); the rows and the
vectors (within float16 rounding) are those the local path makes.

Ray is an extra: ``pip install 'viewfinder[ray]'``.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from indexer import faults
from indexer.load import Loaded, load_file
from indexer.plan import make_plan
from indexer.run import BAD_NAME, NOT_AN_IMAGE, IndexReport, NoProgress, Progress, printable, split_bad_names, to_record
from indexer.walk import FoundFile, walk
from indexer.writer import LibraryWriter
from search import ann, catalog
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
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise RayUnavailable(f"The Ray cluster at {address} does not answer ({str(err).splitlines()[0]}); start it or check the address.") from None
    return ray


class Embedder:
    """One Ray actor: loads the model once, then reads, decodes and embeds batches of files."""

    def __init__(self, make_encoder: Callable[[str], Encoder], device: str) -> None:
        self.encoder = make_encoder(device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        enc = self.encoder
        files = [FoundFile(str(p), int(s), int(m)) for p, s, m in zip(batch["path"], batch["size"], batch["mtime_ns"], strict=True)]
        loaded = [load_file(f, {}, lambda: enc.preprocess, lambda: enc.preprocess.min_side) for f in files]
        todo = [i for i, x in enumerate(loaded) if x.pixels is not None]
        vectors = np.zeros((len(files), enc.dim), dtype=np.float32)
        if todo:
            vectors[todo] = enc.encode_pixels(np.stack([loaded[i].pixels for i in todo]))
        return {
            "loaded": np.array([pickle.dumps(replace(x, pixels=None)) for x in loaded], dtype=object),
            "embedded": np.array([x.pixels is not None for x in loaded]),
            "vector": vectors,
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
) -> IndexReport:
    started = time.perf_counter()
    progress = progress or NoProgress()
    ray = connect(address)
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

    progress.start(len(plan.todo))
    if plan.todo:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        pool = actors or max(1, gpus or cpus)
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
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
            _commit(batch, writer, model_id, report)
            progress.advance(len(batch["loaded"]))
    progress.finish()
    if plan.removed:
        writer.remove(plan.removed)
        report.removed = len(plan.removed)
    report.index = writer.finish(flat_below=flat_below)
    with writer.session() as session:
        report.images = catalog.counts(session)["indexed"]
    report.seconds = time.perf_counter() - started
    return report


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
