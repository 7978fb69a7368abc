"""``viewfinder doctor``: check a library's catalog, vectors file and index against each other, and repair
what can be repaired from the stored vectors, without running the model.

``examine(home)`` only reads and returns a :class:`Checkup` of typed :class:`Finding` s; the rules are
small pure functions of what was read (``vector_findings``, ``index_findings``, ``stray_findings``).
``repair(home, checkup)`` takes the writer lock and, depending on the findings:

* catalog unreadable, emptied or missing: it cannot be rebuilt from the vectors (they do not say which
  file they belong to), so the catalog and the library's files are set aside in ``damaged-<time>/``,
  never deleted; the next ``viewfinder index`` starts a fresh library;
* vectors lost (file missing or shorter than the catalog): the catalog rows of the images whose vectors
  are gone are dropped, so the next ``viewfinder index`` embeds those images again;
* index missing, unreadable, of the wrong size or missing rows: rebuilt from the stored vectors;
* torn tail and stray files from a killed run: cut off and removed.

A catalog written by a newer Viewfinder is left alone: upgrade Viewfinder.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from sqlalchemy import Engine, delete
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from indexer.forget import gone_rows
from indexer.writer import LibraryWriter, lock_library, release_lock
from search import ann, catalog, catalog_location, ondisk
from search.errors import LibraryCorrupt, SchemaTooNew
from search.snapshot import Snapshot, catalog_damage, catalog_path, leftover_files, read_snapshot
from search.schema import migrate
from search.vectors import file_rows


class Severity(StrEnum):
    ERROR = "error"  # something is lost or wrong: searches miss images, or the library does not open
    NOTE = "note"  # left by an interrupted run, harmless, tidied by the next run or by --repair


@dataclass(frozen=True, slots=True)
class Finding:
    code: str  # stable, for scripts: 'index-unreadable', 'vectors-lost'...
    severity: Severity
    message: str  # one sentence for people
    repair: str | None  # what --repair does about it; None: nothing it can do

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "severity": str(self.severity), "message": self.message, "repair": self.repair}


@dataclass(frozen=True, slots=True)
class Checkup:
    home: str
    findings: tuple[Finding, ...]
    facts: dict[str, Any] = field(default_factory=dict)
    repaired: tuple[str, ...] = ()  # what --repair did, in order

    @property
    def healthy(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    @property
    def repairable(self) -> bool:
        return any(f.repair for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "home": self.home,
            "healthy": self.healthy,
            "findings": [f.to_json() for f in self.findings],
            "facts": self.facts,
            "repaired": list(self.repaired),
        }


@dataclass(frozen=True, slots=True)
class IndexState:
    """What the index file on disk holds (``error`` set when it cannot be read)."""

    name: str | None
    exists: bool = False
    error: str | None = None
    dim: int = 0
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


SET_ASIDE = "set the catalog and the library's files aside in {home}/damaged-<time>/ (nothing is deleted); the next `viewfinder index` starts afresh"
REBUILD = "rebuild the index from the stored vectors (no re-embedding)"
RECHECK = "measure the recall again and tune or rebuild the index until it reaches the target"


# --- rules (pure) -----------------------------------------------------------------------------------------


def vector_findings(vector_rows: int, in_file: int, live: np.ndarray) -> list[Finding]:
    """The catalog's committed rows vs. the rows the vectors file holds."""
    out: list[Finding] = []
    usable = min(vector_rows, in_file)
    lost = int(np.count_nonzero(live >= usable))
    if lost:
        why = (
            f"the vectors file holds {in_file} vectors where the catalog has committed {vector_rows}"
            if in_file < vector_rows
            else f"the catalog points past its {vector_rows} committed vectors"
        )
        out.append(
            Finding(
                "vectors-lost",
                Severity.ERROR,
                f"{lost} indexed images have no stored vector: {why}.",
                f"drop those {lost} catalog rows (the next `viewfinder index` embeds the images again) and rebuild the index",
            )
        )
    elif in_file < vector_rows:
        out.append(
            Finding(
                "vectors-short",
                Severity.NOTE,
                f"The vectors file holds {in_file} vectors where the catalog has committed {vector_rows}; no indexed image uses the missing ones.",
                "set the committed count to what the file holds",
            )
        )
    if in_file > vector_rows:
        out.append(
            Finding(
                "torn-tail",
                Severity.NOTE,
                f"{in_file - vector_rows} vectors after the last commit were left by an interrupted run (never read).",
                "cut them off",
            )
        )
    return out


