"""``viewfinder dupes``: near-duplicate clusters over the whole library, optionally moving the extra copies
aside (``--move-to``, logged) and back (``--undo LOG``). Finding: ``search/dupes.py``; moving:
``indexer/moves.py``. Nothing is ever deleted.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ui.clikit import HomeOpt, JsonOpt, app, emit_json, raise_usage, settings_for, user_errors

CSV_COLUMNS = ("cluster", "role", "path", "size", "width", "height", "date", "score", "content_hash")


def role(member: Any, index: int) -> str:
    return "keeper" if index == 0 else ("identical" if member.identical else "duplicate")


def csv_rows(clusters: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for number, cluster in enumerate(clusters, start=1):
        for i, member in enumerate(cluster.members):
            data = member.to_json()
            rows.append({"cluster": number, "role": role(member, i), **{k: data[k] for k in CSV_COLUMNS[2:] if k in data}})
    return rows


def write_csv(path: Path, clusters: list[Any]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(clusters))


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def print_clusters(clusters: list[Any]) -> None:
    for number, cluster in enumerate(clusters, start=1):
        kind = " (byte-identical)" if cluster.all_identical else ""
        typer.echo(f"Cluster {number}: {len(cluster.members)} images{kind}")
        for i, member in enumerate(cluster.members):
            rec = member.record
            res = f"{rec.width}x{rec.height}" if rec.width else "?"
            what = role(member, i)
            typer.echo(f"  {what:<9} {member.score:.3f}  {res:>11}  {human(rec.size):>8}  {member.when:%Y-%m-%d %H:%M}  {rec.path}")


@app.command()
def dupes(
    home: HomeOpt = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Cosine similarity (-1..1) at which two images count as duplicates [default: 0.92].", show_default=False)
    ] = None,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Also write the clusters to this CSV file.", show_default=False)] = None,
    move_to: Annotated[Path | None, typer.Option("--move-to", help="Move every non-keeper under this folder (logged; never deletes).", show_default=False)] = None,
    undo_log: Annotated[Path | None, typer.Option("--undo", help="Put back the files a --move-to run moved, from its log.", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Near-duplicate images (re-encoded, resized, slightly cropped, burst shots) in clusters, biggest first,
    each with a suggested keeper (most pixels, then oldest). Nothing is moved unless --move-to is given."""
    if move_to is not None and undo_log is not None:
        raise_usage("Give either --move-to or --undo, not both.")
    with user_errors():
        if undo_log is not None:
            from indexer.moves import undo

            report = undo(undo_log)
            if as_json:
                emit_json(report.to_json())
            else:
                for item in report.skipped:
                    typer.echo(f"not put back {item['path']}: {item['reason']}", err=True)
                typer.echo(f"Put back {len(report.moved)} files from {undo_log}.")
            return
        from search.dupes import DEFAULT_THRESHOLD, check_threshold, find_clusters
        from search.library import Library

        cosine = check_threshold(DEFAULT_THRESHOLD if threshold is None else threshold)
        library = Library.open(settings_for(home).home)
        dest = None
        if move_to is not None:
            from indexer.moves import check_destination

            dest = check_destination(move_to, library.home)
        started = time.perf_counter()
        clusters = find_clusters(library, cosine)
        seconds = time.perf_counter() - started
        if csv_file is not None:
            try:
                write_csv(csv_file, clusters)
            except OSError as err:
                from search.errors import QueryError

                raise QueryError(f"Cannot write {csv_file}: {err.strerror or err}.") from None
        moved = None
        if dest is not None:
            from indexer.moves import Planned, move_all

            plan = [Planned(m.record, c.keeper.record.path) for c in clusters for m in c.others]
            log = dest / f"viewfinder-dupes-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
            moved = move_all(plan, dest, log)
        images = len(library)
        library.close()
    extra = sum(len(c.others) for c in clusters)
    extra_bytes = sum(m.record.size for c in clusters for m in c.others)
    if as_json:
        out: dict[str, Any] = {
            "threshold": cosine,
            "images": images,
            "clusters": [c.to_json() for c in clusters],
            "duplicates": extra,
            "duplicate_bytes": extra_bytes,
            "seconds": round(seconds, 3),
        }
        if moved is not None:
            out["moved"] = moved.to_json()
        emit_json(out)
        return
    print_clusters(clusters)
    typer.echo(
        f"{len(clusters)} clusters among {images} images: {extra} images ({human(extra_bytes)}) besides the keepers "
        f"(threshold {cosine:g}, {seconds:.1f}s)."
    )
    if moved is not None:
        for item in moved.skipped:
            typer.echo(f"not moved {item['path']}: {item['reason']}", err=True)
        typer.echo(f"Moved {len(moved.moved)} files under {dest}; the log is {moved.log} (undo: viewfinder dupes --undo {moved.log}).")
