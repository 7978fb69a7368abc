"""``viewfinder tag`` (zero-shot labels for every indexed image) and ``viewfinder tags`` (labels with counts).

The rule and its default threshold are in ``search/tags.py``; the write side is ``indexer/tagging.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ui.clikit import DeviceOpt, HomeOpt, JsonOpt, app, emit_json, settings_for, user_errors

DEFAULT_THRESHOLD = 0.3  # search.tags.DEFAULT_THRESHOLD (not imported: it would load numpy at start-up); a test holds them equal


@app.command()
def tag(
    labels: Annotated[list[str] | None, typer.Argument(help="Labels, e.g. beach mountain 'city at night'.", show_default=False)] = None,
    labels_file: Annotated[Path | None, typer.Option("--labels", help="A text file with one label per line ('#' comments).", show_default=False)] = None,
    top: Annotated[int | None, typer.Option("--top", min=1, help="Keep at most N labels per image [default: no cap].", show_default=False)] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="Keep labels whose probability is at least S (0..1).")] = DEFAULT_THRESHOLD,
    home: HomeOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Tag every indexed image with the LABELS it shows (zero-shot: no training, no image re-read).

    The labels become the library's label set: it replaces the previous one, and later `index` runs tag
    new images with it."""
    from indexer.progress import RichProgress
    from indexer.tagging import tag_with
    from indexer.writer import LibraryWriter
    from search.encoder import Encoder
    from search.tags import check_threshold, clean_labels, parse_label_file

    settings = settings_for(home, None, device)
    with user_errors():
        check_threshold(threshold)
        given = list(labels or [])
        if labels_file is not None:
            given += read_labels(labels_file, parse_label_file)
        names = clean_labels(given)
        with LibraryWriter.open(settings.home) as writer:
            if writer.model is None:
                from search.errors import QueryError

                raise QueryError(f"The library in {settings.home} has no indexed images yet: run `viewfinder index FOLDER --home {settings.home}` first.")
            encoder = Encoder.load(writer.model, settings.device)
            progress = RichProgress(enabled=not as_json and sys.stderr.isatty())
            progress.stage(f"tagging with {len(names)} labels")
            progress.start(writer.vector_rows)
            try:
                report = tag_with(writer, encoder, names, threshold=threshold, top=top, on_block=progress.advance)
            finally:
                progress.finish()
                progress.stage(None)
    if as_json:
        emit_json(report.to_json())
        return
    width = max(len(name) for name, _ in report.counts)
    for name, n in report.counts:
        typer.echo(f"{name:<{width}}  {n}")
    typer.echo(
        f"Tagged {report.tagged} of {report.images} images with {len(report.labels)} labels "
        f"({report.tags} tags, threshold {report.rule.threshold:g}, {report.rule.kind}) in {report.seconds:.1f}s."
    )


def read_labels(path: Path, parse: object) -> list[str]:
    from search.errors import QueryError

    try:
        data = path.read_bytes()
    except OSError as err:
        raise QueryError(f"Cannot read the label file {path}: {err.strerror or err}.") from None
    return parse(data, str(path))  # type: ignore[operator,no-any-return]


@app.command()
def tags(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """The library's labels with how many images hold each, most frequent first."""
    from sqlalchemy.orm import Session

    from search.library import Library
    from search.tagdb import label_set, tag_counts

    with user_errors():
        library = Library.open(settings_for(home).home)
        with Session(library.engine) as session:
            found = label_set(session)
            counts = tag_counts(session) if found else ()
        library.close()
    if as_json:
        emit_json(
            {
                "labels": [{"label": name, "images": n} for name, n in counts],
                "rule": found.rule.to_json() if found else None,
                "model": found.info.get("model") if found else None,
                "tagged_at": found.info.get("tagged_at") if found else None,
            }
        )
        return
    if not found:
        typer.echo(f"No labels yet: run `viewfinder tag LABEL... --home {library.home}`.")
        return
    width = max(len(name) for name, _ in counts)
    for name, n in counts:
        typer.echo(f"{name:<{width}}  {n}")
