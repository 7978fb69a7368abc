"""Identical files in one run: each content goes through the model once, and the counts are the same on
every run whatever the timing of the loading threads (issue 8, item 9)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from conftest import Cli, write_image

from indexer.dedupe import plan_embedding
from search.library import Library


def test_plan_embeds_each_content_once() -> None:
    plan = plan_embedding(["a", "b", "a", None, "c", "a", None, "b"], {"c": 7})
    assert plan.embed == [0, 1, 3, 6]  # first of each content; no hash: always embedded
    assert plan.copies == [(2, 0), (5, 0), (7, 1)]  # (position, place in ``embed`` of the same content)
    assert plan.stored == [(4, 7)]


def duplicates(root: Path) -> Path:
    """4 distinct images and 9 copies: 3 copies beside the original (one batch), 6 in later folders."""
    for i in range(4):
        write_image(root / "a" / f"{i}.png", seed=40 + i, size=(48, 40))
    for n in range(3):
        shutil.copy(root / "a" / "0.png", root / "a" / f"0-copy{n}.png")
    for n in range(6):
        (root / f"b{n % 2}").mkdir(exist_ok=True)
        shutil.copy(root / "a" / f"{n % 4}.png", root / f"b{n % 2}" / f"copy{n}.png")
    return root


def test_duplicates_are_embedded_once_with_the_same_counts_every_run(tmp_path: Path, tiny_clip: Path) -> None:
    root = duplicates(tmp_path / "photos")
    reports = []
    cli = Cli(tmp_path / "library", tiny_clip)
    for attempt in range(2):
        for batch in ("2", "64"):  # small batches: copies meet across batches, loaded ahead of the commits
            home = tmp_path / f"library{attempt}-{batch}"
            cli.home = home
            report = cli("index", str(root), "--json", "--batch-size", batch, "--workers", "4")
            reports.append({k: report[k] for k in ("indexed", "reused", "images")})
            lib = Library.open(home)
            try:
                assert len(lib) == 13 and lib.snapshot.vector_rows == 13
                copy = lib.vector_for_path(root / "a" / "0-copy2.png")
                hit = lib.search_vector(copy, k=4)
                assert [h.score for h in hit] == [hit[0].score] * 4 and hit[0].score > 0.999  # the 4 files of content 0
                assert np.allclose(lib.vector_for_path(root / "a" / "0.png"), copy)
            finally:
                lib.close()
    assert reports == [{"indexed": 4, "reused": 9, "images": 13}] * 4
