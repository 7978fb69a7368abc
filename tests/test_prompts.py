"""The prompt-ensembling rule of ``search.prompts`` (pure; its benefit is measured in test_semantics.py)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from search import prompts


@pytest.mark.parametrize(
    ("text", "short"),
    [("sneaker", True), ("ankle boot", True), ("a red bag", True), ("  bag  ", True),
     ("a dog on a beach", False), ("", False), ("   ", False)],
)
def test_is_short(text: str, short: bool) -> None:
    assert prompts.is_short(text) is short


def test_expand_fills_every_template_and_fixes_the_article() -> None:
    assert prompts.expand("a bag") == [t.format("bag") for t in prompts.TEMPLATES]
    assert prompts.expand("The  Ankle boot")[0] == "a photo of an Ankle boot."
    assert prompts.expand("a dog running on a beach") == ["a dog running on a beach"]
    assert prompts.expand("sneaker", ()) == ["sneaker"]
    assert all(t.count("{}") == 1 for t in prompts.TEMPLATES)


class Recorder:
    """An encoder over a fixed vocabulary: each distinct prompt gets a seeded random unit vector."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        rows = [np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts]
        out = np.array(rows, dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_ensemble_is_one_call_mean_per_text_renormalised() -> None:
    encode = Recorder()
    texts = ["sneaker", "a photo of a cat sitting on a sofa", "ankle boot"]
    out = prompts.ensemble_text(encode, texts)
    assert len(encode.calls) == 1
    n = len(prompts.TEMPLATES)
    assert len(encode.calls[0]) == 2 * n + 1
    assert out.shape == (3, 8) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    whole = encode(encode.calls[0])
    mean = whole[:n].mean(axis=0)
    np.testing.assert_allclose(out[0], mean / np.linalg.norm(mean), rtol=1e-5)
    np.testing.assert_allclose(out[1], whole[n], rtol=1e-5)  # a sentence is encoded as written
    custom = prompts.ensemble_text(encode, ["bag"], templates=("{}",))
    np.testing.assert_allclose(custom[0], encode(["bag"])[0], rtol=1e-5)
