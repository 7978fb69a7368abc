"""The sharded build of an on-disk IVF-PQ (``IndexParams.ondisk``; the rule and its reasons are in
``search.ann``, the read side in ``search.ondisk``).

Stages, each a small function:

1. ``train``: the coarse centroids by two-level k-means on a sample (faiss's ``two_level_clustering``),
   then the PQ codebooks on the same sample; the trained, empty index is written to a temp file.
2. ``fill_shard`` (one per shard, in parallel: processes, or Ray tasks when the run has ``--ray``): reads
   the trained index and its share of the stored vectors, assigns each vector to a list through an HNSW
   over the centroids, encodes it, and writes the shard to a temp file.
3. ``merge``: faiss's ``OnDiskInvertedLists.merge_from_multiple`` streams the shards' lists into one
   lists file (temp name), which is fsynced and renamed; then the header naming it is written the same
   way (temp + fsync + rename + fsync of the folder). Nothing names either file until the catalog does.

A kill at any point leaves temp files (``*.tmp``) or a base no catalog row names: the next writer removes
both (``LibraryWriter._cleanup``) and the re-run builds again.
"""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from indexer import faults
from search import ann, ondisk
from search.disk import REAL, Disk
from search.errors import LibraryWriteError
from search.records import IndexParams
from search.vectors import open_vectors

SHARD_ROWS = 1_000_000  # vectors per shard at most (a shard's codes are held in memory until written)
HNSW_M = 32  # links per centroid in the assignment graph
HNSW_EF = 64  # candidates the assignment explores (recall of the nearest centroid ~0.99 on CLIP-like data)


@dataclass(frozen=True, slots=True)
class ShardJob:
    """Everything a worker needs, as plain values (it crosses a process or Ray boundary)."""

    trained: str  # path of the trained, empty index
    graph: str  # path of the HNSW over its centroids (``assigner``)
    vectors: str  # the library's vectors file
    dim: int
    dtype: str
    rows: int
    ids: np.ndarray  # sorted ids of this shard
    out: str  # path the shard is written to
    threads: int


