"""``viewfinder eval``: the metrics (pure, with answers worked out by hand), the captions formats, the
three commands through the real CLI, and bad input.

The figures that mean something come from the trained Fashion-MNIST model (fixtures ``semantic_model``
and ``semantic_images``); the random ``tiny_clip`` is used only where meaning does not matter (bad input,
the mechanics of ``eval ann``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, Cli
from search import ann_eval
from search.ann_eval import exact_topk, tie_aware_recall, warnings_for
from search.errors import EvalInputError
from search.evaluate import (
    class_ranks,
    image_to_text_ranks,
    label_text,
    parse_captions,
    parse_class_tree,
    recall_from_ranks,
    text_to_image_ranks,
)


def unit(rows: list[list[float]]) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


# --- metrics ------------------------------------------------------------------------------------------


def test_text_to_image_and_image_to_text_ranks_by_hand() -> None:
    images = unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    # captions 0,1 belong to image 0; caption 2 to image 1; caption 3 to image 2
    texts = unit([[1, 0.1, 0.6], [0.2, 1, 0], [0.1, 1, 0], [1, 0, 0.5]])
    owner = np.array([0, 0, 1, 2])
    t2i = text_to_image_ranks(texts, images, owner)
    assert t2i.tolist() == [0, 1, 0, 1]  # caption 1 prefers image 1; caption 3 prefers image 0
    assert recall_from_ranks(t2i, (1, 2)) == {1: 0.5, 2: 1.0}
    i2t = image_to_text_ranks(texts, images, owner)
    # image 0: caption 3 (0.89) beats its best own caption 0 (0.85); image 1: its caption 2 is first;
    # image 2: caption 0 (0.51) beats its own caption 3 (0.45)
    assert i2t.tolist() == [1, 0, 1]
    assert recall_from_ranks(i2t, (1, 5)) == {1: pytest.approx(1 / 3), 5: 1.0}


def test_ranks_agree_with_a_full_sort_on_random_data() -> None:
    rng = np.random.default_rng(3)
    images = unit(rng.normal(size=(50, 8)).tolist())
    owner = rng.integers(0, 50, size=130)
    texts = unit((images[owner] + rng.normal(scale=0.6, size=(130, 8))).tolist())
    order = np.argsort(-(texts @ images.T), axis=1)
    expected = np.array([int(np.flatnonzero(order[i] == owner[i])[0]) for i in range(130)])
    assert (text_to_image_ranks(texts, images, owner) == expected).all()
    order = np.argsort(-(images @ texts.T), axis=1)
    got = image_to_text_ranks(texts, images, owner)
    for j in np.unique(owner):  # an image's rank: where its first own caption comes in its caption order
        assert got[j] == int(np.flatnonzero(owner[order[j]] == j)[0])


def test_class_ranks_and_label_text() -> None:
    images = unit([[1, 0], [0, 1], [1, 1.2]])
    classes = unit([[1, 0], [0, 1]])
    assert class_ranks(images, classes, np.array([0, 1, 0])).tolist() == [0, 0, 1]
    assert label_text("ankle_boot") == "ankle boot" and label_text("t-shirt_top") == "t-shirt top"


def test_exact_topk_leaves_out_the_query_and_pads() -> None:
    vectors = unit([[1, 0], [0.9, 0.1], [0, 1]]).astype(np.float16)
    live = np.arange(3)
    queries = unit([[1, 0]])
    top = exact_topk(vectors, live, queries, np.array([0]), 3)
    assert top.shape == (1, 3) and top[0, 0] == pytest.approx(0.9939, abs=1e-3) and top[0, 2] == -np.inf


def test_tie_aware_recall() -> None:
    truth = np.array([[0.9, 0.8, 0.8, 0.1]], dtype=np.float32)
    assert tie_aware_recall([np.array([0.9, 0.8])], truth, 2) == 1.0
    assert tie_aware_recall([np.array([0.9, 0.8])], truth, 3) == pytest.approx(2 / 3)  # only two returned
    assert tie_aware_recall([np.array([0.9, 0.8, 0.1])], truth, 3) == pytest.approx(2 / 3)
    assert tie_aware_recall([np.array([0.8, 0.9])], truth, 1) == 0.0  # the first result is not the best
    assert warnings_for({1: 1.0, 10: 0.94}) and "recall@10" in warnings_for({1: 1.0, 10: 0.94})[0]
    assert warnings_for({1: 0.99, 10: 0.95}) == []


# --- captions formats ---------------------------------------------------------------------------------

CLASSES = ("sneaker", "trouser", "bag")


def write_formats(root: Path, pairs: list[tuple[str, str]]) -> dict[str, Path]:
    """The same (relative image path, caption) pairs as Karpathy JSON, COCO captions JSON and CSV."""
    images: dict[str, list[str]] = {}
    for path, caption in pairs:
        images.setdefault(path, []).append(caption)
    karpathy = {
        "dataset": "test",
        "images": [
            {"filename": p, "split": "test" if i % 4 else "val", "sentences": [{"raw": c, "tokens": c.split()} for c in caps]}
            for i, (p, caps) in enumerate(images.items())
        ],
    }
    coco = {
        "images": [{"id": 100 + i, "file_name": p} for i, p in enumerate(images)],
        "annotations": [{"id": j, "image_id": 100 + i, "caption": c} for i, caps in enumerate(images.values()) for j, c in enumerate(caps)],
    }
    out = {"karpathy": root / "dataset_test.json", "coco": root / "captions_test.json", "csv": root / "captions.csv"}
    out["karpathy"].write_text(json.dumps(karpathy))
    out["coco"].write_text(json.dumps(coco))
    with open(out["csv"], "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "caption"])
        writer.writerows(pairs)
    return out


def test_the_three_formats_parse_to_the_same_set(tmp_path: Path) -> None:
    pairs = [("a/1.png", "one, with a comma"), ("a/1.png", "one again"), ("b/2.png", "two"), ("c/3.png", "three")]
    files = write_formats(tmp_path, pairs)
    sets = {name: parse_captions(path) for name, path in files.items()}
    for name, cs in sets.items():
        assert cs.format == name
        assert [c[-1] for c in cs.images] == ["a/1.png", "b/2.png", "c/3.png"]
        assert list(cs.captions) == ["one, with a comma", "one again", "two", "three"]
        assert cs.owner.tolist() == [0, 0, 1, 2]
    test = parse_captions(files["karpathy"], split="test")  # image 0 is in "val"
    assert [c[-1] for c in test.images] == ["b/2.png", "c/3.png"] and test.owner.tolist() == [0, 1]


def test_karpathy_filepath_is_tried_first(tmp_path: Path) -> None:
    data = {"images": [{"filepath": "val2014", "filename": "x.jpg", "split": "test", "sentences": [{"raw": "a cat"}]}]}
    (tmp_path / "d.json").write_text(json.dumps(data))
    assert parse_captions(tmp_path / "d.json").images == (("val2014/x.jpg", "x.jpg"),)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"   \n", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not text"),
        (b"just some words\nand more", "neither JSON"),
        (b"{not json", "not valid JSON"),
        (b'{"foo": [1, 2]}', "neither a Karpathy"),
        (b'{"images": [], "annotations": []}', "holds no captions"),
    ],
)
def test_bad_captions_files_say_one_sentence(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "captions.txt"
    path.write_bytes(content)
    with pytest.raises(EvalInputError, match=message):
        parse_captions(path)


def test_split_errors(tmp_path: Path) -> None:
    files = write_formats(tmp_path, [("a.png", "a"), ("b.png", "b")])
    with pytest.raises(EvalInputError, match="its splits are: test, val"):
        parse_captions(files["karpathy"], split="train")
    with pytest.raises(EvalInputError, match="--split applies to Karpathy"):
        parse_captions(files["csv"], split="test")


def test_class_tree_needs_two_classes(tmp_path: Path) -> None:
    shutil.copytree(DATA / "photos", tmp_path / "only" / "photos")
    with pytest.raises(EvalInputError, match="at least two"):
        parse_class_tree(tmp_path / "only")
    with pytest.raises(EvalInputError, match="not a folder"):
        parse_class_tree(tmp_path / "nope")
    shutil.copytree(DATA / "space", tmp_path / "only" / "outer_space")
    tree = parse_class_tree(tmp_path / "only")
    assert tree.classes == ("outer space", "photos") and len(tree.files) == 8


# --- through the CLI, bad input (tiny random model: meaning does not matter here) -----------------------


def library_state(home: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(home.iterdir()) if p.is_file()}


@pytest.fixture()
def indexed(tmp_path: Path, tiny_clip: Path) -> Cli:
    cli = Cli(tmp_path / "library", tiny_clip)
    cli("index", str(DATA), "--json")
    return cli


def run_eval(*args: str, expect: int = 0):
    from typer.testing import CliRunner

    from ui.cli import app

    result = CliRunner().invoke(app, ["eval", *args])
    assert result.exit_code == expect, result.output
    return result


def test_bad_input_changes_nothing_in_a_home_library(indexed: Cli, tmp_path: Path) -> None:
    home = indexed.home
    before = library_state(home)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.csv").write_text("")
    (bad / "picture.json").write_bytes((DATA / "photos" / "horse.png").read_bytes())
    write_formats(bad, [("nowhere/1.png", "a"), ("nowhere/2.png", "b")])
    cases = [
        (["retrieval", "--captions", str(bad / "empty.csv")], "is empty"),
        (["retrieval", "--captions", str(bad / "picture.json")], "is not text"),
        (["retrieval", "--captions", str(bad / "captions.csv"), "--images", str(DATA)], "None of the 2 images"),
        (["retrieval", "--captions", str(bad / "captions.csv"), "--images", str(bad / "no-such-dir")], "does not exist"),
        (["retrieval", "--captions", str(bad / "captions.csv"), "--split", "test"], "--split applies"),
        (["zeroshot", str(DATA / "photos")], "at least two"),
        (["zeroshot", str(bad / "missing")], "not a folder"),
    ]
    for args, message in cases:
        result = run_eval(*args, "--home", str(home), "--model", str(indexed.model), expect=1)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], (args, result.stderr)
        assert "Traceback" not in result.output
    assert library_state(home) == before


def test_missing_images_are_counted_and_the_rest_evaluated(tmp_path: Path, tiny_clip: Path) -> None:
    pairs = [("photos/horse.png", "a horse"), ("photos/coffee.png", "coffee"), ("gone/a.png", "x"), ("gone/b.png", "y")]
    files = write_formats(tmp_path, pairs)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    with open(files["csv"], "a", newline="") as fh:
        csv.writer(fh).writerow([str(tmp_path / "broken.png"), "a broken file"])
    for name in ("karpathy", "coco", "csv"):
        result = run_eval("retrieval", "--captions", str(files[name]), "--images", str(DATA), "--model", str(tiny_clip), "--json")
        data = json.loads(result.stdout)
        assert data["missing_images"] == 2 and sorted(data["missing_examples"]) == ["gone/a.png", "gone/b.png"]
        assert data["images"] == 2 and data["captions"] == 2
        assert len(data["unreadable_images"]) == (1 if name == "csv" else 0)
    text = run_eval("retrieval", "--captions", str(files["csv"]), "--images", str(DATA), "--model", str(tiny_clip))
    assert "2 images named in the file are not on disk" in text.stderr and "skipped" in text.stderr
    assert "text-to-image:" in text.stdout and "image-to-text:" in text.stdout
    # --home keeps the vectors: a second run reuses them and changes nothing in the library
    home = tmp_path / "kept"
    args = ["retrieval", "--captions", str(files["coco"]), "--images", str(DATA), "--model", str(tiny_clip), "--home", str(home), "--json"]
    first = json.loads(run_eval(*args).stdout)
    vectors = {p.name: p.read_bytes() for p in home.glob("vectors-*")}
    second = json.loads(run_eval(*args).stdout)
    assert first["text_to_image"] == second["text_to_image"] and first["images"] == 2
    assert {p.name: p.read_bytes() for p in home.glob("vectors-*")} == vectors
    assert Cli(home, tiny_clip)("info", "--json")["images"] == 2


def test_eval_ann_on_a_flat_library_is_exact(indexed: Cli) -> None:
    data = json.loads(run_eval("ann", "--home", str(indexed.home), "--json").stdout)
    assert data["index"]["kind"] == "flat" and data["queries"] == data["images"] == 14  # data/ less nothing
    assert all(v == 1.0 for v in data["recall_reranked"].values())
    assert all(v == 1.0 for v in data["recall_index_only"].values())
    assert data["warnings"] == [] and data["latency_ms_reranked"]["mean"] > 0


def test_eval_ann_empty_library_says_so(tmp_path: Path) -> None:
    result = run_eval("ann", "--home", str(tmp_path / "none"), expect=1)
    assert result.stderr.startswith("Error: There is no Viewfinder library")


# --- on the trained model -----------------------------------------------------------------------------


def per_class_sample(images: Path, per_class: int) -> list[tuple[str, str]]:
    """(relative path, class folder) for the first ``per_class`` images of each class."""
    out = []
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.png"))[:per_class]:
            out.append((str(path.relative_to(images)), folder.name))
    return out


def test_zeroshot_on_the_trained_model(semantic_model: Path, semantic_images: Path) -> None:
    result = run_eval("zeroshot", str(semantic_images), "--model", str(semantic_model), "--json")
    data = json.loads(result.stdout)
    assert len(data["classes"]) == 10 and data["images"] == 400
    for name in ("plain", "ensembled"):
        assert data[name]["top1"] >= 0.5, data  # chance: 0.1
        assert data[name]["top5"] >= max(0.9, data[name]["top1"]), data  # chance: 0.5
    text = run_eval("zeroshot", str(semantic_images), "--model", str(semantic_model))
    assert "prompt ensemble" in text.stdout and "top1" in text.stdout


def test_retrieval_on_the_trained_model_in_every_format(semantic_model: Path, semantic_images: Path, tmp_path: Path) -> None:
    """One image per class, captioned from its class name: recall@1 far above chance (0.1 for both
    directions), and the three formats of the same set give the same figures."""
    sample = per_class_sample(semantic_images, 1)
    pairs = [(path, f"a photo of a {label_text(cls)}") for path, cls in sample]
    pairs += [(path, f"a {label_text(cls)}") for path, cls in sample]
    files = write_formats(tmp_path, pairs)
    figures = {}
    for name, path in files.items():
        data = json.loads(run_eval("retrieval", "--captions", str(path), "--images", str(semantic_images), "--model", str(semantic_model), "--json").stdout)
        assert data["format"] == name and data["images"] == 10 and data["captions"] == 20 and data["missing_images"] == 0
        figures[name] = (data["text_to_image"], data["image_to_text"])
    assert figures["karpathy"] == figures["coco"] == figures["csv"]
    t2i, i2t = figures["csv"]
    # chance: text-to-image R@1 0.1, R@5 0.5; image-to-text (2 own captions of 20) R@1 0.1, R@5 0.45
    # measured (docs/QUALITY.md): text-to-image 1.0 / 1.0, image-to-text 0.9 / 1.0
    assert t2i["R@1"] >= 0.5 and t2i["R@5"] >= 0.9, figures
    assert i2t["R@1"] >= 0.3 and i2t["R@5"] >= 0.7, figures


def test_eval_ann_on_an_ivfpq_library(semantic_model: Path, semantic_images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """400 real embeddings in an IVF-PQ index (VIEWFINDER_FLAT_BELOW lowered): the re-rank recovers what
    the PQ codes lose, and a recall below the warning line is said on stderr."""
    monkeypatch.setenv("VIEWFINDER_FLAT_BELOW", "100")
    cli = Cli(tmp_path / "library", semantic_model)
    cli("index", str(semantic_images), "--json")
    data = json.loads(run_eval("ann", "--home", str(cli.home), "--queries", "200", "--json").stdout)
    if data["index"]["kind"] != "ivfpq":
        pytest.skip(f"the index self-check chose {data['index']['kind']} for this library")
    assert data["queries"] == 200 and data["images"] == 400
    for k in ("R@1", "R@10", "R@100"):
        assert data["recall_reranked"][k] >= data["recall_index_only"][k]
    assert data["recall_reranked"]["R@10"] >= 0.95 and data["warnings"] == []
    assert data["recall_index_only"]["R@10"] < 1.0  # PQ codes alone lose some neighbours
    monkeypatch.setattr(ann_eval, "WARN_BELOW", 1.01)
    warned = run_eval("ann", "--home", str(cli.home), "--queries", "50")
    assert "Warning: recall@1 with the exact re-rank" in warned.stderr
