"""``viewfinder forget``: remove from the library files that are gone from disk (``indexer/forget.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ui.clikit import (
    HomeOpt,
    JsonOpt,
    app,
    emit_json,
    raise_usage,
    settings_for,
    user_errors,
)

SHOWN = 5  # paths listed in the text output; --json lists them all


@app.command()
def forget(
    paths: Annotated[list[Path] | None, typer.Argument(metavar="PATH...", help="Files, or folders (with everything under them), that no longer exist.", show_default=False)] = None,
    missing: Annotated[bool, typer.Option("--missing", help="Forget every file the library holds that is no longer on disk (files on an unmounted disk count as gone: mount it first).")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove files that are gone from disk from the library: PATHS, or with --missing all of them."""
    from indexer.forget import forget as forget_rows
    from indexer.forget import gone_rows, plan_forget
    from indexer.writer import LibraryWriter
    from search.ann import FLAT_BELOW
    from search.library import Library

    if bool(paths) == missing:
        raise_usage("Give the PATHs to forget, or --missing (not both).")
    settings = settings_for(home)
    with user_errors():
        Library.open(settings.home).close()  # no library, or a damaged one: say so before taking the lock
        with LibraryWriter.open(settings.home) as writer:
            with writer.session() as session:
                rows = gone_rows(session) if missing else plan_forget(session, [str(p) for p in paths or []])
            result = forget_rows(writer, rows, flat_below=settings.flat_below or FLAT_BELOW)
    if as_json:
        emit_json(result.to_json())
        return
    if not result.paths:
        typer.echo(f"Nothing to forget: every file the library holds is on disk. The library holds {result.images} images.")
        return
    shown = ", ".join(result.paths[:SHOWN]) + (f" and {len(result.paths) - SHOWN} more" if len(result.paths) > SHOWN else "")
    typer.echo(f"Forgot {len(result.paths)} files that are gone: {shown}. The library holds {result.images} images.")
