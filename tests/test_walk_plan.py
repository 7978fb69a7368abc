"""Walk (real folder trees with links) and plan (a pure function)."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import write_image

from indexer.plan import make_plan
from indexer.walk import FoundFile, walk


def test_walk_finds_images_once_and_survives_loops(tmp_path: Path) -> None:
    root = tmp_path / "root"
    a = write_image(root / "a" / "one.png", seed=1)
    write_image(root / "b" / "c" / "TWO.JPEG", seed=2, fmt="JPEG")
    write_image(root / "b" / "disguised.txt", seed=3, fmt="PNG")  # content decides
    (root / "b" / "readme.md").write_text("# not an image")
    os.symlink(root, root / "b" / "c" / "loop")  # a symlink loop back to the top
    os.symlink(a, root / "b" / "link-to-one.png")  # the same file reached twice
    os.link(a, root / "hardlink.png")
    os.symlink(root / "missing.png", root / "dangling.png")
    result = walk([root, root / "a"])  # the second root is inside the first
    names = sorted(Path(f.path).name for f in result.files)
    assert len(names) == 3 and {"TWO.JPEG", "disguised.txt"} <= set(names)
    assert len({"one.png", "hardlink.png", "link-to-one.png"} & set(names)) == 1  # one file, listed once
    assert result.unreadable == []


def test_walk_reports_missing_root(tmp_path: Path) -> None:
    result = walk([tmp_path / "nope"])
    assert result.files == [] and result.unreadable[0][0] == str(tmp_path / "nope")


def test_walk_single_file_root(tmp_path: Path) -> None:
    img = write_image(tmp_path / "x.png", seed=1)
    assert [f.path for f in walk([img]).files] == [str(img)]


def f(path: str, size: int = 10, mtime: int = 1) -> FoundFile:
    return FoundFile(path=path, size=size, mtime_ns=mtime)


def test_plan() -> None:
    catalog = {"/r/same.jpg": (10, 1), "/r/changed.jpg": (10, 1), "/r/gone.jpg": (10, 1),
               "/other/keep.jpg": (10, 1), "/r/locked/kept.jpg": (10, 1), "/r2/x.jpg": (1, 1)}
    found = [f("/r/same.jpg"), f("/r/changed.jpg", mtime=2), f("/r/new.jpg")]
    plan = make_plan(found, catalog, roots=["/r"], unreadable=["/r/locked"])
    assert [x.path for x in plan.todo] == ["/r/changed.jpg", "/r/new.jpg"]
    assert plan.unchanged == 1
    assert plan.removed == ["/r/gone.jpg"]  # not /other (another root), not /r/locked (unreadable), not /r2 (prefix only)


def test_plan_size_change_alone_counts() -> None:
    plan = make_plan([f("/r/a.jpg", size=11)], {"/r/a.jpg": (10, 1)}, roots=["/r"])
    assert [x.path for x in plan.todo] == ["/r/a.jpg"] and plan.removed == []


def test_lazy_encoder_fails_once(tmp_path: Path) -> None:
    """A model that cannot load is tried once, not once per waiting decoder thread."""
    import pytest

    from indexer.load import bounded_map
    from indexer.run import LazyEncoder
    from search.errors import ModelLoadError

    calls = []

    def factory():
        calls.append(1)
        raise ModelLoadError("cannot load")

    lazy = LazyEncoder(factory, on_load=lambda enc: None)
    with pytest.raises(ModelLoadError):
        list(bounded_map(lambda _: lazy.get(), range(50), workers=4, ahead=16))
    assert len(calls) == 1
