"""Ingest benchmark: photo-sized JPEGs through the real indexing pipeline vs. the model's forward pass alone.

    python bench/checkpoint.py /tmp/vitb32                       # once: random ViT-B/32 weights
    python bench/ingest.py --model /tmp/vitb32 --images 1000 --json
    python bench/ingest.py --model /tmp/vitb32 --images 128 --json   # quick
    python bench/ingest.py --model /tmp/vitb32 --images 128 --cold --runs 5 [--backend openvino] --json

The machine is shared, so the two are measured in alternation, in this one process, with the same batch
size. The photos are cut into segments of ``--segment`` (256); for each segment:

1. ``model_only`` for half the segment's images: ``Encoder.encode_pixels`` on ready (batch, 3, 224, 224)
   tensors;
2. ``end_to_end``: ``indexer.run.index_paths`` over the segment's folders into the library (which grows
   segment by segment, as with a user indexing folder after folder): walk, plan, read + hash + decode +
   preprocess in worker threads, embed, commit (fsync + SQLite), update the index;
3. ``model_only`` for the other half.

The photos are ``--images`` JPEGs (``--size``, default 1600x1200, quality 90, with EXIF, each one
different: no content-hash reuse), made once and kept in the temp dir. The model is loaded before
(``model_load_s``), and the process start is reported on its own (``process_start_s``: interpreter +
imports, torch included, from /proc).

``--cold``: whole ``viewfinder index PHOTOS`` processes instead, a new library each run, against Python
+ torch + the model load in the same rounds (``bench/cli_cold.py``'s ``index_cold``: median, p10/p90,
img/s of the whole process and after the start); with ``--backend`` the backend's processes take turns
with torch's.

``--backend onnx`` loads the model a second time on that backend (``search.backends``: ONNX Runtime;
its export is cached under ``--onnx-cache``) and runs the same three steps with it for every segment,
into a second library, next to the torch ones (the baseline: today's transformers fp32 forward), the
two backends taking turns going first. Its figures are under ``backend``, with
``speedup_end_to_end`` = its end-to-end img/s / torch's (target >= 1.4) and ``speedup_model_only``.

``--ray ADDRESS`` (``auto``: a local Ray on this machine's cores, as ``viewfinder index --ray auto``) also
indexes every segment through ``indexer.ray_ingest.index_paths_ray`` into a third library, the same
folders with the same checkpoint and batch size, taking turns with the local path going first. Each
segment is one Ray run, as one ``viewfinder index --ray`` is: its actors start and load the model in it,
so ``ray.end_to_end_img_s`` counts that start-up (``ray.img_s_after_ready`` leaves out the time until the
last actor held its model). ``ray.ratio_to_local`` = Ray end-to-end img/s / local end-to-end img/s
(same segments). ``ray.init_s`` (``ray.init``: starting the cluster) is paid once and counted in
neither. ``ray.stages_s`` is ``indexer.ray_ingest.RayTimings`` summed over the segments (the driver's
stages, the actors' own seconds carried back with each batch, Ray Data's timers), ``ray.actor_seconds``
splits the actors' available time (actors x the run's wall time) into start-up, decode, embed and the
rest, and ``ray.daemon_cpu_s`` is the CPU the cluster's own processes (GCS, raylet, dashboard; children
of this process) used during the Ray runs.

``ratio`` = end_to_end_img_s / model_only_img_s over all segments (target >= 0.9 on CPU), and
``ratio_median_segment``, the median of the per-segment ratios, which a burst of load from another
process moves less. ``cpu_ms_per_image`` is CPU time of this process (all threads) per image, which other
processes on the machine barely change. ``stages_s`` says where the end-to-end time went (timers wrapped
around the pipeline's functions in this process; the project's code is not changed).
"""

from __future__ import annotations

import os

# As `viewfinder index` does (ui/cli.py), before torch is imported: idle OpenMP threads yield the cores
# to the decoder threads. Both sides of the ratio run under it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import shutil
from functools import partial
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

