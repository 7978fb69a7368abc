"""``viewfinder search`` and ``viewfinder similar``: one query object (``search.query.Query``) built from
the same options, answered by ``Searcher.run`` (or a running ``viewfinder serve``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from search.settings import DEFAULT_MODEL, Settings
from ui.clikit import (
    BackendOpt,
    DeviceOpt,
    HomeOpt,
    JsonOpt,
    KOpt,
    ModelOpt,
    PrecisionOpt,
    app,
    emit_json,
    end_without_teardown,
    raise_usage,
    settings_for,
    user_errors,
)

AndOpt = Annotated[
    list[str] | None,
    typer.Option("--and", metavar="[W:]TERM", help="Add a term: an image file, or text. 'W:' weighs it (0.5:boats).", show_default=False),
]
NotOpt = Annotated[
    list[str] | None,
    typer.Option("--not", metavar="[W:]TERM", help="Subtract a term: an image file, or text.", show_default=False),
]
FolderOpt = Annotated[Path | None, typer.Option("--folder", metavar="DIR", help="Only images in this folder and below.", show_default=False)]
AfterOpt = Annotated[str | None, typer.Option("--after", metavar="DATE", help="Taken on or after this date (YYYY-MM-DD).", show_default=False)]
BeforeOpt = Annotated[str | None, typer.Option("--before", metavar="DATE", help="Taken on or before this date (YYYY-MM-DD).", show_default=False)]
FormatOpt = Annotated[list[str] | None, typer.Option("--format", metavar="NAME", help="Only this file format (JPEG, PNG...); repeatable.", show_default=False)]
MinWidthOpt = Annotated[int | None, typer.Option("--min-width", metavar="N", help="At least N pixels wide.", show_default=False)]
MinHeightOpt = Annotated[int | None, typer.Option("--min-height", metavar="N", help="At least N pixels high.", show_default=False)]
CameraOpt = Annotated[str | None, typer.Option("--camera", metavar="TEXT", help="Camera make or model contains TEXT.", show_default=False)]
GlobOpt = Annotated[str | None, typer.Option("--glob", metavar="PATTERN", help="Path matches a shell pattern ('*.png', '*/2024/*').", show_default=False)]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", metavar="LABEL", help="Only images tagged LABEL by `viewfinder tag`; repeatable (all of them).", show_default=False)]
SortOpt = Annotated[str, typer.Option("--sort", metavar="ORDER", help="relevance, newest, oldest or modified.")]
CutoffOpt = Annotated[str, typer.Option("--cutoff", metavar="auto|none|SCORE", help="Hide results below a relevance cutoff.")]
OffsetOpt = Annotated[int, typer.Option("--offset", metavar="N", min=0, help="Skip the first N results.")]
PageOpt = Annotated[int | None, typer.Option("--page", metavar="N", min=1, help="Page N of -k results (instead of --offset).", show_default=False)]
GroupOpt = Annotated[bool, typer.Option("--group", help="Collapse near-duplicates into one result with a count.")]
EnsembleOpt = Annotated[bool, typer.Option("--ensemble/--raw", help="Read 1-3 word texts through the prompt-template ensemble, or as typed (search/prompts.py says why as typed is the default).")]
ExportOpt = Annotated[Path | None, typer.Option("--export", metavar="DIR", help="Link the results into DIR (ranked names).", show_default=False)]
CopyOpt = Annotated[bool, typer.Option("--copy", help="With --export: copy the files instead of linking them.")]
ServerOpt = Annotated[str | None, typer.Option("--server", metavar="URL", help="Ask the `viewfinder serve` at URL.", show_default=False)]
NoServerOpt = Annotated[bool, typer.Option("--no-server", help="Answer in this process even when a server of the library is running.")]
CsvOpt = Annotated[Path | None, typer.Option("--csv", metavar="FILE", help="Write the results to a CSV file.", show_default=False)]


def build_query(terms: tuple[Any, ...], *, k: int, offset: int, page: int | None, sort: str, cutoff: str, group: bool, ensemble: bool, **filters: Any) -> Any:
    from search.filterspec import (
        Filter,  # not search.filters: numpy + SQLAlchemy would slow the server client path
    )
    from search.query import Cutoff, Query, parse_date

    values = {
        "folder": filters.get("folder"),
        "date_from": parse_date(filters["after"]) if filters.get("after") else None,
        "date_to": parse_date(filters["before"]) if filters.get("before") else None,
        "formats": frozenset(filters.get("formats") or ()),
        "min_width": filters.get("min_width"),
        "min_height": filters.get("min_height"),
        "camera": filters.get("camera") or None,
        "glob": filters.get("glob") or None,
        "tags": frozenset(filters.get("tags") or ()),
    }
    query = Query(
        terms=terms,
        filter=Filter.make(**{k_: v for k_, v in values.items() if v not in (None, frozenset())}),
        sort=sort.lower(),  # type: ignore[arg-type]
        cutoff=Cutoff.parse(cutoff),
        k=k,
        offset=offset,
        group=group,
        ensemble=ensemble,
    )
    return query.with_page(page) if page else query


def answer(settings: Settings, query: Any, *, server: str | None = None, no_server: bool = False) -> Any:
    """Results of a query: from the running ``viewfinder serve`` of the library (``ui.client``; found
    through its discovery file, or ``--server URL``) when there is one, else in this process."""
    from ui.client import ask_server

    remote = ask_server(settings.home, server, no_server, lambda r: r.run(query, model=_model_id(settings)))
    if remote is not None:
        return remote
    return answer_here(settings, query)


def _model_id(settings: Settings) -> str | None:
    from search.settings import resolve_model_id

    return resolve_model_id(settings.model) if settings.model else None


def answer_here(settings: Settings, query: Any) -> Any:
    """One query in this process, which then ends (``ui.clikit.end_without_teardown``): ``auto`` runs the
    model with torch (``search.backends.for_one_query``), and the query's forward passes run on one
    torch thread (``_one_thread``)."""
    from search.backends import cache_root, check_backend, check_precision, for_one_query
    from search.encoder import Encoder, resolve_model_id
    from search.library import Library
    from search.searcher import Searcher

    requested = resolve_model_id(settings.model) if settings.model else None
    library = Library.open(settings.home, model=requested)
    restore: list[int] = []  # torch's thread count before the query, once the model is loaded
    try:
        model_id = library.model or requested or DEFAULT_MODEL
        backend = for_one_query(check_backend(settings.backend), check_precision(settings.precision, settings.backend))
        load = lambda: Encoder.load(model_id, settings.device, backend=backend, cache=cache_root(settings.home), precision=settings.precision)
        results = Searcher(library, lambda: _one_thread(load(), restore)).run(query)
    finally:
        library.close()  # the catalog's connections closed now, not left to the interpreter's teardown
        if restore:  # the tests' CliRunner runs many commands in one process
            import torch

            torch.set_num_threads(restore[0])
    end_without_teardown()
    return results


def _one_thread(encoder: Any, restore: list[int]) -> Any:
    """``encoder``, with torch on one intra-op thread from now on (its previous count put in ``restore``).
    The few forward passes of one query gain little from a second thread on an idle machine and lose
    up to 30x on a busy one, where each parallel region waits for a core (docs/BENCHMARKS.md, "Cold
    CLI"). Set after ``Encoder.load``, so the load itself runs as it does everywhere else."""
    import torch

    restore.append(torch.get_num_threads())
    torch.set_num_threads(1)
    return encoder


def report(results: Any, *, as_json: bool, export: Path | None, copy: bool, csv_file: Path | None) -> None:
    from ui.export import export_files, write_csv

    for notice in results.notices:
        typer.echo(notice, err=True)
    if results.cut:
        typer.echo(f"{results.cut} result(s) below the relevance cutoff were hidden (--cutoff none shows them).", err=True)
    if csv_file is not None:
        write_csv(results.hits, csv_file)
    if export is not None:
        done = export_files(results.hits, export, copy=copy)
        typer.echo(f"{'Copied' if copy else 'Linked'} {done} file(s) into {export}.", err=True)
    if as_json:
        emit_json([hit.to_json() for hit in results.hits])
        return
    if not results.hits:
        typer.echo("No results.")
    for hit in results.hits:
        extra = f"  (+{len(hit.group)} near-duplicate{'s' if len(hit.group) > 1 else ''})" if hit.group else ""
        typer.echo(f"{hit.rank:>3}  {hit.score:.4f}  {hit.path}{extra}")


# The options both commands take, in the order --help lists them: (parameter, annotation, default).
QUERY_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("plus", AndOpt, None), ("minus", NotOpt, None),
    ("folder", FolderOpt, None), ("after", AfterOpt, None), ("before", BeforeOpt, None), ("formats", FormatOpt, None),
    ("min_width", MinWidthOpt, None), ("min_height", MinHeightOpt, None), ("camera", CameraOpt, None), ("glob", GlobOpt, None),
    ("tags", TagOpt, None), ("sort", SortOpt, "relevance"), ("cutoff", CutoffOpt, "none"), ("k", KOpt, 20), ("offset", OffsetOpt, 0), ("page", PageOpt, None),
    ("group", GroupOpt, False), ("ensemble", EnsembleOpt, False), ("export", ExportOpt, None), ("copy", CopyOpt, False), ("csv_file", CsvOpt, None),
    ("server", ServerOpt, None), ("no_server", NoServerOpt, False), ("home", HomeOpt, None), ("model", ModelOpt, None),
    ("device", DeviceOpt, "auto"), ("backend", BackendOpt, None), ("precision", PrecisionOpt, None), ("as_json", JsonOpt, False),
)  # fmt: skip


