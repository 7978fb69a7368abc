"""``viewfinder eval``: measure quality. ``ann`` (the library's index against an exact scan),
``retrieval`` (recall@k on a captioned set), ``zeroshot`` (accuracy on a folder-per-class tree).

Definitions and file formats: ``search/evaluate.py`` and ``search/ann_eval.py``; the runs that embed
images: ``indexer/evaluate.py``; figures to expect: docs/QUALITY.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ui.clikit import DeviceOpt, HomeOpt, JsonOpt, ModelOpt, app, emit_json, settings_for, user_errors

eval_app = typer.Typer(
    help="Measure quality: the index against an exact scan, recall@k on captioned images, zero-shot accuracy.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(eval_app, name="eval")

TempHomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        metavar="DIR",
        help="Embed the images into this library and keep them there (default: a temporary library, removed afterwards).",
        show_default=False,
    ),
]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", metavar="N", min=1, help="Images per model call (default: 32 on CPU, 256 on CUDA).", show_default=False)]
WorkersOpt = Annotated[int | None, typer.Option("--workers", metavar="N", min=1, help="Decoding threads (default: CPU count, at most 8).", show_default=False)]


def _progress(as_json: bool) -> Any:
    from indexer.progress import RichProgress

    enabled = not as_json and sys.stderr.isatty()
    return lambda label, unit: RichProgress(enabled=enabled, label=label, unit=unit)


def _run(home: Path | None, model: str | None, device: str, batch_size: int | None, workers: int | None, as_json: bool) -> Any:
    """The model and library an evaluation uses: --model, else the --home library's own model, else the default."""
    from indexer.evaluate import EvalRun
    from search.encoder import Encoder, default_batch_size, pick_device, resolve_model_id
    from search.library import Library
    from search.settings import DEFAULT_MODEL

    settings = settings_for(home, model, device)
    dev = pick_device(settings.device)
    model_id = resolve_model_id(settings.model) if settings.model else None
    if home is not None and model_id is None and (home / "catalog.sqlite").is_file():
        library = Library.open(home)
        model_id = library.model
        library.close()
    model_id = model_id or DEFAULT_MODEL
    return EvalRun(
        encoder_factory=lambda: Encoder.load(model_id, dev),
        model_id=model_id,
        home=home,
        batch_size=batch_size or settings.batch_size or default_batch_size(dev),
        workers=workers,
        progress=_progress(as_json),
    )


def _recalls(values: dict[str, float]) -> str:
    return "  ".join(f"{k} {100 * v:5.1f}" for k, v in values.items())


@eval_app.command("ann")
def ann(
    home: HomeOpt = None,
    queries: Annotated[int, typer.Option("--queries", metavar="N", min=1, help="Stored vectors sampled as queries.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the query sample.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Recall@1/10/100 of the library's index, alone and with the exact re-rank, against an exact scan,
    with the latency of each; a warning when the re-ranked recall is below 0.95."""
    from indexer.progress import RichProgress
    from search.ann_eval import measure_ann
    from search.library import Library

    settings = settings_for(home)
    with user_errors():
        library = Library.open(settings.home)
        try:
            progress = RichProgress(enabled=not as_json and sys.stderr.isatty(), label="queries", unit="q")
            progress.stage("exact scan of the stored vectors")
            progress.start(min(queries, len(library)))
            try:
                report = measure_ann(library, queries=queries, seed=seed, advance=progress.advance)
            finally:
                progress.finish()
        finally:
            library.close()
    data = report.to_json()
    if as_json:
        emit_json(data)
    else:
        index = data["index"]
        params = ", ".join(f"{k}={v}" for k, v in index.items() if k not in ("kind", "dim") and v)
        typer.echo(f"{data['images']} images, {index['kind']} index ({params or '-'}); {data['queries']} stored vectors as queries (seed {seed})")
        lat_i, lat_r = data["latency_ms_index_only"], data["latency_ms_reranked"]
        typer.echo(f"  index only:    {_recalls(data['recall_index_only'])}   {lat_i['mean']:.2f} ms/query (p95 {lat_i['p95']:.2f})")
        typer.echo(f"  with re-rank:  {_recalls(data['recall_reranked'])}   {lat_r['mean']:.2f} ms/query (p95 {lat_r['p95']:.2f})")
        typer.echo(f"  exact scan of all queries: {data['exact_seconds']:.2f} s")
    for warning in report.warnings:
        typer.echo(f"Warning: {warning}", err=True)


@eval_app.command("retrieval")
def retrieval(
    captions: Annotated[
        Path,
        typer.Option(
            "--captions",
            metavar="FILE",
            help="Karpathy split JSON (dataset_coco.json, dataset_flickr30k.json), COCO captions JSON, or a CSV of path,caption.",
            show_default=False,
        ),
    ],
    images: Annotated[Path | None, typer.Option("--images", metavar="DIR", help="Folder of the images (default: the captions file's folder).", show_default=False)] = None,
    split: Annotated[str | None, typer.Option("--split", metavar="NAME", help="Karpathy split to evaluate, e.g. test (default: every image in the file).", show_default=False)] = None,
    home: TempHomeOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Text-to-image and image-to-text recall@1/5/10 on a captioned set. Images named in the file but
    missing on disk are counted and reported; the rest are evaluated."""
    from indexer.evaluate import evaluate_retrieval

    with user_errors():
        report = evaluate_retrieval(captions, images or captions.parent, split, _run(home, model, device, batch_size, workers, as_json))
    data = report.to_json()
    if as_json:
        emit_json(data)
        return
    for item in data["unreadable_images"]:
        typer.echo(f"skipped {item['path']}: {item['reason']}", err=True)
    if data["missing_images"]:
        typer.echo(f"{data['missing_images']} images named in the file are not on disk (e.g. {', '.join(data['missing_examples'])}); evaluated without them.", err=True)
    split_text = f", split {data['split']}" if data["split"] else ""
    typer.echo(f"{data['images']} images, {data['captions']} captions ({data['format']}{split_text}), model {data['model']}")
    typer.echo(f"  text-to-image:  {_recalls(data['text_to_image'])}")
    typer.echo(f"  image-to-text:  {_recalls(data['image_to_text'])}")


@eval_app.command("zeroshot")
def zeroshot(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="One sub-folder of images per class; the folder names are the labels.", show_default=False)],
    home: TempHomeOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Top-1/top-5 zero-shot accuracy on a folder-per-class tree, with each label as written and with
    its prompt ensemble."""
    from indexer.evaluate import evaluate_zeroshot

    with user_errors():
        report = evaluate_zeroshot(folder, _run(home, model, device, batch_size, workers, as_json))
    data = report.to_json()
    if as_json:
        emit_json(data)
        return
    for item in data["unreadable_images"]:
        typer.echo(f"skipped {item['path']}: {item['reason']}", err=True)
    typer.echo(f"{data['images']} images in {len(data['classes'])} classes, model {data['model']}")
    for name in ("plain", "ensembled"):
        acc = "  ".join(f"{k} {100 * v:5.1f}%" for k, v in data[name].items())
        typer.echo(f"  {'label as written' if name == 'plain' else 'prompt ensemble'}:  {acc}")