def index_findings(meta: dict[str, Any], live: np.ndarray, index: IndexState) -> list[Finding]:
    """The index file vs. the catalog: present, readable, the right dimension, holding every indexed row."""
    dim = meta.get("dim")
    if dim is None:
        return []
    if index.name is None:
        if len(live) == 0:
            return []
        return [Finding("index-not-built", Severity.NOTE, f"No index has been written yet for the {len(live)} indexed images (searches scan them).", REBUILD)]
    if not index.exists:
        return [Finding("index-missing", Severity.ERROR, f"The index file {index.name} is missing (searches scan the stored vectors instead, slowly).", REBUILD)]
    if index.error is not None:
        return [Finding("index-unreadable", Severity.ERROR, f"The index file {index.name} cannot be read ({index.error}); searches scan the stored vectors instead, slowly.", REBUILD)]
    if index.dim != dim:
        return [Finding("index-wrong-dimension", Severity.ERROR, f"The index file {index.name} holds {index.dim}-dimensional vectors, not {dim}.", REBUILD)]
    covered = int(meta.get("index_rows", 0))
    expected = live[live < covered]
    missing = np.setdiff1d(expected, index.ids, assume_unique=False)
    out: list[Finding] = []
    if len(missing):
        out.append(Finding("index-incomplete", Severity.ERROR, f"The index lacks {len(missing)} indexed images that it should hold; searches would miss them.", REBUILD))
    stale = np.setdiff1d(index.ids, expected, assume_unique=False)
    if len(stale):
        out.append(Finding("index-stale", Severity.NOTE, f"The index still holds {len(stale)} removed or replaced images (filtered out at search time).", REBUILD))
    behind = int(np.count_nonzero(live >= covered))
    if behind:
        out.append(Finding("index-behind", Severity.NOTE, f"{behind} images were committed after the index was written (searched from memory until the next run).", "add them to the index"))
    return out


def recall_findings(meta: dict[str, Any]) -> list[Finding]:
    """The last recall self-check of an IVF-PQ index (``search.recall``) against ``ann.RECALL_TARGET``."""
    params, check = meta.get("index_params") or {}, meta.get("index_check")
    if params.get("kind") != "ivfpq":
        return []
    if check is None:
        return [Finding("recall-not-measured", Severity.NOTE, "The recall of the IVF-PQ index has never been measured (it was built before the self-check).", RECHECK)]
    if check["recall_at_10"] < ann.RECALL_TARGET:
        return [Finding(
            "recall-below-target", Severity.ERROR,
            f"The index's last measured recall@10 is {check['recall_at_10']:.3f}, under the target {ann.RECALL_TARGET}: searches miss some of the best matches.",
            RECHECK,
        )]
    return []


def gone_findings(home: Path, gone: list[str], held: int, shown: int = 3) -> list[Finding]:
    """Catalog rows whose files are no longer on disk: searches still return them. ``--repair`` leaves them
    alone (an unmounted disk looks the same as deleted files); ``viewfinder forget --missing`` removes them."""
    if not gone:
        return []
    examples = ", ".join(gone[:shown]) + (f" and {len(gone) - shown} more" if len(gone) > shown else "")
    return [
        Finding(
            "files-gone",
            Severity.NOTE,
            f"{len(gone)} of the {held} files the library holds are no longer on disk ({examples}); searches still return them. "
            f"If they were deleted, run `viewfinder forget --missing --home {home}`; if their disk is unmounted, mount it.",
            None,
        )
    ]


def stray_findings(names: list[str], keep: set[str]) -> list[Finding]:
    """Temp files, and vectors/index files the catalog does not name: leftovers of a killed run."""
    strays = sorted(n for n in names if n.endswith(".tmp") or (n.startswith(("vectors-", "index-")) and n not in keep))
    if not strays:
        return []
    return [Finding("stray-files", Severity.NOTE, f"{len(strays)} files left by an interrupted run: {', '.join(strays)}.", "remove them")]


# --- reading ---------------------------------------------------------------------------------------------


