"""What every ``viewfinder`` command shares: the Typer app, the common options, settings, error and JSON
output. Command modules (``ui/cli.py`` and the ``ui/cmd_*.py`` modules it registers) import from here.

Library code raises ``ViewfinderError``s; ``user_errors`` alone turns them into one-sentence messages on
stderr and a non-zero exit code. Nothing here imports torch or transformers.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from search.errors import ViewfinderError
from search.settings import DEFAULT_MODEL, Settings

app = typer.Typer(
    name="viewfinder",
    help="Semantic image search: index folders of images with CLIP, then search them by text or by image.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help is literal text: Rich markup read "[default: ...]" as a tag and dropped it
)

# Each option names its metavar, so the help reads the same on every Typer in the range pyproject pins
# (newer ones label values ``<path>``, ``<bool>``, ``{paths}``); tests/test_help.py renders every command.
HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        metavar="DIR",
        help="Library folder (default: $VIEWFINDER_HOME, else ~/.local/share/viewfinder).",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        metavar="MODEL",
        help=f"Hugging Face CLIP/SigLIP id or local folder (default: the library's model, or {DEFAULT_MODEL}).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
CatalogOpt = Annotated[
    str | None,
    typer.Option(
        "--catalog",
        metavar="URL",
        help="The catalog on a database server, e.g. postgresql://user@host/db (pip install 'viewfinder[postgres]'); "
        "the library remembers it without the password (default: $VIEWFINDER_CATALOG_URL, else the remembered one, "
        "else SQLite in the library folder).",
        show_default=False,
    ),
]
KOpt = Annotated[int, typer.Option("-k", "--top", metavar="N", min=1, max=10_000, help="Number of results.")]
DeviceOpt = Annotated[str, typer.Option("--device", metavar="DEVICE", help="auto, cpu or cuda.")]
BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        metavar="BACKEND",
        help="auto, torch, onnx or openvino: the runtime of the model on the CPU; onnx (ONNX Runtime) and openvino "
        "come with pip install 'viewfinder[onnx]' / 'viewfinder[openvino]' (default: $VIEWFINDER_BACKEND, else "
        "auto: the fastest one installed that matched torch's vectors on this machine).",
        show_default=False,
    ),
]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        "--precision",
        metavar="PRECISION",
        help="fp32 or int8: int8 runs the model quantised in ONNX Runtime, faster, with vectors within a cosine of "
        "0.99 of fp32's (default: $VIEWFINDER_PRECISION, else fp32).",
        show_default=False,
    ),
]


def settings_for(
    home: Path | None, model: str | None = None, device: str = "auto", backend: str | None = None, precision: str | None = None
) -> Settings:
    base = Settings.from_env()
    return Settings(
        home=home or base.home,
        model=model or base.model,
        device=device,
        batch_size=base.batch_size,
        flat_below=base.flat_below,
        ondisk_above=base.ondisk_above,
        backend=backend or base.backend,
        precision=precision or base.precision,
    )


@contextmanager
def user_errors() -> Iterator[None]:
    """Domain errors become one clear sentence on stderr and exit code 1; Ctrl-C exits 130."""
    try:
        yield
    except ViewfinderError as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("Interrupted; everything committed so far is kept. Run the same command again to finish.", err=True)
        raise typer.Exit(130) from None


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


def raise_usage(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(2)


# --- the end of the process ------------------------------------------------------------------------------

_teardown = {"skip": False}  # set by a command that asks for it, read by ``exit_now`` (the console script's end)


def end_without_teardown(skip: bool = True) -> None:
    """Ask the console script to end this process without tearing the interpreter down once the command
    returns: after a query answered in-process, unloading torch, transformers, SQLAlchemy and faiss costs
    about a CPU-second (docs/BENCHMARKS.md, "Cold CLI") and does nothing the user needs. Only
    ``ui.cli.main`` acts on it (Typer's ``CliRunner`` never calls it); ``skip=False`` withdraws it."""
    _teardown["skip"] = skip


def exit_now(code: object) -> None:
    """End the process with ``code`` at once when a command asked for it (``end_without_teardown``):
    the atexit handlers run and stdout/stderr are flushed, then ``os._exit``. Returns (the caller exits
    normally) when nobody asked, for a non-integer code, while another Python thread runs, or when
    stdout cannot be flushed (a closed pipe: the interpreter reports that as it always does)."""
    if not _teardown["skip"] or not (code is None or isinstance(code, int)) or threading.active_count() > 1:
        return
    atexit._run_exitfuncs()  # logging.shutdown and the libraries' own handlers, as at a normal exit
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code or 0)
