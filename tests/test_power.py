"""Power loss is not a kill (issue 8, item 6): a kill -9 loses nothing the kernel was given, a power cut
loses every byte and every file name that was not made durable. A real index run goes through a recording
``Disk`` (search/disk.py); the model below replays its steps and builds each state a power cut could leave
behind at each point: unsynced file data dropped (a file keeps what its last fsync made durable), unsynced
names undone (a created, renamed or removed name keeps what the last fsync of its folder made durable),
and the catalog as SQLite committed it (SQLite syncs its own data; the catalog file's *name* is modelled
like any other). Every state must open as a library, and a re-run must finish with one row per file.

LazyFS (a FUSE filesystem that drops unsynced data) would test the same on a real mount, SQLite's own
writes included; it needs FUSE mounts, which this test suite cannot count on, so the model is in Python.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from conftest import write_image
from test_kill import (  # noqa: F401
    FLAT_BELOW,
    check_complete,
    check_open_after_kill,
    corpus_files,
    encoder,
    resume,
)

from indexer.run import index_paths
from indexer.writer import LibraryWriter
from search.disk import Disk
from search.encoder import Encoder

CATALOG = "catalog.sqlite"
MAX_VARIANTS = 64  # per crash point; above it only "all durable", "all as written" and one-at-a-time


@dataclass(frozen=True)
class Step:
    op: str
    names: tuple[str, ...]
    content: bytes | None  # the file's bytes after a write
    catalog: bytes | None  # the catalog as committed just before the step (None: no catalog yet)


class RecordingDisk(Disk):
    """The real disk, with every step and the committed catalog before it recorded."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.steps: list[Step] = []
        skip = (CATALOG, "lock")  # the catalog (and its -wal, -shm) is taken from SQLite's committed state
        self.initial = {p.name: p.read_bytes() for p in home.glob("*") if p.is_file() and not p.name.startswith(skip)} if home.is_dir() else {}
        self.initial_catalog = (home / CATALOG).exists()

    def committed_catalog(self) -> bytes | None:
        path = self.home / CATALOG
        if not path.exists():
            return None
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        dst = sqlite3.connect(":memory:")
        try:
            src.backup(dst)
            return dst.serialize()
        finally:
            src.close()
            dst.close()

    def _record(self, op: str, *paths: Path, content: bytes | None = None, catalog: bytes | None = None) -> None:
        assert all(p.parent == self.home for p in paths if op != "mkdir"), paths
        self.steps.append(Step(op, tuple(p.name for p in paths), content, catalog))

    def write_at(self, path: Path, offset: int, data: memoryview) -> bool:
        before = self.committed_catalog()
        created = super().write_at(path, offset, data)
        self._record("write", path, content=path.read_bytes(), catalog=before)
        return created

    def write_file(self, path: Path, write: Callable[[str], None]) -> None:
        before = self.committed_catalog()
        super().write_file(path, write)
        self._record("write", path, content=path.read_bytes(), catalog=before)

    def truncate(self, path: Path, size: int) -> None:
        before = self.committed_catalog()
        super().truncate(path, size)
        self._record("write", path, content=path.read_bytes(), catalog=before)

    def fsync(self, path: Path) -> None:
        before = self.committed_catalog()
        super().fsync(path)
        self._record("fsync", path, catalog=before)

    def fsync_dir(self, folder: Path) -> None:
        before = self.committed_catalog()
        super().fsync_dir(folder)
        assert folder == self.home
        self.steps.append(Step("fsync_dir", (), None, before))

    def replace(self, src: Path, dst: Path) -> None:
        before = self.committed_catalog()
        super().replace(src, dst)
        self._record("replace", src, dst, catalog=before)

    def unlink(self, path: Path) -> None:
        before = self.committed_catalog()
        existed = path.exists()
        super().unlink(path)
        if existed:
            self._record("unlink", path, catalog=before)

    def mkdir(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)  # the library folder is taken as durable (its parent is not modelled)

    def finish(self) -> None:
        self.steps.append(Step("end", (), None, self.committed_catalog()))


@dataclass
class Model:
    """Names and file contents, as the program sees them and as a power cut would keep them."""

    names: dict[str, int] = field(default_factory=dict)
    durable_names: dict[str, int] = field(default_factory=dict)
    content: dict[int, bytes] = field(default_factory=dict)
    durable: dict[int, bytes] = field(default_factory=dict)
    next_inode: int = 1

    def _new(self, name: str) -> int:
        inode, self.next_inode = self.next_inode, self.next_inode + 1
        self.names[name] = inode
        self.content[inode] = self.durable[inode] = b""  # a new file's data is not durable until its fsync
        return inode

    def apply(self, step: Step) -> None:
        if step.catalog is not None and CATALOG not in self.names:
            self.names[CATALOG] = 0  # SQLite created it; inode 0 holds whatever SQLite committed
        if step.op == "write":
            inode = self.names.get(step.names[0]) or self._new(step.names[0])
            self.content[inode] = step.content or b""
        elif step.op == "fsync":
            inode = self.names[step.names[0]]
            self.durable[inode] = self.content[inode]
        elif step.op == "fsync_dir":
            self.durable_names = dict(self.names)
        elif step.op == "replace":
            self.names[step.names[1]] = self.names.pop(step.names[0])
        elif step.op == "unlink":
            self.names.pop(step.names[0], None)

    def crash_states(self, catalogs: list[bytes | None]) -> Iterator[dict[str, bytes]]:
        """Every folder a power cut now could leave: name -> bytes (the catalog as one of ``catalogs``)."""
        changed = sorted(n for n in set(self.names) | set(self.durable_names) if self.names.get(n) != self.durable_names.get(n))
        for pick in _choices(len(changed)):
            names = dict(self.durable_names)
            for name, current in zip(changed, pick, strict=True):
                inode = (self.names if current else self.durable_names).get(name)
                if inode is None:
                    names.pop(name, None)
                else:
                    names[name] = inode
            dirty = sorted({i for i in names.values() if i and self.content[i] != self.durable[i]})
            for data_pick in _choices(len(dirty)):
                written = {i for i, keep in zip(dirty, data_pick, strict=True) if keep}
                for catalog in catalogs:
                    files = {n: (self.content[i] if i in written else self.durable[i]) for n, i in names.items() if i}
                    if CATALOG in names and catalog is not None:
                        files[CATALOG] = catalog
                    yield files