def connect_catalog(home: Path) -> Engine:
    """The library's catalog: its SQLite file, or its server database (``CatalogUnavailable``, one
    sentence, when that cannot be reached)."""
    url = catalog_location.server_url(home)
    if url is None:
        return catalog.connect(catalog_path(home))
    engine = catalog_location.connect_server(url)
    try:
        engine.connect().close()
    except OperationalError as err:
        engine.dispose()
        raise catalog_location.unreachable(url, err) from None
    return engine


def files_gone(home: Path) -> tuple[list[str], int]:
    """(catalog paths whose files are gone, files the catalog holds)."""
    engine = connect_catalog(home)
    try:
        with Session(engine) as session:
            gone = gone_rows(session)
            held = sum(catalog.counts(session).values())
    finally:
        engine.dispose()
    return gone, held


def index_ids(index: faiss.Index) -> np.ndarray:
    """The ids an index holds (flat IDMap, IVF, or the base + delta of an on-disk one)."""
    parts = getattr(index, "referenced_objects", None)
    if parts:  # search.ondisk.stacked
        return np.concatenate([index_ids(part) for part in parts])
    if isinstance(index, faiss.IndexIDMap):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(ivf.nlist) if lists.list_size(i)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def read_index_state(home: Path, meta: dict[str, Any]) -> IndexState:
    name = meta.get("index_file")
    if name is None:
        return IndexState(name=None)
    missing = sorted(n for n in ondisk.index_files(meta) if not (home / n).is_file())
    if missing:
        return IndexState(name=name if name in missing else missing[0])
    try:
        index = ondisk.open_index(home, meta)
        return IndexState(name=name, exists=True, dim=int(index.d), ids=np.sort(index_ids(index)))
    except ann.UnreadableIndex as err:
        return IndexState(name=name, exists=True, error=str(err))


def _catalog_finding(home: Path) -> Finding | None:
    """Whether there is a catalog at all (and if not, whether that is damage or just no library)."""
    if catalog_path(home).is_file() or (home / catalog_location.URL_FILE).is_file():
        return None
    if leftover_files(home):
        return Finding("catalog-missing", Severity.ERROR, f"The catalog {catalog_path(home)} is missing but the library's vectors are there; without it they cannot be matched to files.", SET_ASIDE.format(home=home))
    if home.is_dir() and any(p.is_dir() and p.name.startswith("damaged-") for p in home.iterdir()):
        return Finding("set-aside", Severity.NOTE, f"The library in {home} is empty: its damaged files were set aside in {home}/damaged-*/; run `viewfinder index FOLDER --home {home}` to build it again.", None)
    return Finding("no-library", Severity.ERROR, f"There is no Viewfinder library in {home}: run `viewfinder index FOLDER --home {home}` first.", None)


def _read_catalog(home: Path) -> tuple[Snapshot | None, Finding | None]:
    had_vectors = any(p.name.startswith("vectors-") for p in leftover_files(home))
    engine = connect_catalog(home)
    try:
        with catalog_damage(home):
            migrate(engine, where=str(home))
            snapshot = read_snapshot(engine)
    except SchemaTooNew as err:
        return None, Finding("schema-too-new", Severity.ERROR, str(err), None)
    except LibraryCorrupt as err:
        cause = err.__cause__
        return None, Finding("catalog-damaged", Severity.ERROR, f"The catalog cannot be read ({getattr(getattr(cause, 'orig', cause), 'sqlite_errorname', cause)}).", SET_ASIDE.format(home=home))
    finally:
        engine.dispose()
    if snapshot.dim is None and had_vectors:
        return None, Finding("catalog-emptied", Severity.ERROR, "The catalog has lost its contents but the library's vectors are still there.", SET_ASIDE.format(home=home))
    return snapshot, None


def examine(home: Path) -> Checkup:
    """Read everything and say what is wrong. Changes nothing (apart from the schema migration that every
    open does)."""
    home = Path(home).expanduser()
    first = _catalog_finding(home)
    if first is not None:
        return Checkup(home=str(home), findings=(first,))
    snapshot, damage = _read_catalog(home)
    if snapshot is None:
        assert damage is not None
        return Checkup(home=str(home), findings=(damage,))
    meta, live = snapshot.meta, snapshot.live
    findings: list[Finding] = []
    in_file = 0
    if snapshot.dim is not None:
        in_file = file_rows(home / meta["vectors_file"], snapshot.dim, meta["dtype"])
        findings += vector_findings(snapshot.vector_rows, in_file, live)
    index = read_index_state(home, meta)
    findings += index_findings(meta, live, index)
    findings += recall_findings(meta)
    names = [p.name for p in home.iterdir() if p.is_file()]
    findings += stray_findings(names, {n for n in (meta.get("vectors_file"),) if n} | ondisk.index_files(meta))
    gone, held = files_gone(home)
    findings += gone_findings(home, gone, held)
    facts = {
        "model": snapshot.model,
        "dim": snapshot.dim,
        "indexed": len(live),
        "vector_rows": snapshot.vector_rows,
        "vectors_in_file": in_file,
        "index_file": index.name,
        "index_vectors": len(index.ids) if index.error is None and index.exists else None,
        "index_rows": int(meta.get("index_rows", 0)),
        "files_gone": len(gone),
    }
    return Checkup(home=str(home), findings=tuple(findings), facts=facts)


