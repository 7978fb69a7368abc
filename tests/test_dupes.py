"""Near-duplicates (`viewfinder dupes`): pairs and clusters against brute force, the keeper rule, byte-identical
copies, CSV/JSON, --move-to/--undo (never deleting), bad input; real transformations of real images
(JPEG re-encodes, resize, 5 % crop, small rotation) against unrelated images, with the precision and recall
of pairs at the default threshold; the Duplicates view of the page (AppTest).
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
from PIL import Image

from search import ann
from search.dupes import DEFAULT_THRESHOLD, components, similar_pairs
from search.records import IndexParams

DATA = Path(__file__).resolve().parents[1] / "data"
VIEWFINDER = Path(sys.executable).with_name("viewfinder")
APP = Path(__file__).resolve().parents[1] / "ui" / "app.py"


# --- pure parts ------------------------------------------------------------------------------------------


def test_components_are_connected_groups_biggest_first() -> None:
    a = np.array([10, 11, 12, 30, 40, 41, 50])
    b = np.array([11, 12, 13, 31, 41, 42, 10])  # 10-11-12-13 and 50 chain; 30-31; 40-41-42
    groups = [g.tolist() for g in components(a, b)]
    assert groups == [[10, 11, 12, 13, 50], [40, 41, 42], [30, 31]]
    assert components(np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == []
    # a long chain needs many propagation rounds: still one group
    chain = np.arange(5000)
    assert [len(g) for g in components(chain[:-1], chain[1:])] == [5000]


def planted_vectors(n: int, dim: int, seed: int) -> tuple[np.ndarray, set[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    for i in range(0, n - 3, 50):  # groups of 3 near copies every 50 rows
        for j in (1, 2):
            x[i + j] = x[i] + 0.15 * rng.standard_normal(dim).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    gram = x @ x.T
    np.fill_diagonal(gram, -1)
    truth = {(int(i), int(j)) for i, j in zip(*np.nonzero(gram >= 0.95), strict=True) if i < j}
    return x.astype(np.float16), truth


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_pairs_match_brute_force(kind: str) -> None:
    vectors, truth = planted_vectors(6000, 64, seed=3)
    live = np.arange(len(vectors))
    params = IndexParams(kind="flat", dim=64) if kind == "flat" else IndexParams(kind="ivfpq", dim=64, nlist=64, m=8, nbits=6, nprobe=8)
    index = ann.build_index(params, vectors, live)
    allowed = np.ones(len(vectors), dtype=bool)
    pairs = similar_pairs(index, params, vectors, live, allowed, 0.95, block=1000)
    found = set(zip(pairs.a.tolist(), pairs.b.tolist(), strict=True))
    assert len(truth) >= 200
    assert found <= truth | {p for p in found if p in truth}  # every pair found is a true pair ...
    exact = vectors.astype(np.float32)
    for a, b, s in zip(pairs.a, pairs.b, pairs.score, strict=True):
        assert abs(s - exact[a] @ exact[b] / np.linalg.norm(exact[a]) / np.linalg.norm(exact[b])) < 1e-3
    if kind == "flat":
        assert found == truth  # ... and an exact index finds all of them
    else:
        assert len(found & truth) / len(truth) >= 0.98
    allowed[::50] = False  # rows the catalog no longer holds are never paired
    pairs = similar_pairs(index, params, vectors, live[allowed], allowed, 0.95)
    assert not (set(pairs.a.tolist()) | set(pairs.b.tolist())) & set(range(0, 6000, 50))


# --- real transformations of real images -------------------------------------------------------------------


def variants(image: Image.Image) -> dict[str, Image.Image]:
    """The edits a photo library collects: re-encodes, a smaller copy, a 5 % crop, a small rotation."""
    w, h = image.size
    dx, dy = max(1, round(w * 0.025)), max(1, round(h * 0.025))
    return {
        "q30.jpg": image,
        "q60.jpg": image,
        "q90.jpg": image,
        "half.png": image.resize((max(8, w // 2), max(8, h // 2)), Image.Resampling.LANCZOS),
        "crop.png": image.crop((dx, dy, w - dx, h - dy)),
        "rot3.png": image.rotate(3, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128) if image.mode == "RGB" else 128),
    }


def write_variants(source: Path, dest: Path) -> list[Path]:
    with Image.open(source) as im:
        image = im.convert("RGB") if im.mode not in ("RGB", "L") else im.copy()
    dest.mkdir(parents=True, exist_ok=True)
    out = [dest / f"original{source.suffix}"]
    shutil.copy2(source, out[0])
    for name, edited in variants(image).items():
        path = dest / name
        quality = {"q30.jpg": 30, "q60.jpg": 60, "q90.jpg": 90}.get(name)
        edited.save(path, quality=quality) if quality else edited.save(path)
        out.append(path)
    return out


def real_sets(root: Path, sources: list[Path], unrelated: list[Path]) -> tuple[Path, list[list[str]]]:
    """``root/pictures``: each source with its 6 edits in a folder of its own, and the unrelated images
    alone in ``unrelated/``. Returns the groups (a source and its edits), whose pairs are the true ones."""
    pictures = root / "pictures"
    groups = [[str(p) for p in write_variants(source, pictures / f"source{n:03d}")] for n, source in enumerate(sources)]
    (pictures / "unrelated").mkdir(parents=True, exist_ok=True)
    for n, extra in enumerate(unrelated):
        shutil.copy2(extra, pictures / "unrelated" / f"{n:03d}-{extra.parent.name}-{extra.name}")
    return pictures, groups


def photos() -> list[Path]:
    return sorted(p for p in DATA.rglob("*") if p.suffix.lower() in (".png", ".jpg"))


def heldout_split(heldout: Path) -> tuple[list[Path], list[Path]]:
    """Sources: the first 3 held-out images of each class; unrelated: the next 20 of each class, the
    hardest unrelated images there are for this model (same class, same framing, same background)."""
    classes = [sorted(c.glob("*.png")) for c in sorted(p for p in heldout.iterdir() if p.is_dir())]
    return [f for files in classes for f in files[:3]], [f for files in classes for f in files[3:23]]


def pair_scores(clusters: list[dict], groups: list[list[str]]) -> tuple[float, float, int, int]:
    """(precision, recall, found pairs, true pairs) of same-source pairs, from clusters (all pairs within)."""
    truth = {frozenset(p) for g in groups for p in itertools.combinations(g, 2)}
    found = {frozenset(p) for c in clusters for p in itertools.combinations([m["path"] for m in c["members"]], 2)}
    hits = len(found & truth)
    return hits / max(1, len(found)), hits / max(1, len(truth)), len(found), len(truth)


def evaluate(cli, tmp_path: Path, sources: list[Path], unrelated: list[Path]) -> dict:  # type: ignore[no-untyped-def]
    pictures, groups = real_sets(tmp_path, sources, unrelated)
    cli("index", str(pictures), "--json")
    out = cli("dupes", "--json")
    precision, recall, found, true = pair_scores(out["clusters"], [[os.path.realpath(p) for p in g] for g in groups])
    sweep = {}
    for threshold in (0.8, 0.85, 0.9, 0.92, 0.95, 0.97):
        p, r, _, _ = pair_scores(cli("dupes", "--threshold", str(threshold), "--json")["clusters"], groups)
        sweep[threshold] = (round(p, 3), round(r, 3))
    report = {"precision": round(precision, 3), "recall": round(recall, 3), "found_pairs": found, "true_pairs": true, "sweep": sweep}
    print(f"\ndupes at {DEFAULT_THRESHOLD}: {json.dumps(report)}")
    return report


def test_real_edits_on_the_trained_model(cli, semantic_model: Path, semantic_images: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """30 held-out Fashion-MNIST images x 7 versions against 200 unrelated ones of the same classes: the
    model's own domain (it has never seen a colour photo, so data/'s photos would measure only that)."""
    cli.model = semantic_model
    report = evaluate(cli, tmp_path, *heldout_split(semantic_images))
    assert report["true_pairs"] == 30 * 21
    assert report["precision"] >= 0.8 and report["recall"] >= 0.8  # figures: docs/QUALITY.md, "Duplicates"


def test_real_edits_on_the_tiny_random_model(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Random weights still see an edited photo as its original (recall); what they call a duplicate
    otherwise means nothing, so precision is not asked of them."""
    report = evaluate(cli, tmp_path, photos(), [])
    assert report["recall"] >= 0.5


