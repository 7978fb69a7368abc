"""The encoder through the users' loading path: preprocessing parity, unit vectors, CLIP and SigLIP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, Cli, n_images
from PIL import Image
from tiny_model import build_tiny_siglip

from search.encoder import Encoder
from search.errors import ModelLoadError, QueryError


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"))


@pytest.fixture(scope="module")
def encoder(tiny_clip: Path) -> Encoder:
    return Encoder.load(str(tiny_clip), "cpu")


@pytest.mark.parametrize("name", ["photos/chelsea.png", "space/rocket.jpg", "science/text.png", "photos/horse.png"])
def test_preprocess_matches_processor(encoder: Encoder, name: str) -> None:
    image = Image.open(DATA / name).convert("RGB")
    ours = encoder.preprocess(image)
    theirs = encoder.processor.image_processor(images=image, return_tensors="np")["pixel_values"][0]
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 0.05  # bicubic rounding differences only


def test_vectors_are_unit_and_deterministic(encoder: Encoder) -> None:
    images = [Image.open(DATA / "photos" / n).convert("RGB") for n in ("coffee.png", "camera.png")]
    a = encoder.encode_images(images)
    b = encoder.encode_images(images[::-1])[::-1]
    assert a.shape == (2, encoder.dim) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.allclose(a, b, atol=1e-5)  # batch order does not change a vector
    t = encoder.encode_text(["a cat", "a much longer query about a rocket launch at night"])
    assert t.shape == (2, encoder.dim) and np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    alone = encoder.encode_text(["a cat"])
    assert np.allclose(alone[0], t[0], atol=1e-4)  # padding to the longest query does not change it


def test_any_image_mode_is_read_as_its_rgb_picture(encoder: Encoder) -> None:
    """The Python API takes PIL images as they come: grey, palette and alpha images give the
    vector of the picture they show (a grey image's one channel read as three gave noise)."""
    rgb = Image.open(DATA / "photos" / "chelsea.png").convert("RGB")
    grey = rgb.convert("L")
    want = encoder.encode_images([grey.convert("RGB")])[0]
    for image in (grey, grey.convert("P"), grey.convert("LA")):
        assert float(encoder.encode_images([image])[0] @ want) > 0.999, image.mode
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    assert float(encoder.encode_images([palette])[0] @ encoder.encode_images([palette.convert("RGB")])[0]) > 0.999
    assert float(encoder.encode_images([rgb.convert("RGBA")])[0] @ encoder.encode_images([rgb])[0]) > 0.999


def test_text_pads_to_query_length(encoder: Encoder) -> None:
    tokens = encoder.tokenizer(["a cat"], padding=True, return_tensors="pt")
    assert tokens["input_ids"].shape[1] == 4  # <start> a cat <end>, not 77


def test_empty_text_refused(encoder: Encoder) -> None:
    with pytest.raises(QueryError):
        encoder.encode_text(["  "])


def test_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="does not hold a loadable"):
        Encoder.load(str(tmp_path), "cpu")


def test_siglip_end_to_end(tmp_path: Path, tiny_siglip: Path, collection: Path) -> None:
    enc = Encoder.load(str(tiny_siglip), "cpu")
    assert enc.pad_to_max and enc.preprocess.out_size == (64, 64)
    cli = Cli(tmp_path / "lib", tiny_siglip)
    assert cli("index", str(collection), "--json")["indexed"] == n_images(collection)
    hits = cli("similar", str(collection / "photos" / "chelsea.png"), "--json", "-k", "3")
    assert hits[0]["path"].endswith("chelsea.png") and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert len(cli("search", "a cat", "--json", "-k", "4")) == 4
