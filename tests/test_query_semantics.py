"""Query power on a model that knows something (the trained Fashion-MNIST CLIP): the automatic cutoff
keeps the relevant images and drops most of the rest, "not" terms push a class away, an image term pulls
towards its class, a filter keeps exactly its matches. Figures: docs/QUALITY.md ("Relevance cutoff")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import Cli

from search.encoder import Encoder
from search.filterspec import Filter
from search.library import Library
from search.query import Cutoff, Query, Term
from search.searcher import Searcher


@pytest.fixture(scope="module")
def fashion(semantic_model: Path, semantic_images: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Searcher, dict[str, set[str]]]:
    home = tmp_path_factory.mktemp("fashion") / "library"
    Cli(home, semantic_model)("index", str(semantic_images), "--json")
    searcher = Searcher(Library.open(home), Encoder.load(str(semantic_model), "cpu"))
    classes = {d.name: {str(p) for p in d.iterdir()} for d in sorted(semantic_images.iterdir()) if d.is_dir()}
    return searcher, classes


def kept_and_dropped(searcher: Searcher, terms: tuple[Term, ...], relevant: set[str], total: int) -> tuple[float, float]:
    found = searcher.run(Query(terms=terms, cutoff=Cutoff("auto"), k=total))
    kept = {h.path for h in found.hits}
    assert found.cut == total - len(kept)  # every result the cutoff removed is counted
    return len(kept & relevant) / len(relevant), 1 - len(kept - relevant) / (total - len(relevant))


def test_auto_cutoff_keeps_the_class_and_drops_most_of_the_rest(fashion: tuple[Searcher, dict[str, set[str]]]) -> None:
    searcher, classes = fashion
    total = sum(len(v) for v in classes.values())
    text = [kept_and_dropped(searcher, (Term("text", name.replace("-", " ")),), paths, total) for name, paths in classes.items()]
    kept, dropped = np.mean(text, axis=0)
    assert kept >= 0.85 and dropped >= 0.6, (kept, dropped)  # bench/cutoff.py: 0.93 / 0.69
    images = [
        kept_and_dropped(searcher, (Term("image", path),), paths, total)
        for paths in classes.values()
        for path in sorted(paths)[:3]
    ]
    kept, dropped = np.mean(images, axis=0)
    assert kept >= 0.5 and dropped >= 0.7, (kept, dropped)  # measured 0.58 / 0.76; a random cut that keeps x keeps x and drops 1 - x


def test_no_cutoff_returns_everything(fashion: tuple[Searcher, dict[str, set[str]]]) -> None:
    searcher, classes = fashion
    total = sum(len(v) for v in classes.values())
    found = searcher.run(Query(terms=(Term("text", "sneaker"),), k=total))
    assert len(found.hits) == total and found.cut == 0


def class_share(searcher: Searcher, terms: tuple[Term, ...], paths: set[str], k: int = 20) -> float:
    hits = searcher.run(Query(terms=terms, k=k)).hits
    return sum(h.path in paths for h in hits) / len(hits)


def test_not_terms_push_a_class_away_and_image_terms_pull(fashion: tuple[Searcher, dict[str, set[str]]]) -> None:
    searcher, classes = fashion
    boots, sneakers, sandals = classes["ankle-boot"], classes["sneaker"], classes["sandal"]
    shoe = (Term("text", "shoe"),)
    plain = class_share(searcher, shoe, sneakers)
    minus = class_share(searcher, (*shoe, Term("text", "sneaker", -1.0)), sneakers)
    assert minus < plain, (plain, minus)
    boot_image = sorted(boots)[0]
    pulled = class_share(searcher, (*shoe, Term("image", boot_image, 2.0)), boots)
    assert pulled > class_share(searcher, shoe, boots)
    assert class_share(searcher, (Term("text", "sandal"),), sandals) >= 0.7


def test_a_filter_keeps_exactly_its_matches_in_meaningful_order(fashion: tuple[Searcher, dict[str, set[str]]]) -> None:
    searcher, classes = fashion
    folder = str(Path(next(iter(classes["bag"]))).parent)
    found = searcher.run(Query(terms=(Term("text", "bag"),), filter=Filter.make(folder=folder), k=100))
    assert {h.path for h in found.hits} == classes["bag"]
    scores = [h.score for h in found.hits]
    assert scores == sorted(scores, reverse=True)
