"""The ``viewfinder`` command: a thin Typer layer over ``search`` and ``indexer``.

Library code raises ``ViewfinderError``s; this module alone turns them into one-sentence messages on
stderr and a non-zero exit code.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from search.settings import DEFAULT_MODEL, Settings
from ui.clikit import (
    BackendOpt,
    CatalogOpt,
    DeviceOpt,
    HomeOpt,
    JsonOpt,
    KOpt,
    ModelOpt,
    PrecisionOpt,
    app,
    emit_json,
    end_without_teardown,
    exit_now,
    raise_usage,
    settings_for,
    user_errors,
)


# --- index --------------------------------------------------------------------------------------------


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(metavar="PATH...", help="Folders (walked recursively) or image files.", show_default=False)],
    home: HomeOpt = None,
    model: ModelOpt = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", metavar="N", min=1, help="Images per model call (default: 32 on CPU, 256 on CUDA).")] = None,
    device: DeviceOpt = "auto",
    backend: BackendOpt = None,
    precision: PrecisionOpt = None,
    workers: Annotated[int | None, typer.Option("--workers", metavar="N", min=1, help="Decoding threads (default: CPU count, at most 8).")] = None,
    catalog_url: CatalogOpt = None,
    ray_address: Annotated[str | None, typer.Option("--ray", metavar="ADDRESS", help="Read, decode and embed on a Ray cluster (auto: the running one, else a new one on this machine); pip install 'viewfinder[ray]'.", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Index images under PATHS: new and changed files are embedded, unchanged ones skipped, deleted ones removed."""
    started = time.perf_counter()  # the summary counts the whole command: imports, lock, walk, model, index
    # Idle OpenMP threads yield the cores to the decoder threads instead of spinning between batches
    # (bench/ingest.py: end-to-end/model-only 0.875 -> 0.920). Only here: it slows one-off text queries.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from indexer.forget import absolute, rows_under
    from indexer.progress import RichProgress
    from indexer.run import index_paths
    from indexer.writer import LibraryWriter
    from search.ann import FLAT_BELOW, ONDISK_ABOVE
    from search.backends import cache_root, check_backend, check_precision
    from search.encoder import Encoder, default_batch_size, pick_device, resolve_model_id
    from search.snapshot import catalog_path

    settings = settings_for(home, model, device, backend, precision)
    with user_errors():
        check_precision(settings.precision, check_backend(settings.backend))
        missing = [str(p) for p in paths if not os.path.lexists(p)]  # refused, unless the library holds them
        if missing and not catalog_path(Path(settings.home).expanduser()).is_file():
            raise_usage(f"No such file or folder: {', '.join(missing)}")
        dev = pick_device(settings.device)
        with LibraryWriter.open(settings.home, catalog_url=catalog_url, ondisk_above=settings.ondisk_above or ONDISK_ABOVE) as writer:
            with writer.session() as session:  # a path indexed before and deleted since: its rows are removed
                unknown = [p for p, rows in rows_under(session, [absolute(p) for p in missing]).items() if not rows]
            if unknown:
                raise_usage(f"No such file or folder: {', '.join(unknown)}")
            model_id = resolve_model_id(settings.model) if settings.model else (writer.model or DEFAULT_MODEL)
            writer.check_model(model_id)
            progress = RichProgress(enabled=not as_json and sys.stderr.isatty())
            if ray_address is not None:  # the same writer and commits; the embedding on the cluster
                from functools import partial

                from indexer.ray_ingest import index_paths_ray

                load = partial(Encoder.load, model_id, backend=settings.backend, cache=cache_root(settings.home), precision=settings.precision)
                report = index_paths_ray(paths, writer, load, address=ray_address, model_id=model_id, progress=progress,
                                         batch_size=batch_size or settings.batch_size or default_batch_size(dev),
                                         flat_below=settings.flat_below or FLAT_BELOW)  # fmt: skip
            else:
                report = index_paths(
                    paths,
                    writer,
                    lambda: Encoder.load(model_id, dev, backend=settings.backend, cache=cache_root(settings.home), precision=settings.precision),
                    model_id=model_id,
                    batch_size=batch_size or settings.batch_size or default_batch_size(dev),
                    progress=progress,
                    workers=workers,
                    flat_below=settings.flat_below or FLAT_BELOW,
                )
    report.seconds = time.perf_counter() - started
    if as_json:
        emit_json(report.to_json())
        return
    for item in report.skipped:
        typer.echo(f"skipped {item['path']}: {item['reason']}", err=True)
    for item in report.unreadable_folders:
        typer.echo(f"could not read {item['path']}: {item['reason']} (its indexed files are kept)", err=True)
    for item in report.gone:
        typer.echo(f"{item['path']} no longer exists: its {item['removed']} files were removed from the library", err=True)
    kind = report.index.kind if report.index else "none"
    typer.echo(
        f"Indexed {report.indexed}, reused {report.reused}, unchanged {report.unchanged}, removed {report.removed}, "
        f"skipped {len(report.skipped)} in {report.seconds:.1f}s. The library holds {report.images} images ({kind} index)."
    )


