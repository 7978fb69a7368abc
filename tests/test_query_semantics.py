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


def hit_rows(hits: list[dict[str, object]], library: Library) -> tuple[np.ndarray, np.ndarray]:
    """The stored vectors of --json hits and their scores."""
    rows = np.stack([np.ravel(library.vector_for_path(str(h["path"]))) for h in hits]).astype(np.float64)
    scores = np.array([float(h["score"]) for h in hits])
    return rows, scores


def test_the_default_reads_the_text_as_typed_and_ensemble_its_prompt_ensemble(fashion: tuple[Searcher, dict[str, set[str]]], semantic_model: Path) -> None:
    """Through the CLI: each hit's score is the cosine of its stored vector with the bare text's vector
    by default and under --raw, and with the ensemble's (search.prompts) under --ensemble; the two differ."""
    from search import prompts

    searcher, _ = fashion
    library = searcher.library
    cli = Cli(library.home, semantic_model)
    encoder = Encoder.load(str(semantic_model), "cpu")
    bare = encoder.encode_text(["ankle boot"])[0]
    ensemble = prompts.ensemble_text(encoder.encode_text, ["ankle boot"])[0]
    for args, vector, other in (((), bare, ensemble), (("--raw",), bare, ensemble), (("--ensemble",), ensemble, bare)):
        hits = cli("search", "ankle boot", "-k", "40", "--json", *args)
        rows, scores = hit_rows(hits, library)
        assert np.allclose(rows @ vector, scores, atol=2e-3), args  # float16 storage, 4-decimal scores
        assert np.abs(rows @ other - scores).max() > 0.01, args  # and the other vector would not fit
    other = cli("search", "ankle boot", "-k", "40", "--json", "--ensemble")
    raw = cli("search", "ankle boot", "-k", "40", "--json")
    assert [h["score"] for h in other] != [h["score"] for h in raw]


def test_text_vectors_are_cached_per_text_and_mode(semantic_model: Path) -> None:
    """search.texts.TextEncoder: a text seen before costs no model call, as typed and ensembled kept apart."""
    from search.texts import TextEncoder

    encoder = Encoder.load(str(semantic_model), "cpu")
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return encoder.encode_text(texts)

    texts = TextEncoder(encode=encode, count_tokens=lambda ts: [len(encoder.tokenizer(t)["input_ids"]) - 2 for t in ts], limit=encoder.max_text_tokens)
    first, _ = texts.vectors(["sneaker", "a dress on a black background"])
    made = len(calls)
    again, _ = texts.vectors(["a dress on a black background", "sneaker"])
    assert len(calls) == made and np.array_equal(again, first[::-1])
    ensembled, _ = texts.vectors(["sneaker"], ensemble=True)
    assert len(calls) == made + 1 and len(calls[-1]) > 1 and "sneaker" not in calls[-1]  # its own entry: the templates
    texts.vectors(["sneaker"], ensemble=True)
    assert len(calls) == made + 1 and not np.allclose(ensembled[0], first[0])


def test_cli_cutoff_auto_and_image_queries_with_and_not(fashion: tuple[Searcher, dict[str, set[str]]], semantic_model: Path) -> None:
    """The CLI's --cutoff auto (cuts the other classes, says how many on stderr) and similar --and/--not."""
    searcher, classes = fashion
    cli = Cli(searcher.library.home, semantic_model)
    total = sum(len(v) for v in classes.values())
    cut = cli("search", "trousers", "-k", str(total), "--cutoff", "auto", "--json")
    kept = {h["path"] for h in cut}
    assert 0 < len(kept) < total and len(kept & classes["trouser"]) >= 0.85 * len(classes["trouser"])
    said = cli("search", "trousers", "-k", str(total), "--cutoff", "auto")
    assert f"{total - len(kept)} result(s) below the relevance cutoff were hidden" in said.stderr
    sneaker = sorted(classes["sneaker"])[0]

    def share(hits: object, cls: str) -> float:
        return sum(h["path"] in classes[cls] for h in hits) / len(hits)  # type: ignore[attr-defined]

    plain = cli("similar", sneaker, "-k", "20", "--json")
    pulled = cli("similar", sneaker, "--and", "2:bag", "-k", "20", "--json")
    pushed = cli("similar", sneaker, "--not", "sneaker", "-k", "20", "--json")
    assert share(pulled, "bag") > share(plain, "bag")
    assert share(pushed, "sneaker") < share(plain, "sneaker")
