"""What the benchmarks share: machine facts, timers, the CLIP-like synthetic vectors, a library made of them.

Not a test helper and not part of the package: ``python bench/X.py`` puts ``bench/`` first on the path.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from anywhere, installed or not
    sys.path.insert(0, str(ROOT))


# --- reporting -----------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def process_age_s() -> float:
    """Seconds since this process was created (from /proc), i.e. interpreter start + imports so far."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare two runs."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    for name in ("torch", "transformers", "faiss", "PIL"):
        module = sys.modules.get(name)
        if module is not None:
            facts[name] = getattr(module, "__version__", "?")
    torch = sys.modules.get("torch")
    if torch is not None:
        facts["torch_threads"] = torch.get_num_threads()
    return facts


def emit(result: dict[str, Any], as_json: bool) -> None:
    """The result: one JSON line (last line of stdout) with --json, else ``key: value`` lines."""
    if as_json:
        print(json.dumps(result, sort_keys=False), flush=True)
        return
    for key, value in result.items():
        print(f"{key:>24}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")


@contextmanager
def timed(into: dict[str, float], key: str) -> Iterator[None]:
    """Adds the wall time of the block to ``into[key]`` (a stage timer, as autofaiss's Timeit)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        into[key] = into.get(key, 0.0) + time.perf_counter() - started


class Patches:
    """Functions replaced by timed wrappers for the length of a ``with`` block, then put back.
    Subclasses say which in ``__enter__``; the wall seconds land in ``self.seconds``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._saved: list[tuple[Any, str, Any]] = []

    def replace(self, owner: Any, name: str, replacement: Any) -> Any:
        """Put ``replacement`` in place of ``owner.name``; returns the original."""
        original = getattr(owner, name)
        self._saved.append((owner, name, original))
        setattr(owner, name, replacement)
        return original

    def time(self, owner: Any, name: str, key: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with timed(self.seconds, key):
                return original(*args, **kwargs)

        self.replace(owner, name, wrapper)

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()


def percentile_ms(seconds: list[float] | np.ndarray, q: float) -> float:
    return round(float(np.percentile(np.asarray(seconds) * 1000.0, q)), 3)


def memory_status() -> dict[str, int]:
    """RssAnon / RssFile / VmHWM of this process in bytes (anonymous = heap, not mmapped files)."""
    out: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


# --- CLIP-like synthetic vectors ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipLike:
    """A seeded generator of vectors with the structure of CLIP image embeddings, not uniform noise.

    Every vector is ``normalise(shared + topic + subtopic + noise)``:

    * ``shared``: one common direction of length ``shared`` (CLIP embeddings of unrelated photos still
      have a cosine of ~0.4-0.5: they all sit in a narrow cone);
    * anisotropy: topics, subtopics and noise are all drawn from one Gaussian whose covariance has a
      power-law spectrum (axis j has standard deviation ∝ (j+1)^-``decay``, in a random rotation), so a
      few dozen directions carry most of the variance, as in real embeddings;
    * clusters: ``topics`` topic centres, each with ``subtopics`` sub-centres; topic popularity is
      log-normal (a few topics hold much of a collection, like 'people' or 'beach' in a photo library);
    * queries: drawn the same way from held-out randomness with ``query_noise`` times the noise (a text
      query is vaguer than a photo), so they fall near, not on, the indexed points.
    """

    dim: int = 512
    seed: int = 1338
    topics: int = 512
    subtopics: int = 16
    shared: float = 0.85
    topic: float = 0.65
    subtopic: float = 0.45
    noise: float = 0.5
    decay: float = 0.5
    query_noise: float = 1.0

    def _basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        rotation, _ = np.linalg.qr(rng.standard_normal((self.dim, self.dim)))
        sigma = (np.arange(1, self.dim + 1, dtype=np.float64)) ** -self.decay
        sigma /= np.sqrt((sigma**2).sum())  # E|x|^2 = 1 for x = rotation @ (sigma * z)
        shaping = (sigma[:, None] * rotation.T).astype(np.float32)  # z @ shaping ~ N(0, Σ)
        shared = rng.standard_normal(self.dim)
        shared = (shared / np.linalg.norm(shared)).astype(np.float32)
        topics = rng.standard_normal((self.topics, self.dim)).astype(np.float32) @ shaping * self.topic
        subs = rng.standard_normal((self.topics * self.subtopics, self.dim)).astype(np.float32) @ shaping * self.subtopic
        weights = rng.lognormal(0.0, 1.0, self.topics)
        return shaping, shared, topics, subs, weights / weights.sum()

    def batches(self, n: int, batch: int = 50_000, *, stream: int = 0, noise_scale: float = 1.0) -> Iterator[np.ndarray]:
        """``n`` unit float32 vectors in chunks; ``stream`` picks independent randomness (0 = the base)."""
        shaping, shared, topics, subs, weights = self._basis()
        rng = np.random.default_rng([self.seed, stream + 1])
        for start in range(0, n, batch):
            size = min(batch, n - start)
            topic = rng.choice(self.topics, size=size, p=weights)
            sub = topic * self.subtopics + rng.integers(0, self.subtopics, size=size)
            noise = rng.standard_normal((size, self.dim), dtype=np.float32) @ shaping * (self.noise * noise_scale)
            x = self.shared * shared + topics[topic] + subs[sub] + noise
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            yield x.astype(np.float32, copy=False)

    def base(self, n: int, batch: int = 50_000) -> Iterator[np.ndarray]:
        return self.batches(n, batch, stream=0)

    def queries(self, n: int) -> np.ndarray:
        return np.concatenate(list(self.batches(n, stream=1, noise_scale=self.query_noise)))


def vector_stats(base: np.ndarray, queries: np.ndarray, gt_scores: np.ndarray) -> dict[str, float]:
    """Numbers that show the data is CLIP-like: pairwise cosine, neighbour cosines, effective rank."""
    rng = np.random.default_rng(0)
    sample = base[rng.choice(len(base), size=min(len(base), 4000), replace=False)]
    pair = sample @ sample.T
    off_diag = pair[~np.eye(len(sample), dtype=bool)]
    centred = sample - sample.mean(axis=0)
    eig = np.clip(np.linalg.eigvalsh(centred.T @ centred), 0, None)
    return {
        "mean_pair_cos": round(float(off_diag.mean()), 3),
        "query_top1_cos": round(float(gt_scores[:, 0].mean()), 3),
        "query_top10_cos": round(float(gt_scores[:, 9].mean()), 3),
        "query_random_cos": round(float((queries[:200] @ sample[:200].T).mean()), 3),
        "effective_rank": round(float(eig.sum() ** 2 / (eig**2).sum()), 1),  # participation ratio
    }


# --- a library made of synthetic vectors ----------------------------------------------------------------


def fake_records(first: int, count: int) -> list[Any]:
    """Catalog rows for vectors that came from no file (made-up paths, sizes and dates)."""
    from datetime import datetime

    from search.records import ImageRecord, Status

    now = datetime(2025, 1, 1)
    return [
        ImageRecord(
            path=f"/bench/photos/{i // 1000:04d}/IMG_{i:07d}.jpg",
            size=400_000 + i % 100_000,
            mtime_ns=1_700_000_000_000_000_000 + i,
            status=Status.INDEXED,
            content_hash=f"{i:032x}",
            width=1600,
            height=1200,
            format="JPEG",
            indexed_at=now,
        )
        for i in range(first, first + count)
    ]


def build_vector_library(
    home: Path, chunks: Iterator[np.ndarray], *, model_id: str, dim: int, check: bool = True, finish: bool = True
) -> dict[str, float]:
    """A library at ``home`` holding the given vectors, written through ``LibraryWriter`` as the indexer does
    (one commit per chunk, then ``finish()`` builds the index by the rule, with the recall self-check unless
    ``check`` is False; no index at all when ``finish`` is False). Returns stage seconds."""
    from indexer.writer import LibraryWriter

    stages: dict[str, float] = {}
    with LibraryWriter.open(home) as writer:
        writer.bind(model_id, dim)
        for chunk in chunks:
            with timed(stages, "commit_s"):
                writer.commit(fake_records(writer.vector_rows, len(chunk)), chunk, [])
        if finish:
            with timed(stages, "index_build_s"):
                writer.finish(check=check)
    return stages