# --- info ---------------------------------------------------------------------------------------------


@app.command()
def info(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Facts about a library: images, skipped files, model, index, sizes on disk."""
    from search.gpu import faiss_gpus
    from search.library import Library
    from ui.infotext import index_line, last_indexed_line

    with user_errors():
        library = Library.open(settings_for(home).home)
        facts = library.info().to_json()
        facts["faiss_gpus"] = faiss_gpus()  # 0 unless the installed faiss is the GPU build and sees one
    if as_json:
        emit_json(facts)
        return
    index = facts["index"] or {}
    lines = [
        ("library", facts["home"]),
        ("images", facts["images"]),
        ("skipped", facts["skipped"]),
        ("model", facts["model"] or "(none yet)"),
        ("dim", facts["dim"] or "-"),
        ("index", index_line(facts)),
        ("recall@10", _recall_line(facts.get("index_check"), index.get("kind"))),
        ("last indexed", last_indexed_line(facts)),
        ("on disk", _human_bytes(facts["bytes_on_disk"].get("total", 0))),
    ]
    for key, value in lines:
        typer.echo(f"{key:>13}: {value}")


def _recall_line(check: dict[str, Any] | None, kind: str | None) -> str:
    """The last recall self-check in one line (search.recall); an exact index needs none."""
    if check is None:
        return "exact (flat index)" if kind == "flat" else "not measured (run `viewfinder doctor --repair`)"
    what = "image-like and text-like" if check["text_queries"] else "image-like"
    after, before = check["after"], check["before"]
    chose = "exact index" if after["kind"] == "flat" else f"m={after['m']}, nprobe={after['nprobe']}, rerank={after['rerank']}"
    return (
        f"{check['recall_at_10']:.3f} measured on {check['queries']} {what} queries (target {check['target']}; "
        f"the size rule alone gave {check['recall_before']:.3f}; chose {chose})"
    )


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# --- doctor -------------------------------------------------------------------------------------------


@app.command()
def doctor(
    home: HomeOpt = None,
    repair: Annotated[bool, typer.Option("--repair", help="Fix what can be fixed from the stored vectors (no re-embedding).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check the catalog, vectors and index against each other; --repair fixes what can be fixed.

    Exit code 0 when the library is healthy (or was repaired), 1 when problems remain."""
    from indexer.doctor import examine
    from indexer.doctor import repair as repair_library
    from search.ann import FLAT_BELOW

    settings = settings_for(home)
    with user_errors():
        checkup = examine(settings.home)
        if repair:
            checkup = repair_library(settings.home, checkup, flat_below=settings.flat_below or FLAT_BELOW)
    if as_json:
        emit_json(checkup.to_json())
    else:
        for action in checkup.repaired:
            typer.echo(f"repaired: {action}")
        for finding in checkup.findings:
            fix = f" (--repair: {finding.repair})" if finding.repair and not repair else ""
            typer.echo(f"{finding.severity}: {finding.message}{fix}")
        if checkup.healthy:
            facts = checkup.facts
            typer.echo(f"Healthy: {facts.get('indexed', 0)} indexed images, {facts.get('vector_rows', 0)} stored vectors, index {facts.get('index_file') or 'not built yet'}.")
        else:
            hint = f" Run `viewfinder doctor --home {settings.home} --repair`." if checkup.repairable and not repair else ""
            typer.echo(f"Problems remain.{hint}")
    if not checkup.healthy:
        raise typer.Exit(1)


# --- ui -----------------------------------------------------------------------------------------------


@app.command()
def ui(
    home: HomeOpt = None,
    port: Annotated[int, typer.Option("--port", metavar="PORT", min=1, max=65535, help="Port to serve the page on.")] = 8501,
    host: Annotated[
        str, typer.Option("--host", metavar="ADDRESS", help="Address to bind: 127.0.0.1 is this machine only; 0.0.0.0 opens it to the network.")
    ] = "127.0.0.1",
) -> None:
    """Serve the web UI on a library: search by text, drop in an image, or ask for more like a result."""
    import os

    from search.library import Library
    from ui.launch import streamlit_command

    settings = settings_for(home)
    with user_errors():
        Library.open(settings.home).close()  # no library: say what to run, before starting a server
    command = streamlit_command(settings.home, port=port, host=host)
    typer.echo(f"Viewfinder: serving {settings.home} on http://{host}:{port} (Ctrl-C stops it)", err=True)
    sys.stdout.flush()
    os.execv(command[0], command)  # Streamlit takes over this process: signals reach it directly


# Commands that live in their own modules register themselves on ``app`` when imported.
from ui import cmd_registry  # noqa: E402,F401


def main() -> None:
    end_without_teardown(False)  # only the command run now may ask for it
    try:
        app()
    except SystemExit as done:  # Typer always ends this way; a query answered here skips the teardown
        exit_now(done.code)
        raise


if __name__ == "__main__":
    main()