import numpy as np
from common import Patches, emit, log, machine, process_age_s
from PIL import Image

from indexer import run
from indexer.ray_ingest import RayTimings
from indexer.writer import LibraryWriter
from search.encoder import Encoder

PROCESS_START_S = process_age_s()  # interpreter start + the imports above (torch included)
TARGET_RATIO = 0.9
TARGET_BACKEND_SPEEDUP = 1.4  # --backend onnx: its end-to-end img/s / torch's
PER_FOLDER = 64  # photos per sub-folder: a segment of the end-to-end run is a list of these folders


# --- photo-like JPEGs ------------------------------------------------------------------------------------


def _texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Grain at two scales (int16), tiled under every photo with a random shift."""
    coarse = Image.fromarray(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8))
    mid = np.asarray(coarse.resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16) - 128
    return (mid // 3 + rng.normal(0, 5, (height, width, 3))).astype(np.int16)


def _photo(i: int, seed: int, textures: list[np.ndarray], width: int, height: int) -> Image.Image:
    rng = np.random.default_rng([seed, i])
    layout = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    grain = np.roll(textures[i % len(textures)], (int(rng.integers(height)), int(rng.integers(width))), axis=(0, 1))
    return Image.fromarray(np.clip(np.asarray(layout, dtype=np.int16) + grain, 0, 255).astype(np.uint8))


def make_photos(folder: Path, n: int, size: tuple[int, int], seed: int = 7) -> list[Path]:
    """``n`` different photo-like JPEGs in ``folder`` (kept and reused: making them is slow)."""
    width, height = size
    paths = [folder / f"{i // PER_FOLDER:04d}" / f"IMG_{i:05d}.jpg" for i in range(n)]
    if all(p.is_file() for p in paths):
        return paths
    log(f"making {n} {width}x{height} JPEGs in {folder}")
    rng = np.random.default_rng(seed)
    textures = [_texture(rng, width, height) for _ in range(4)]
    exif = Image.Exif()
    exif[0x0110] = "Bench Camera"  # Model
    exif[0x0112] = 1  # Orientation

    def write(i: int) -> None:
        paths[i].parent.mkdir(parents=True, exist_ok=True)
        exif[0x0132] = f"2024:06:{1 + i % 28:02d} 12:{i % 60:02d}:00"
        _photo(i, seed, textures, width, height).save(paths[i], quality=90, exif=exif)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(write, (i for i, p in enumerate(paths) if not p.is_file())))
    return paths


# --- the two measurements ------------------------------------------------------------------------------


def batch_sizes(n: int, batch_size: int) -> list[int]:
    return [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])


def model_only(encoder: Encoder, sizes: list[int], pixels: np.ndarray) -> float:
    """Seconds for the forward passes alone on ready tensors."""
    started = time.perf_counter()
    for size in sizes:
        encoder.encode_pixels(pixels[:size])
    return time.perf_counter() - started


class StageTimers(Patches):
    """Wraps the pipeline's functions with timers for the length of one run (a ``with`` block)."""

    def __init__(self) -> None:
        super().__init__()
        self.load_cpu = 0.0
        self.load_wall = 0.0
        self._lock = threading.Lock()

    def _time_loads(self) -> None:
        """CPU and wall time of ``load_file`` summed over the loader threads."""
        original = run.load_file

        def load_file(*args: Any, **kwargs: Any) -> Any:
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                with self._lock:
                    self.load_cpu += time.thread_time() - cpu
                    self.load_wall += time.perf_counter() - wall

        self.replace(run, "load_file", load_file)

    def __enter__(self) -> Self:
        self.time(Encoder, "encode_pixels", "embed_s")
        self.time(LibraryWriter, "commit", "commit_s")
        self.time(LibraryWriter, "finish", "finish_s")
        self.time(run, "walk", "walk_s")
        self._time_loads()
        return self


