"""Moving files out of the way (``viewfinder dupes --move-to``) and back (``--undo``). Never deletes.

* Each move is atomic per file: a rename within one filesystem; across filesystems a copy to a temp
  file next to the target, fsync, rename, fsync of the folder, and only then the source is unlinked,
  so a kill at any moment leaves the file in one place or the other, whole (at worst in both).
* A target that exists is never overwritten; a file that changed since it was indexed is not moved.
* Targets mirror the source's absolute path under the destination (``DEST/home/me/a.jpg``), so two
  files of the same name never collide and the log alone can put them back.
* The log is JSON lines, one per move (``{"op": "move", "from", "to", "size", "keeper", "at"}``),
  written and fsynced right after each move; ``undo`` replays it backwards and appends ``undone`` lines.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from search.errors import QueryError
from search.records import ImageRecord
from search.vectors import fsync_dir


@dataclass(frozen=True, slots=True)
class Planned:
    record: ImageRecord
    keeper: str


@dataclass(slots=True)
class MoveReport:
    log: str
    moved: list[dict[str, str]] = field(default_factory=list)  # {from, to}
    skipped: list[dict[str, str]] = field(default_factory=list)  # {path, reason}

    def to_json(self) -> dict[str, Any]:
        return {"log": self.log, "moved": self.moved, "skipped": self.skipped}


def now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def target_for(source: str, dest: Path) -> Path:
    """``DEST`` + the source's absolute path (its anchor dropped)."""
    src = Path(os.path.abspath(source))
    return dest / src.relative_to(src.anchor)


def move_file(source: Path, target: Path) -> None:
    """Atomically move one file; ``FileExistsError`` when ``target`` exists. Never deletes data."""
    if target.exists() or target.is_symlink():
        raise FileExistsError(errno.EEXIST, "the target exists", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, target)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        _copy_across(source, target)
    fsync_dir(target.parent)


def _copy_across(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.viewfinder-move.tmp")
    try:
        shutil.copy2(source, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if target.exists():
            raise FileExistsError(errno.EEXIST, "the target exists", str(target))
        os.rename(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    os.unlink(source)


def _unchanged(rec: ImageRecord) -> str | None:
    """Why the file cannot be moved as the indexed one, or None."""
    try:
        st = os.stat(rec.path)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if st.st_size != rec.size or st.st_mtime_ns != rec.mtime_ns:
        return "changed since it was indexed (index again, then run dupes again)"
    return None


def _append(log: Any, entry: dict[str, Any]) -> None:
    log.write(json.dumps(entry, ensure_ascii=False) + "\n")
    log.flush()
    os.fsync(log.fileno())


def check_destination(dest: Path, library_home: Path) -> Path:
    dest = Path(os.path.abspath(os.path.expanduser(dest)))
    if dest.exists() and not dest.is_dir():
        raise QueryError(f"--move-to {dest} is a file; give a folder (it is created if missing).")
    if dest == library_home or library_home in dest.parents:
        raise QueryError(f"--move-to {dest} is inside the library folder {library_home}; give a folder outside it.")
    return dest


def move_all(plan: Iterable[Planned], dest: Path, log_path: Path) -> MoveReport:
    """Move every planned file under ``dest`` and log each move."""
    report = MoveReport(log=str(log_path))
    dest.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        for item in plan:
            rec = item.record
            why = _unchanged(rec)
            target = target_for(rec.path, dest)
            if why is None:
                try:
                    move_file(Path(rec.path), target)
                except OSError as err:
                    why = f"could not be moved ({err.strerror or err})"
            if why is not None:
                report.skipped.append({"path": rec.path, "reason": why})
                continue
            _append(log, {"op": "move", "from": rec.path, "to": str(target), "size": rec.size, "keeper": item.keeper, "at": now()})
            report.moved.append({"from": rec.path, "to": str(target)})
    return report


def read_log(log_path: Path) -> list[dict[str, Any]]:
    try:
        text = log_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise QueryError(f"Cannot read the move log {log_path}: {getattr(err, 'strerror', None) or err}.") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise QueryError(f"{log_path} is not a Viewfinder move log (line {number} is not JSON).") from None
        if not isinstance(entry, dict) or entry.get("op") not in ("move", "undone") or "from" not in entry or "to" not in entry:
            raise QueryError(f"{log_path} is not a Viewfinder move log (line {number}).")
        entries.append(entry)
    return entries


def undo(log_path: Path) -> MoveReport:
    """Put every logged move back, newest first; files already back (or gone) are reported, not touched."""
    entries = read_log(log_path)
    done = {(e["from"], e["to"]) for e in entries if e["op"] == "undone"}
    report = MoveReport(log=str(log_path))
    with open(log_path, "a", encoding="utf-8") as log:
        for entry in reversed([e for e in entries if e["op"] == "move"]):
            source, target = Path(entry["to"]), Path(entry["from"])
            if (entry["from"], entry["to"]) in done:
                report.skipped.append({"path": entry["from"], "reason": "already put back"})
                continue
            if not source.is_file():
                report.skipped.append({"path": entry["from"], "reason": f"{source} is not there any more"})
                continue
            try:
                move_file(source, target)
            except OSError as err:
                report.skipped.append({"path": entry["from"], "reason": f"could not be put back ({err.strerror or err})"})
                continue
            _append(log, {"op": "undone", "from": entry["from"], "to": entry["to"], "at": now()})
            report.moved.append({"from": entry["to"], "to": entry["from"]})
    return report