def train(params: IndexParams, vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
    """The trained, empty IVF-PQ for ``params`` (two-level coarse k-means, then the PQ on the residuals)."""
    from faiss.contrib.clustering import two_level_clustering

    index = ann.new_index(params)
    sample = ann.gather(vectors, ann.training_sample(ids, params))
    coarse = max(1, round(params.nlist**0.5))
    centroids, _ = two_level_clustering(sample, coarse, params.nlist, clustering_niter=10, seed=1338)
    index.quantizer.add(centroids)
    index.train(sample)  # the quantizer is full: only the PQ codebooks are trained
    return index


def assigner(index: faiss.Index) -> faiss.Index:
    """An HNSW graph over the coarse centroids: a near-exact list for each vector at a small share of the cost."""
    ivf = faiss.extract_index_ivf(index)
    graph = faiss.IndexHNSWFlat(ivf.d, HNSW_M, ivf.metric_type)
    graph.hnsw.efConstruction = 2 * HNSW_EF
    graph.add(ivf.quantizer.reconstruct_n(0, ivf.nlist))
    graph.hnsw.efSearch = HNSW_EF
    return graph


def fill_shard(job: ShardJob) -> str:
    """Add the shard's vectors to a copy of the trained index and write it to ``job.out`` (a temp file)."""
    faiss.omp_set_num_threads(job.threads)
    index = faiss.read_index(job.trained)
    graph = faiss.read_index(job.graph)
    vectors = open_vectors(Path(job.vectors), job.dim, job.dtype, job.rows)
    for start in range(0, len(job.ids), ann.ADD_BATCH):
        chunk = np.ascontiguousarray(job.ids[start : start + ann.ADD_BATCH], dtype=np.int64)
        x = ann.gather(vectors, chunk)
        assign = np.ascontiguousarray(graph.search(x, 1)[1].reshape(-1))  # named: the pointers below must stay valid
        index.add_core(len(chunk), faiss.swig_ptr(x), faiss.swig_ptr(chunk), faiss.swig_ptr(assign))
    faiss.write_index(index, job.out)
    return job.out


def split(ids: np.ndarray, workers: int, most: int = SHARD_ROWS) -> list[np.ndarray]:
    """Contiguous shards: at least one per worker, none over ``most`` ids."""
    count = max(1, workers, -(-len(ids) // most))
    return [part for part in np.array_split(ids, count) if len(part)]


def run_local(jobs: Sequence[ShardJob], workers: int) -> list[str]:
    """The shards filled by up to ``workers`` fresh interpreters at a time (no inherited threads or locks)."""
    if workers <= 1:
        return [fill_shard(job) for job in jobs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fill_in_child, jobs))


CHILD = "import pickle, sys; from indexer.shards import fill_shard; fill_shard(pickle.load(sys.stdin.buffer))"


def fill_in_child(job: ShardJob) -> str:
    """``fill_shard`` in a new Python process. Not multiprocessing's spawn: it re-runs the parent's
    ``__main__`` in the child, which under Streamlit, a notebook or a test runner is not importable code."""
    done = subprocess.run([sys.executable, "-c", CHILD], input=pickle.dumps(job), capture_output=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise LibraryWriteError(f"A shard of the index could not be written ({last}); the library keeps its last index.")
    return job.out


def run_ray(jobs: Sequence[ShardJob], workers: int) -> list[str]:
    """The shards filled by Ray tasks (the run's ``--ray`` cluster, already initialised by the caller). The
    library folder must be visible to the workers at the same path (one machine, or a shared mount)."""
    import ray

    task = ray.remote(num_cpus=1, max_retries=3)(fill_shard)
    return list(ray.get([task.remote(job) for job in jobs]))


Runner = Callable[[Sequence[ShardJob], int], list[str]]


def default_runner() -> Runner:
    """Ray tasks when this process already runs Ray (``viewfinder index --ray`` connected it), else processes."""
    ray = sys.modules.get("ray")
    return run_ray if ray is not None and ray.is_initialized() else run_local


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Keep faiss's C-level ``printf``s (``OnDiskInvertedLists`` reports each resize) off our stdout, which
    may carry a JSON report."""
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def merge(trained: faiss.Index, shards: Sequence[str], home: Path, base_name: str, disk: Disk = REAL) -> int:
    """Merge the shards' lists into ``home/base_name``'s lists file and write its header; returns the count.
    Both are written under temp names, fsynced and renamed (the lists first: the header names them)."""
    data = home / ondisk.data_name(base_name)
    data_tmp = data.with_name(data.name + ".tmp")
    parts = [faiss.read_index(path, faiss.IO_FLAG_MMAP) for path in shards]
    vector = faiss.InvertedListsPtrVector()
    for part in parts:
        vector.push_back(faiss.extract_index_ivf(part).invlists)
    ivf = faiss.extract_index_ivf(trained)
    lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(data_tmp))
    with quiet_stdout():
        total = lists.merge_from_multiple(vector.data(), vector.size(), False)
    del parts, vector
    ivf.replace_invlists(lists, True)
    lists.this.disown()
    trained.ntotal = ivf.ntotal = total
    lists.filename = data.name  # what the header records; readers look for it next to the header
    header = home / base_name
    header_tmp = header.with_name(header.name + ".tmp")
    disk.write_file(header_tmp, lambda target: faiss.write_index(trained, target))
    empty = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(empty, True)  # deletes the on-disk lists: unmaps the lists file before its fsync
    empty.this.disown()
    trained.ntotal = ivf.ntotal = 0
    disk.fsync(data_tmp)
    disk.replace(data_tmp, data)
    disk.fsync(header_tmp)
    disk.replace(header_tmp, header)
    disk.fsync_dir(home)
    return int(total)


def build(
    params: IndexParams,
    home: Path,
    base_name: str,
    vectors_file: Path,
    dtype: str,
    rows: int,
    ids: np.ndarray,
    *,
    workers: int | None = None,
    runner: Runner = run_local,
    disk: Disk = REAL,
) -> int:
    """The on-disk base of ``ids`` in ``home/base_name`` (+ its lists file); returns how many it holds."""
    workers = max(1, workers or os.cpu_count() or 1)
    vectors = open_vectors(vectors_file, params.dim, dtype, rows)
    trained = train(params, vectors, ids)
    trained_path = home / (base_name + ".trained.tmp")
    graph_path = home / (base_name + ".graph.tmp")
    shards = split(np.sort(np.asarray(ids, dtype=np.int64)), workers)
    outs = [str(home / f"{base_name}.shard{i}.tmp") for i in range(len(shards))]
    try:
        faiss.write_index(trained, str(trained_path))
        faiss.write_index(assigner(trained), str(graph_path))
        threads = max(1, (os.cpu_count() or 1) // workers)
        jobs = [ShardJob(str(trained_path), str(graph_path), str(vectors_file), params.dim, dtype, rows, part, out, threads) for part, out in zip(shards, outs, strict=True)]
        done = runner(jobs, workers)
        faults.reached("index.shards")
        count = merge(trained, done, home, base_name, disk)
        faults.reached("index.merged")
        return count
    finally:
        for path in [trained_path, graph_path, *map(Path, outs)]:
            disk.unlink(path)