def end_to_end(writer: LibraryWriter, encoder: Encoder, roots: list[Path], batch_size: int, workers: int | None) -> tuple[float, dict[str, float]]:
    """One real indexing run over ``roots`` into the (growing) library; wall seconds and stage timers."""
    with StageTimers() as timers:
        started = time.perf_counter()
        report = run.index_paths(roots, writer, lambda: encoder, model_id=encoder.model_id, batch_size=batch_size, workers=workers)
        seconds = time.perf_counter() - started
    if report.skipped:
        raise SystemExit(f"the pipeline skipped {len(report.skipped)} benchmark photos: {report.skipped[:3]}")
    stages = dict(timers.seconds)
    stages["main_thread_waiting_for_loaders_s"] = seconds - sum(stages.values())
    stages["load_thread_cpu_s"] = timers.load_cpu
    stages["load_thread_wall_s"] = timers.load_wall
    return seconds, stages


def descendant_cpu_s() -> dict[int, float]:
    """CPU seconds (user + system) of every living descendant of this process, by pid (from /proc)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry.name)] = int(fields[1])
            cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    me, out = os.getpid(), {}
    for pid in cpu:
        p = pid
        while p > 1 and p != me:
            p = parent.get(p, 0)
        if p == me and pid != me:
            out[pid] = cpu[pid]
    return out


def ray_end_to_end(writer: LibraryWriter, model: str, roots: list[Path], batch_size: int, address: str) -> tuple[float, RayTimings, float]:
    """One ``index_paths_ray`` run over ``roots`` into the (growing) Ray library: wall seconds, its stage
    timers, and the CPU seconds of the cluster's long-lived processes during it (the actors, which exit
    with the run, are in ``timings.ray_data['map_cpu_s']``)."""
    from indexer.ray_ingest import index_paths_ray

    timings = RayTimings()
    before = descendant_cpu_s()
    started = time.perf_counter()
    report = index_paths_ray(roots, writer, partial(Encoder.load, model, backend="torch"), address=address, model_id=str(Path(model).resolve()),
                             batch_size=batch_size, timings=timings)  # fmt: skip
    seconds = time.perf_counter() - started
    after = descendant_cpu_s()
    if report.skipped:
        raise SystemExit(f"the Ray path skipped {len(report.skipped)} benchmark photos: {report.skipped[:3]}")
    return seconds, timings, sum(after[p] - before[p] for p in before.keys() & after.keys())


def start_ray(address: str) -> dict[str, Any]:
    """Connect (``auto``: start a local cluster) as ``viewfinder index --ray`` does; what it cost and what it is."""
    from indexer.ray_ingest import connect

    started = time.perf_counter()
    ray = connect(address)
    init_s = time.perf_counter() - started

    @ray.remote(num_cpus=1)
    def threads() -> int:  # what torch gets in a 1-CPU worker (Ray sets OMP_NUM_THREADS from num_cpus)
        import torch

        return torch.get_num_threads()

    resources = ray.cluster_resources()
    return {"address": address, "init_s": round(init_s, 2), "cluster_cpus": resources.get("CPU", 0), "cluster_gpus": resources.get("GPU", 0),
            "worker_torch_threads": ray.get(threads.remote()), "ray": ray.__version__}  # fmt: skip


def ray_summary(rows: list[tuple[float, ...]], local_rows: list[tuple[float, ...]], timings: list[RayTimings], daemon_cpu_s: float) -> dict[str, Any]:
    """The Ray path's img/s against the local path's over the same segments, and where its time went."""
    images = sum(r[0] for r in rows)
    wall = sum(r[1] for r in rows)
    local_img_s = images / sum(r[2] for r in local_rows)
    ready = sum(t.ready_s for t in timings)
    stages = {k: sum(getattr(t, k) for t in timings) for k in ("connect_s", "plan_s", "first_batch_s", "waiting_s", "commit_s", "finish_s",
                                                                  "actor_start_s", "model_load_s", "ready_s", "load_s", "embed_s")}  # fmt: skip
    stages["driver_other_s"] = wall - sum(stages[k] for k in ("connect_s", "plan_s", "first_batch_s", "waiting_s", "commit_s", "finish_s"))
    ray_data: dict[str, float] = {}
    for t in timings:
        for key, value in t.ray_data.items():
            ray_data[key] = ray_data.get(key, 0.0) + value
    actors = timings[0].actors
    runs = len(timings)
    # the actors' available time: from execution start to the last batch, times the pool size
    available = actors * sum(t.first_batch_s + t.waiting_s + t.commit_s for t in timings)
    busy = {"start_s": stages["actor_start_s"], "model_load_s": stages["model_load_s"], "decode_s": stages["load_s"], "embed_s": stages["embed_s"]}
    return {
        "end_to_end_img_s": round(images / wall, 2),
        "ratio_to_local": round(images / wall / local_img_s, 3),
        "ratio_to_local_per_segment": [round(lr[2] / r[1], 3) for r, lr in zip(rows, local_rows, strict=True)],
        "img_s_after_ready": round(images / (wall - ready), 2),
        "ratio_to_local_after_ready": round(images / (wall - ready) / local_img_s, 3),
        "actors": actors,
        "runs": runs,
        "startup_per_run_s": {"actor_start": round(stages["actor_start_s"] / (actors * runs), 2),
                              "model_load": round(stages["model_load_s"] / (actors * runs), 2),
                              "until_last_actor_ready": round(ready / runs, 2),
                              "until_first_batch": round(stages["first_batch_s"] / runs, 2)},  # fmt: skip
        "stages_s": {k: round(v, 2) for k, v in stages.items()},
        "ray_data_s": {k: round(v, 2) for k, v in ray_data.items()},
        "actor_seconds": {"available": round(available, 2), **{k: round(v, 2) for k, v in busy.items()},
                          "other_s": round(available - sum(busy.values()), 2)},  # fmt: skip
        "ms_per_image": {"actor_decode": round(1000 * stages["load_s"] / images, 1), "actor_embed": round(1000 * stages["embed_s"] / images, 1),
                         "driver_commit": round(1000 * stages["commit_s"] / images, 2)},  # fmt: skip
        "actor_cpu_ms_per_image": round(1000 * ray_data.get("map_cpu_s", float("nan")) / images, 1),
        "daemon_cpu_s": round(daemon_cpu_s, 2),
    }


def segments(paths: list[Path], per_segment: int) -> list[list[Path]]:
    """The photo sub-folders, grouped into segments of about ``per_segment`` photos."""
    folders = sorted({p.parent for p in paths})
    per = max(1, round(per_segment / PER_FOLDER))
    return [folders[i : i + per] for i in range(0, len(folders), per)]


# --- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Images per second through the indexing pipeline vs. the model alone.")
    parser.add_argument("--model", required=True, help="checkpoint folder (bench/checkpoint.py makes one)")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", default="1600x1200", help="WIDTHxHEIGHT of the JPEGs")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the CLI's (32 on CPU)")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: the CLI's)")
    parser.add_argument("--segment", type=int, default=256, help="photos per end-to-end run (each between two model-only halves)")
    parser.add_argument("--rounds", type=int, default=1, help="index all the photos this many times (a new library each)")
    parser.add_argument("--photos", type=Path, help="folder for the JPEGs (default: a cache under the temp dir)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx", "openvino"], help="also run this backend against torch")
    parser.add_argument("--onnx-cache", type=Path, default=Path(tempfile.gettempdir()) / "viewfinder-bench-onnx", help="where the export is kept")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "int8"], help="of the other backend (int8: onnx only)")
    parser.add_argument("--ray", metavar="ADDRESS", help="also index every segment on Ray (auto: a local cluster), against the local path")
    parser.add_argument("--cold", action="store_true", help="whole `viewfinder index` processes instead, against the unavoidable start")
    parser.add_argument("--runs", type=int, default=5, help="with --cold: runs of each case")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    from search.encoder import default_batch_size

    width, height = (int(v) for v in args.size.lower().split("x"))
    photos = args.photos or Path(tempfile.gettempdir()) / f"viewfinder-bench-photos-{width}x{height}-{args.images}"
    paths = make_photos(photos, args.images, (width, height))
    jpeg_bytes = float(np.mean([p.stat().st_size for p in paths[:200]]))
    if args.cold:  # the cold-process logic lives in bench/cli_cold.py
        import cli_cold  # type: ignore[import-not-found]

        backends = ["torch"] + ([args.backend] if args.backend != "torch" else [])
        log(f"{args.runs} rounds of cold `viewfinder index` ({', '.join(backends)}) on {len(paths)} photos")
        cold = cli_cold.index_cold(str(Path(args.model).resolve()), photos, len(paths), args.runs, backends)
        emit({"bench": "ingest_cold", "image_size": f"{width}x{height}", "jpeg_mean_bytes": round(jpeg_bytes), "model": str(Path(args.model).resolve()), **cold, "machine": machine()}, args.json)
        return

    started = time.perf_counter()
    encoder = Encoder.load(args.model, args.device)
    model_load_s = time.perf_counter() - started
    batch_size = args.batch_size or default_batch_size(encoder.device)
    workers = args.workers or run.default_workers()
    pixels = np.random.default_rng(0).standard_normal((batch_size, 3, *encoder.preprocess.out_size), dtype=np.float32)
    log(f"model loaded in {model_load_s:.1f}s; warming up")
    encoders = {"torch": encoder}
    backend_load_s = 0.0
    if args.backend != "torch":
        started = time.perf_counter()
        encoders[args.backend] = Encoder.load(args.model, args.device, backend=args.backend, cache=args.onnx_cache, precision=args.precision)
        backend_load_s = time.perf_counter() - started
        if encoders[args.backend].backend != args.backend:
            raise SystemExit(f"--backend {args.backend} fell back to {encoders[args.backend].backend} (see the line above)")
    for enc in encoders.values():
        model_only(enc, [batch_size], pixels)
    run.load_file(run.walk([photos]).files[0], {}, lambda: encoder.preprocess, lambda: encoder.preprocess.min_side)
    ray_facts = start_ray(args.ray) if args.ray else None
    if ray_facts:
        log(f"Ray: {ray_facts}")
    steps = list(encoders) + (["ray"] if args.ray else [])
    ray_rows: list[tuple[float, ...]] = []  # (images, seconds) per segment
    ray_timings: list[RayTimings] = []
    daemon_cpu_s = 0.0

    # one row per segment and backend: (images, model-only s, end-to-end s, model-only cpu s, end-to-end cpu s)
    rows: dict[str, list[tuple[float, ...]]] = {name: [] for name in encoders}
    stage_sums: dict[str, dict[str, float]] = {name: {} for name in encoders}
    homes = {name: Path(tempfile.mkdtemp(prefix=f"viewfinder-bench-ingest-{name}-")) for name in steps}
    try:
        for r in range(args.rounds):
            for home in homes.values():  # a new library each round, so every round indexes the same new files
                shutil.rmtree(home)
            writers = {name: LibraryWriter.open(home) for name, home in homes.items()}
            parts = segments(paths, args.segment)
            for s, roots in enumerate(parts):
                count = sum(1 for p in paths if p.parent in roots)
                sizes = batch_sizes(count, batch_size)
                first, second = sizes[: len(sizes) // 2], sizes[len(sizes) // 2 :]
                order = steps if (r * len(parts) + s) % 2 == 0 else steps[::-1]  # take turns going first, across rounds too
                for name in order:
                    if name == "ray":
                        e2e_s, timings, daemon_s = ray_end_to_end(writers[name], args.model, roots, batch_size, args.ray)
                        ray_rows.append((count, e2e_s))
                        ray_timings.append(timings)
                        daemon_cpu_s += daemon_s
                        log(f"round {r + 1}, {roots[0].name}..{roots[-1].name}, ray: {count} images, end to end {count / e2e_s:.1f} img/s, "
                            f"last actor ready after {timings.ready_s:.1f}s")
                        continue
                    enc = encoders[name]
                    cpu0 = time.process_time()
                    model_s = model_only(enc, first, pixels)
                    cpu1 = time.process_time()
                    e2e_s, stages = end_to_end(writers[name], enc, roots, batch_size, args.workers)
                    cpu2 = time.process_time()
                    model_s += model_only(enc, second, pixels)
                    cpu3 = time.process_time()
                    rows[name].append((count, model_s, e2e_s, (cpu1 - cpu0) + (cpu3 - cpu2), cpu2 - cpu1))
                    for key, value in stages.items():
                        stage_sums[name][key] = stage_sums[name].get(key, 0.0) + value
                    log(f"round {r + 1}, {roots[0].name}..{roots[-1].name}, {name}: {count} images, end to end {count / e2e_s:.1f} img/s, "
                        f"model only {count / model_s:.1f} img/s, ratio {model_s / e2e_s:.3f}")
            for writer in writers.values():
                writer.close()
    finally:
        for home in homes.values():
            shutil.rmtree(home, ignore_errors=True)

    result = summary(rows["torch"], stage_sums["torch"])
    if args.backend != "torch":
        other = summary(rows[args.backend], stage_sums[args.backend])
        other["name"] = args.backend
        other["precision"] = args.precision
        other["model_load_s"] = round(backend_load_s, 2)
        other["speedup_end_to_end"] = round(other["end_to_end_img_s"] / result["end_to_end_img_s"], 3)
        other["speedup_model_only"] = round(other["model_only_img_s"] / result["model_only_img_s"], 3)
        other["speedup_end_to_end_per_segment"] = [
            round(t[2] / o[2], 3) for t, o in zip(rows["torch"], rows[args.backend], strict=True)
        ]
    result = {
        "bench": "ingest",
        "images": args.images,
        "rounds": args.rounds,
        "segments": len(rows["torch"]),
        "image_size": f"{width}x{height}",
        "jpeg_mean_bytes": round(jpeg_bytes),
        "batch_size": batch_size,
        "workers": workers,
        **result,
        "process_start_s": round(PROCESS_START_S, 2),
        "model_load_s": round(model_load_s, 2),
        "model": str(Path(args.model).resolve()),
        "attn_implementation": getattr(encoder.model.config, "_attn_implementation", None),
        "machine": machine(),
    }
    result["meets_target"] = bool(result["ratio"] >= TARGET_RATIO and result["ratio_median_segment"] >= TARGET_RATIO)
    if args.backend != "torch":
        result["backend"] = other
        result["meets_backend_target"] = bool(other["speedup_end_to_end"] >= TARGET_BACKEND_SPEEDUP)
    if args.ray:
        result["ray"] = {**ray_facts, **ray_summary(ray_rows, rows["torch"], ray_timings, daemon_cpu_s)}
    emit(result, args.json)


def summary(rows: list[tuple[float, ...]], stage_sums: dict[str, float]) -> dict[str, Any]:
    """img/s, ratio, CPU per image and stage times of one backend's rows (one per segment)."""
    table = np.array(rows)
    images = int(table[:, 0].sum())
    end_to_end_img_s = images / table[:, 2].sum()
    model_only_img_s = images / table[:, 1].sum()
    per_segment = table[:, 1] / table[:, 2]
    return {
        "end_to_end_img_s": round(float(end_to_end_img_s), 2),
        "model_only_img_s": round(float(model_only_img_s), 2),
        "ratio": round(float(end_to_end_img_s / model_only_img_s), 3),
        "ratio_median_segment": round(float(np.median(per_segment)), 3),
        "ratio_per_segment": [round(float(x), 3) for x in per_segment],
        "cpu_ms_per_image": {
            "end_to_end": round(1000 * table[:, 4].sum() / images, 1),
            "model_only": round(1000 * table[:, 3].sum() / images, 1),
            "loading_threads": round(1000 * stage_sums["load_thread_cpu_s"] / images, 1),
        },
        "stages_s": {k: round(v, 2) for k, v in stage_sums.items()},
    }


if __name__ == "__main__":
    main()