def _run(head: Any, options: dict[str, Any]) -> None:
    """Build the query from the first term and the options, answer it, print it."""
    from search.query import build_terms

    as_json, export, copy, csv_file = (options.pop(name) for name in ("as_json", "export", "copy", "csv_file"))
    server, no_server = options.pop("server"), options.pop("no_server")
    home, model, device, backend, precision = (options.pop(n) for n in ("home", "model", "device", "backend", "precision"))
    plus, minus = options.pop("plus"), options.pop("minus")
    if copy and export is None:
        raise_usage("--copy goes with --export DIR.")
    with user_errors():
        terms = (head, *build_terms([], plus or [], minus or []))
        query = build_query(terms, **options)
        results = answer(settings_for(home, model, device, backend, precision), query, server=server, no_server=no_server)
        report(results, as_json=as_json, export=export, copy=copy, csv_file=csv_file)


def query_command(name: str, head: inspect.Parameter, first_term: Callable[[Any], Any], doc: str) -> None:
    """Register ``viewfinder NAME HEAD [QUERY_OPTIONS]``: one signature for search and similar, built here
    (Typer reads ``__signature__``), so the two commands cannot drift apart."""

    def command(**values: Any) -> None:
        _run(first_term(values.pop(head.name)), values)

    options = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a, default=d) for n, a, d in QUERY_OPTIONS]
    command.__signature__ = inspect.Signature([head.replace(kind=inspect.Parameter.KEYWORD_ONLY), *options])  # type: ignore[attr-defined]
    command.__annotations__ = {}
    command.__doc__ = doc
    command.__name__ = name
    app.command(name)(command)


def text_term(text: str) -> Any:
    from search.errors import QueryError
    from search.query import Term

    if not text.strip():
        with user_errors():
            raise QueryError("The text query is empty.")
    return Term(kind="text", value=text.strip())


def image_term(image: Path) -> Any:
    import os

    from search.query import Term

    if image.is_dir():
        raise_usage(f"{image} is a folder, not an image: name an image file (or search in it with --folder).")
    if not image.is_file():
        raise_usage(f"No such image file: {image}")
    return Term(kind="image", value=os.path.abspath(image))


query_command(
    "search",
    inspect.Parameter("text", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[str, typer.Argument(metavar="TEXT", help="What to look for, in words.", show_default=False)]),
    text_term,
    "Find the images that best match TEXT (plus --and, minus --not terms), best first.",
)
query_command(
    "similar",
    inspect.Parameter("image", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[Path, typer.Argument(metavar="IMAGE", help="An image file (indexed or not).", show_default=False)]),
    image_term,
    "Find the images most like IMAGE (plus --and, minus --not terms), best first; an indexed IMAGE comes first.",
)