# --- repairing -------------------------------------------------------------------------------------------


def set_aside(home: Path, now: datetime | None = None) -> Path:
    """Move the catalog, vectors, index and temp files into a new ``damaged-<time>/`` folder."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    target = home / f"damaged-{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = home / f"damaged-{stamp}-{n}"
    target.mkdir()
    for path in sorted(home.iterdir()):
        if path.is_file() and (path.name.startswith((catalog.CATALOG_FILE, "vectors-", "index-")) or path.name.endswith(".tmp")):
            shutil.move(str(path), target / path.name)
    return target


def drop_lost_rows(home: Path) -> tuple[int, int]:
    """Catalog rows whose vectors are gone are deleted and the committed count set to what the file holds.
    Returns (rows dropped, usable vector rows)."""
    engine = connect_catalog(home)
    try:
        snapshot = read_snapshot(engine)
        meta = snapshot.meta
        usable = min(snapshot.vector_rows, file_rows(home / meta["vectors_file"], meta["dim"], meta["dtype"]))
        with Session(engine) as session, session.begin():
            dropped = session.execute(delete(catalog.FileRow).where(catalog.FileRow.faiss_id >= usable)).rowcount
            catalog.write_meta(session, {"vector_rows": usable, "index_rows": min(int(meta.get("index_rows", 0)), usable)})
    finally:
        engine.dispose()
    return int(dropped or 0), usable


def repair(home: Path, checkup: Checkup, *, flat_below: int = ann.FLAT_BELOW) -> Checkup:
    """Fix what the findings allow, holding the writer lock (``LibraryLocked`` while an indexer runs);
    return a new checkup with what was done."""
    home = Path(home).expanduser()
    codes = {f.code for f in checkup.findings if f.repair}
    if not codes:
        return checkup
    done: list[str] = []
    fd = lock_library(home)
    writer: LibraryWriter | None = None
    try:
        if codes & {"catalog-damaged", "catalog-missing", "catalog-emptied"}:
            target = set_aside(home)
            done.append(f"set the damaged catalog and the library's files aside in {target}; index your folders again to rebuild the library")
        else:
            if codes & {"vectors-lost", "vectors-short"}:
                dropped, usable = drop_lost_rows(home)
                done.append(f"dropped {dropped} catalog rows whose vectors were lost (the next `viewfinder index` embeds those images again); {usable} vectors kept")
            strays = [f for f in checkup.findings if f.code == "stray-files"]
            writer = LibraryWriter(home, fd)  # removes stray files as it opens
            if strays:
                done.append("removed the files left by an interrupted run")
            if "torn-tail" in codes:
                done.append("cut off the vectors written after the last commit")
            rebuild = bool(codes & {"vectors-lost", "index-missing", "index-unreadable", "index-wrong-dimension", "index-incomplete", "index-stale", "index-not-built"})
            params = writer.finish(flat_below=flat_below, rebuild=rebuild)
            if rebuild and params is not None:
                done.append(f"rebuilt the index ({params.kind}) from the stored vectors")
            elif "index-behind" in codes:
                done.append("added the newest images to the index")
            if not rebuild and codes & {"recall-not-measured", "recall-below-target"}:
                checked = writer.check(flat_below=flat_below)
                if checked is not None:
                    done.append(f"measured the index's recall@10: {checked.before.recall:.3f}, {checked.recall:.3f} after tuning")
    finally:
        if writer is not None:
            writer.close()  # releases the lock
        else:
            release_lock(fd)
    after = examine(home)
    return Checkup(home=after.home, findings=after.findings, facts=after.facts, repaired=tuple(done))
