"""Checks for the offline tiny-model builders in tests/tiny_model.py."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")

try:  # works whether or not tests/ is a package
    from tests.tiny_model import (
        CLIP_BOS_ID,
        CLIP_EOS_ID,
        CLIP_VOCAB_SIZE,
        build_clip_tokenizer_files,
        build_tiny_clip,
        build_tiny_siglip,
    )
except ImportError:  # pragma: no cover - depends on pytest import mode
    from tiny_model import (  # type: ignore[no-redef]
        CLIP_BOS_ID,
        CLIP_EOS_ID,
        CLIP_VOCAB_SIZE,
        build_clip_tokenizer_files,
        build_tiny_clip,
        build_tiny_siglip,
    )

# Real openai/clip-vit-* ids for this caption.
A_PHOTO_OF_A_CAT = [49406, 320, 1125, 539, 320, 2368, 49407]
IMAGE_SIZE = 64
PROJECTION_DIM = 32


def _images(n: int = 2) -> list:
    """Deterministic RGB images of different sizes/aspect ratios (and one greyscale)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i, (w, h) in enumerate([(120, 80), (50, 90), (64, 64)][:n]):
        arr = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
        img = Image.fromarray(arr)
        out.append(img.convert("L") if i == 1 else img)
    return out


def _load(model_dir):
    model = transformers.AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    processor = transformers.AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    return model, processor


@pytest.fixture(scope="module")
def offline():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory, offline):
    model_dir = build_tiny_clip(
        tmp_path_factory.mktemp("tiny-clip"), image_size=IMAGE_SIZE, projection_dim=PROJECTION_DIM
    )
    return (model_dir, *_load(model_dir))


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory, offline):
    model_dir = build_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"), image_size=IMAGE_SIZE)
    return (model_dir, *_load(model_dir))


# --------------------------------------------------------------------------- #
# CLIP tokenizer files
# --------------------------------------------------------------------------- #
def test_clip_tokenizer_files(tmp_path):
    build_clip_tokenizer_files(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == CLIP_VOCAB_SIZE
    assert sorted(vocab.values()) == list(range(CLIP_VOCAB_SIZE))
    assert vocab["<|startoftext|>"] == CLIP_BOS_ID
    assert vocab["<|endoftext|>"] == CLIP_EOS_ID
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert vocab["cat</w>"] == 2368

    lines = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#version: 0.2"
    assert len(lines) - 1 == 49152 - 256 - 2
    assert lines[1] == "i n"
    assert all(len(line.split(" ")) == 2 for line in lines[1:])


# --------------------------------------------------------------------------- #
# Tiny CLIP
# --------------------------------------------------------------------------- #
def test_clip_round_trip_classes(tiny_clip):
    model_dir, model, processor = tiny_clip
    assert type(model).__name__ == "CLIPModel"
    assert type(processor).__name__ == "CLIPProcessor"
    assert type(processor.tokenizer).__name__ == "CLIPTokenizer"
    # PIL backend without torchvision; torchvision backend if it is installed.
    assert type(processor.image_processor).__name__ in {"CLIPImageProcessorPil", "CLIPImageProcessor"}
    assert model.config.projection_dim == PROJECTION_DIM
    assert model.config.text_config.vocab_size == CLIP_VOCAB_SIZE
    assert model.config.text_config.eos_token_id == processor.tokenizer.eos_token_id == CLIP_EOS_ID
    assert model.config.text_config.bos_token_id == processor.tokenizer.bos_token_id == CLIP_BOS_ID
    assert model.config.text_config.pad_token_id == processor.tokenizer.pad_token_id == CLIP_EOS_ID


def test_clip_token_ids_match_real_clip(tiny_clip):
    _, _, processor = tiny_clip
    assert processor.tokenizer("a photo of a cat")["input_ids"] == A_PHOTO_OF_A_CAT
    # CLIP lower-cases and normalises whitespace.
    assert processor.tokenizer("A  Photo of a CAT")["input_ids"] == A_PHOTO_OF_A_CAT


def test_clip_image_features_shape(tiny_clip):
    _, model, processor = tiny_clip
    inputs = processor(images=_images(2), return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape) == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        out = model.get_image_features(pixel_values=inputs["pixel_values"])
    assert tuple(out.pooler_output.shape) == (2, PROJECTION_DIM)
    assert torch.isfinite(out.pooler_output).all()


def test_clip_text_features_shape(tiny_clip):
    _, model, processor = tiny_clip
    inputs = processor(text=["a photo of a cat", "a rocket launch at night"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.get_text_features(**inputs)
    assert tuple(out.pooler_output.shape) == (2, PROJECTION_DIM)
    assert torch.isfinite(out.pooler_output).all()


# --------------------------------------------------------------------------- #
# Tiny SigLIP
# --------------------------------------------------------------------------- #
def test_siglip_round_trip_classes(tiny_siglip):
    _, model, processor = tiny_siglip
    assert type(model).__name__ == "SiglipModel"
    assert type(processor).__name__ == "SiglipProcessor"
    assert type(processor.image_processor).__name__ in {"SiglipImageProcessorPil", "SiglipImageProcessor"}
    assert model.config.text_config.vocab_size == len(processor.tokenizer)


def test_siglip_tokenizer(tiny_siglip):
    _, _, processor = tiny_siglip
    tok = processor.tokenizer
    ids = tok("a photo of a cat")["input_ids"]
    assert ids[-1] == tok.eos_token_id
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "a photo of a cat"
    padded = tok(["a photo of a cat", "dog"], padding="max_length", return_tensors="pt")
    assert tuple(padded["input_ids"].shape) == (2, model_max := tok.model_max_length)
    assert model_max == 64


def test_siglip_features_shape(tiny_siglip):
    _, model, processor = tiny_siglip
    dim = model.config.text_config.hidden_size
    images = processor(images=_images(3), return_tensors="pt")
    assert tuple(images["pixel_values"].shape) == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    text = processor(text=["a photo of a cat", "grass"], padding="max_length", return_tensors="pt")
    with torch.no_grad():
        img_out = model.get_image_features(pixel_values=images["pixel_values"])
        txt_out = model.get_text_features(**text)
    assert tuple(img_out.pooler_output.shape) == (3, dim)
    assert tuple(txt_out.pooler_output.shape) == (2, dim)


def test_siglip_weights_are_deterministic(tmp_path, offline):
    a = build_tiny_siglip(tmp_path / "a", seed=3)
    b = build_tiny_siglip(tmp_path / "b", seed=3)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