# --- the command -----------------------------------------------------------------------------------------


@pytest.fixture()
def library(cli, tmp_path: Path):  # type: ignore[no-untyped-def]
    """data/ with: an exact byte copy of one photo, a half-size copy, a 5 % crop, and an older big copy."""
    pictures = tmp_path / "pictures"
    shutil.copytree(DATA, pictures / "data")
    extra = pictures / "extra"
    extra.mkdir()
    shutil.copy2(pictures / "data" / "photos" / "chelsea.png", extra / "chelsea-copy.png")
    with Image.open(pictures / "data" / "photos" / "coffee.png") as im:
        im.convert("RGB").resize((im.width // 2, im.height // 2)).save(extra / "coffee-small.jpg", quality=85)
        im.convert("RGB").resize((im.width * 2, im.height * 2)).save(extra / "coffee-big.png")
    os.utime(extra / "coffee-big.png", ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))  # 2001
    cli("index", str(pictures), "--json")
    return cli, pictures


def tree_digest(root: Path) -> dict[str, str]:
    return {p.name + ":" + hashlib.sha256(p.read_bytes()).hexdigest(): str(p) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".jsonl")}


def test_clusters_keeper_identical_csv_json(library, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli, pictures = library
    out = cli("dupes", "--threshold", "0.97", "--json", "--csv", str(tmp_path / "d.csv"))
    assert out["threshold"] == 0.97 and out["images"] == 17
    sizes = [c["size"] for c in out["clusters"]]
    assert sizes == sorted(sizes, reverse=True)
    by_path = {m["path"]: c for c in out["clusters"] for m in c["members"]}
    copy, original = str(pictures / "extra" / "chelsea-copy.png"), str(pictures / "data" / "photos" / "chelsea.png")
    same = {m["path"]: m["same_bytes_as"] for m in by_path[copy]["members"]}
    assert same.get(copy) == original or same.get(original) == copy  # byte-identical files are named as such
    for cluster in out["clusters"]:
        for m in cluster["members"]:
            assert m["identical_to_keeper"] == (m["same_bytes_as"] == cluster["keeper"])
    for cluster in out["clusters"]:  # the keeper has the most pixels
        pixels = [m["width"] * m["height"] for m in cluster["members"]]
        assert pixels[0] == max(pixels) and cluster["keeper"] == cluster["members"][0]["path"]
    for cluster in out["clusters"]:
        keeper = cluster["members"][0]
        assert keeper["score"] == 1.0 and not keeper["identical_to_keeper"]
        for member in cluster["members"]:
            assert {"path", "size", "width", "height", "date"} <= set(member)
    with open(tmp_path / "d.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(sizes)
    assert {r["role"] for r in rows} <= {"keeper", "duplicate", "identical"}
    assert sum(r["role"] == "keeper" for r in rows) == len(sizes)
    text = cli("dupes", "--threshold", "0.97").stdout
    assert "byte-identical" in text or "identical" in text
    assert f"{len(sizes)} clusters among 17 images" in text


def test_keeper_rule_most_pixels_then_oldest() -> None:
    from datetime import datetime

    from search.dupes import keeper_key
    from search.records import ImageRecord, Status

    def rec(path: str, w: int, h: int, taken: datetime | None, mtime_s: int) -> ImageRecord:
        return ImageRecord(path=path, size=1, mtime_ns=mtime_s * 10**9, status=Status.INDEXED, width=w, height=h, taken_at=taken)

    records = [
        rec("/b/new.jpg", 400, 300, datetime(2022, 1, 1), 10),
        rec("/a/old.jpg", 400, 300, datetime(2020, 1, 1), 20),
        rec("/c/small.jpg", 200, 150, datetime(2001, 1, 1), 5),
        rec("/d/nodate.jpg", 400, 300, None, 1_700_000_000),  # modified 2023
    ]
    assert [r.path for r in sorted(records, key=keeper_key)] == ["/a/old.jpg", "/b/new.jpg", "/d/nodate.jpg", "/c/small.jpg"]


def test_move_to_and_undo_never_delete(library, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli, pictures = library
    before = tree_digest(pictures)
    out = cli("dupes", "--threshold", "0.97", "--json", "--move-to", str(tmp_path / "aside"))
    moved = out["moved"]["moved"]
    others = [m["path"] for c in out["clusters"] for m in c["members"][1:]]
    keepers = [c["keeper"] for c in out["clusters"]]
    assert sorted(m["from"] for m in moved) == sorted(others) and others
    for item in moved:
        assert not Path(item["from"]).exists() and Path(item["to"]).is_file()
        assert item["to"] == str(tmp_path / "aside") + item["from"]  # the absolute path mirrored
    assert all(Path(k).is_file() for k in keepers)
    after_move = {**tree_digest(pictures), **tree_digest(tmp_path / "aside")}
    assert set(after_move) == set(before)  # every file's bytes still exist, somewhere
    log = Path(out["moved"]["log"])
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["op"] for line in lines] == ["move"] * len(moved)
    back = cli("dupes", "--undo", str(log), "--json")
    assert len(back["moved"]) == len(moved)
    assert tree_digest(pictures) == before
    again = cli("dupes", "--undo", str(log), "--json")  # a second undo changes nothing
    assert again["moved"] == [] and tree_digest(pictures) == before


def test_move_refuses_to_overwrite_and_skips_changed_files(library, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli, pictures = library
    plan = cli("dupes", "--threshold", "0.97", "--json")
    first, second = plan["clusters"][0]["members"][1]["path"], plan["clusters"][1]["members"][1]["path"]
    blocker = Path(str(tmp_path / "aside") + first)
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"already here")
    with open(second, "ab") as fh:
        fh.write(b"\0")  # changed since it was indexed
    out = cli("dupes", "--threshold", "0.97", "--json", "--move-to", str(tmp_path / "aside"))
    skipped = {s["path"]: s["reason"] for s in out["moved"]["skipped"]}
    assert "exists" in skipped[first] and "changed since it was indexed" in skipped[second]
    assert Path(first).is_file() and Path(second).is_file() and blocker.read_bytes() == b"already here"


def test_move_across_filesystems_is_copy_fsync_rename_unlink(tmp_path: Path) -> None:
    from indexer.moves import move_file

    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem here")
    source = tmp_path / "a.bin"
    source.write_bytes(os.urandom(100_000))
    data = source.read_bytes()
    target = shm / f"vf-test-{os.getpid()}" / "a.bin"
    try:
        move_file(source, target)
        assert not source.exists() and target.read_bytes() == data
        assert not list(target.parent.glob("*.tmp"))
        move_file(target, source)
        assert source.read_bytes() == data
    finally:
        shutil.rmtree(target.parent, ignore_errors=True)


@pytest.mark.parametrize(
    ("args", "says", "code"),
    [
        (["dupes", "--threshold", "1.5"], "between -1 and 1", 1),
        (["dupes", "--threshold", "-2"], "between -1 and 1", 1),
        (["dupes", "--undo", "NOTALOG"], "is not a Viewfinder move log", 1),
        (["dupes", "--undo", "MISSING"], "Cannot read the move log", 1),
        (["dupes", "--move-to", "HOME"], "inside the library folder", 1),
        (["dupes", "--move-to", "X", "--undo", "Y"], "either --move-to or --undo", 2),
    ],
)
def test_bad_input_is_one_sentence_and_moves_nothing(library, tmp_path: Path, args: list[str], says: str, code: int) -> None:  # type: ignore[no-untyped-def]
    cli, pictures = library
    before = tree_digest(pictures)
    (tmp_path / "notalog.txt").write_text("hello\n")
    swap = {"NOTALOG": str(tmp_path / "notalog.txt"), "MISSING": str(tmp_path / "nope.jsonl"), "HOME": str(cli.home / "x"),
            "X": str(tmp_path / "x"), "Y": str(tmp_path / "y")}  # fmt: skip
    result = cli(*[swap.get(a, a) for a in args], expect=code)
    message = result.stderr.strip()
    assert message.startswith("Error: ") and says in message and len(message.splitlines()) == 1
    assert tree_digest(pictures) == before and not (tmp_path / "x").exists()


def test_console_script(library) -> None:  # type: ignore[no-untyped-def]
    cli, _ = library
    out = subprocess.run([str(VIEWFINDER), "dupes", "--home", str(cli.home), "--threshold", "0.97", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["images"] == 17


# --- the page ----------------------------------------------------------------------------------------------


def test_duplicates_view_shows_clusters_side_by_side(library, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from streamlit.testing.v1 import AppTest

    cli, pictures = library
    expected = cli("dupes", "--json")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VIEWFINDER_DEVICE", "cpu")
    monkeypatch.setattr(sys, "argv", ["app.py", "--home", str(cli.home)])
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    at.sidebar.radio(key="view").set_value("Duplicates").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [h.value for h in at.main.header] == ["Duplicates"]
    captions = [c for image in at.main.image for c in image.captions]
    assert len(captions) == sum(c["size"] for c in expected["clusters"][:20])
    assert sum(c.startswith("keeper · ") for c in captions) == min(20, len(expected["clusters"]))
    assert f"{len(expected['clusters'])} clusters" in " ".join(c.value for c in at.main.caption)
    at.slider(key="dupes_threshold").set_value(1.0).run()
    assert not at.exception
