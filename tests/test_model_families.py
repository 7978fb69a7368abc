"""SigLIP 2 (NaFlex), AltCLIP and Chinese-CLIP index and search through the same path as CLIP.

Tiny random checkpoints with each architecture's own tokenizer class (tests/tiny_families.py): the
rankings mean nothing, so these tests check the plumbing: the encoder's inputs equal the checkpoint's
own processor's, non-English queries tokenize without unknown tokens, over-long queries are cut at the
token limit, and the real CLI indexes data/, searches in other languages and finds similar images.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, Cli
from tiny_families import BUILDERS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# family -> (model class, vector size of the tiny checkpoint, token limit of the tiny checkpoint)
EXPECTED = {
    "siglip2": ("Siglip2Model", 32, 64),
    "altclip": ("AltCLIPModel", 24, 62),  # 64 positions less RoBERTa's offset of pad_token_id + 1
    "chinese_clip": ("ChineseCLIPModel", 40, 64),
}
QUERIES = ["une photo d'un chat", "ein Foto einer Rakete", "一张猫的照片", "宇宙の写真"]


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    name = request.param
    return name, BUILDERS[name](tmp_path_factory.mktemp(name))


@pytest.fixture(scope="module")
def encoder(family: tuple[str, Path]):
    from search.encoder import Encoder

    return Encoder.load(str(family[1]), "cpu")


def _images() -> list[Image.Image]:
    """Wide, tall, square, tiny and greyscale images, so every resize rule is exercised."""
    rng = np.random.default_rng(7)
    sizes = [(130, 90), (60, 200), (64, 64), (17, 9), (300, 41)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def test_loads_as_its_own_architecture(family, encoder) -> None:
    name, _ = family
    model_class, dim, limit = EXPECTED[name]
    assert type(encoder.model).__name__ == model_class
    assert encoder.dim == dim
    assert encoder.max_text_tokens == limit


def test_image_vectors_equal_the_checkpoints_processor(family, encoder) -> None:
    """The encoder prepares pixels (or SigLIP 2's patches) itself; the vectors must be the ones the
    checkpoint's own processor and model give."""
    _, model_dir = family
    processor = transformers.AutoProcessor.from_pretrained(model_dir)
    images = _images()
    for image in images:
        inputs = processor(images=[image], return_tensors="pt")
        with torch.no_grad():
            ref = encoder.model.get_image_features(**inputs).pooler_output
        ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
        np.testing.assert_allclose(encoder.encode_images([image]), ref, atol=2e-5)
    batch = encoder.encode_images(images)  # mixed sizes in one batch (SigLIP 2: different patch grids)
    assert batch.shape == (len(images), encoder.dim)
    np.testing.assert_allclose(batch[1], encoder.encode_images([images[1]])[0], atol=2e-5)


def test_non_english_queries_tokenize_and_embed(encoder) -> None:
    unk = encoder.tokenizer.unk_token_id
    for query in QUERIES:
        ids = encoder.tokenizer(query)["input_ids"]
        assert unk not in ids, (query, encoder.tokenizer.convert_ids_to_tokens(ids))
    vectors = encoder.encode_text(QUERIES)
    assert vectors.shape == (len(QUERIES), encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len({v.tobytes() for v in vectors}) == len(QUERIES)


def test_a_query_longer_than_the_token_limit_is_cut(encoder) -> None:
    """AltCLIP's XLM-R numbers positions from 2: cutting at the raw position count would overflow them."""
    long = " ".join(["chat"] * 500)
    vector = encoder.encode_text([long])
    assert vector.shape == (1, encoder.dim) and np.isfinite(vector).all()


def test_cli_index_search_similar(family, tmp_path: Path) -> None:
    name, model_dir = family
    photos = tmp_path / "photos"
    shutil.copytree(DATA / "photos", photos)
    cli = Cli(tmp_path / "library", model_dir)
    report = cli("index", str(photos), "--json")
    n = len(list(photos.iterdir()))
    assert report["indexed"] == report["images"] == n and not report["skipped"]
    info = cli("info", "--json")
    assert info["dim"] == EXPECTED[name][1]
    for query in QUERIES:
        hits = cli("search", query, "-k", "3", "--json")
        assert len(hits) == 3 and all(-1.0 <= h["score"] <= 1.0 for h in hits)
    target = photos / "horse.png"
    hits = cli("similar", str(target), "-k", str(n), "--json")
    assert hits[0]["path"] == str(target.resolve()) and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert sorted(h["path"] for h in hits) == sorted(str(p.resolve()) for p in photos.iterdir())
    # An image that is not in the library runs the vision tower: the same file copied elsewhere
    # must find the original first.
    copy = tmp_path / "elsewhere.png"
    shutil.copy(target, copy)
    hits = cli("similar", str(copy), "-k", "1", "--json")
    assert hits[0]["path"] == str(target.resolve()) and hits[0]["score"] == pytest.approx(1.0, abs=2e-3)
