"""Relevance cutoff quality on the trained test model's held-out images (issue 9: tune on evidence).

    python bench/cutoff.py --json

Builds a library of ``tests/data/fashion-heldout`` (10 classes x 40 images) with the trained model
``tests/data/fashion-clip`` through the real indexer, then for every class name as a text query and
every image as an image query asks ``Searcher.run`` for all results with ``--cutoff auto`` and reports
(text read as typed, the default, and again through its prompt ensemble, ``--ensemble``),
averaged over queries: ``kept_relevant`` (share of the query's class that survives the cutoff) and
``dropped_other`` (share of the other classes that is cut). It also sweeps the rule's constants
(``search.cutoff.NULL_MARGIN`` for text, ``IMAGE_Z`` for images) so the defaults can be read off.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from search import cutoff
from search.encoder import Encoder
from search.library import Library
from search.query import Cutoff, Query, Term
from search.searcher import Searcher

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "tests" / "data" / "fashion-clip"
IMAGES = ROOT / "tests" / "data" / "fashion-heldout"


def build(home: Path) -> None:
    from typer.testing import CliRunner

    from ui.cli import app

    result = CliRunner().invoke(app, ["index", str(IMAGES), "--home", str(home), "--model", str(MODEL), "--json"])
    assert result.exit_code == 0, result.output


def score(searcher: Searcher, terms: tuple[Term, ...], relevant: set[str], total: int, ensemble: bool) -> tuple[float, float]:
    found = searcher.run(Query(terms=terms, cutoff=Cutoff("auto"), k=total, ensemble=ensemble))
    kept = {h.path for h in found.hits}
    others = total - len(relevant)
    return len(kept & relevant) / len(relevant), 1 - len(kept - relevant) / max(1, others)


def sweep(searcher: Searcher, classes: dict[str, list[str]], total: int, *, text: bool, ensemble: bool = False) -> list[dict[str, float]]:
    rows = []
    values = (-0.05, -0.02, 0.0, 0.02, 0.05, 0.1) if text else (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
    name = "NULL_MARGIN" if text else "IMAGE_Z"
    original = getattr(cutoff, name)
    try:
        for value in values:
            setattr(cutoff, name, value)
            kept, dropped = [], []
            for label, paths in classes.items():
                queries = [(Term("text", label.replace("-", " ")),)] if text else [(Term("image", p),) for p in paths[:5]]
                for terms in queries:
                    k, d = score(searcher, terms, set(paths), total, ensemble)
                    kept.append(k)
                    dropped.append(d)
            rows.append({name: value, "kept_relevant": round(float(np.mean(kept)), 3), "dropped_other": round(float(np.mean(dropped)), 3)})
    finally:
        setattr(cutoff, name, original)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="viewfinder-bench-cutoff-"))
    try:
        build(home)
        library = Library.open(home)
        searcher = Searcher(library, Encoder.load(str(MODEL), "cpu"))
        classes = {d.name: sorted(str(p) for p in d.iterdir()) for d in sorted(IMAGES.iterdir()) if d.is_dir()}
        total = sum(len(v) for v in classes.values())
        result = {
            "bench": "cutoff",
            "model": str(MODEL.relative_to(ROOT)),
            "images": total,
            "defaults": {"NULL_MARGIN": cutoff.NULL_MARGIN, "IMAGE_Z": cutoff.IMAGE_Z},
            "text_queries": sweep(searcher, classes, total, text=True),
            "text_queries_ensemble": sweep(searcher, classes, total, text=True, ensemble=True),
            "image_queries": sweep(searcher, classes, total, text=False),
        }
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