def _choices(n: int) -> list[tuple[int, ...]]:
    if 2**n <= MAX_VARIANTS:
        return list(itertools.product((0, 1), repeat=n))
    return [(0,) * n, (1,) * n, *[tuple(int(i == j) for i in range(n)) for j in range(n)]]


def all_crash_states(disk: RecordingDisk) -> dict[str, dict[str, bytes]]:
    """Distinct crash states (by content) after every prefix of the recorded steps, starting from the
    durable folder the run found. A commit between two steps can have landed or not: both are tried."""
    steps = disk.steps
    model = Model()
    for name, data in disk.initial.items():
        inode = model._new(name)
        model.content[inode] = model.durable[inode] = data
    if disk.initial_catalog:
        model.names[CATALOG] = 0
    model.durable_names = dict(model.names)
    states: dict[str, dict[str, bytes]] = {}
    for j in range(len(steps)):
        catalogs = [c for c in {steps[j - 1].catalog if j else None, steps[j].catalog} if c is not None] or [None]
        model.apply(Step("none", (), None, steps[j].catalog))  # SQLite may have created the catalog by now
        for files in model.crash_states(catalogs):
            key = hashlib.sha256(repr(sorted((n, hashlib.sha256(b).hexdigest()) for n, b in files.items())).encode()).hexdigest()
            states.setdefault(key, files)
        model.apply(steps[j])
    return states


def record_run(home: Path, root: Path, encoder: Encoder, disk: RecordingDisk) -> None:  # noqa: F811
    with LibraryWriter.open(home, disk=disk) as writer:
        index_paths([root], writer, lambda: encoder, model_id=encoder.model_id, batch_size=2, workers=1, flat_below=FLAT_BELOW)


def check_states(states: dict[str, dict[str, bytes]], root: Path, work: Path, encoder: Encoder) -> int:  # noqa: F811
    corpus = corpus_files(root)
    checked = 0
    for n, files in enumerate(states.values()):
        home = work / f"state-{n}"
        home.mkdir(parents=True)
        for name, data in files.items():
            (home / name).write_bytes(data)
        if CATALOG not in files:
            assert not any(name.startswith("vectors-") for name in files), f"state {n}: vectors without a catalog: {sorted(files)}"
        try:
            check_open_after_kill(home)  # the library opens and searches only committed rows
            resume(home, root, encoder)  # a re-run finishes ...
            check_complete(home, corpus.images, corpus.broken, garbage_ok=True)  # ... with one row per file
        except BaseException as err:
            raise AssertionError(f"crash state {n} {sorted((k, len(v)) for k, v in files.items())}: {err}") from err
        shutil.rmtree(home)
        checked += 1
    return checked


def make_photos(root: Path, n: int, start: int = 0) -> Path:
    for i in range(start, start + n):
        write_image(root / f"p{i:02d}.png", seed=700 + i, size=(40, 32))
    return root


def test_every_power_cut_of_a_first_run_leaves_a_library(tmp_path: Path, encoder: Encoder) -> None:  # noqa: F811
    root = make_photos(tmp_path / "photos", 5)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    home = tmp_path / "library"
    disk = RecordingDisk(home)
    record_run(home, root, encoder, disk)
    disk.finish()
    ops = [s.op for s in disk.steps]
    assert ops.count("write") >= 4 and "replace" in ops  # 3 batches and an index
    states = all_crash_states(disk)
    assert len(states) >= 10, len(states)
    assert check_states(states, root, tmp_path / "states", encoder) == len(states)


def test_every_power_cut_of_an_incremental_run_leaves_a_library(tmp_path: Path, encoder: Encoder) -> None:  # noqa: F811
    root = make_photos(tmp_path / "photos", 5)
    home = tmp_path / "library"
    resume(home, root, encoder)
    make_photos(root, 3, start=10)
    (root / "p01.png").unlink()
    disk = RecordingDisk(home)
    record_run(home, root, encoder, disk)  # new rows, a removal, a new index file replacing the old one
    disk.finish()
    assert [s.op for s in disk.steps].count("unlink") >= 1
    states = all_crash_states(disk)
    assert check_states(states, root, tmp_path / "states", encoder) == len(states)
