"""Prompt ensembling: how a short text becomes one text vector when it is asked for.

Where it is used: ``viewfinder tag`` embeds every label this way; a search term only with
``--ensemble`` (``Query.ensemble``, the page's "Prompt ensemble" box), since it does not measurably help
the searches we can measure (below). The rule:

* A text is *short* when it has 1 to ``MAX_WORDS`` (3) words: a label or a search term ("sneaker",
  "ankle boot", "a red bag"), not a sentence. A leading article is dropped ("a bag" -> "bag") before it
  goes into the templates.
* A short text is embedded as the mean of its ``TEMPLATES`` filled in ("a photo of a sneaker.", ...),
  re-normalised to unit length; "a" becomes "an" before a vowel.
* Any other text is embedded as written: a sentence already says what it is.
* ``ensemble_text`` makes ONE encode call for every prompt of every text (a single batch through the
  text tower), then averages per text.

Why: CLIP was trained on captions, not bare words, and averaging several captions of a class cancels
the quirks of any one phrasing (Radford et al. 2021, sec. 3.1.4: +3.5 points zero-shot ImageNet with
80 templates over the best single one). ``TEMPLATES`` is a subset of CLIP's 80 ImageNet templates that
describes *photos* (no origami, tattoos or video games, which pull a library of photos the wrong way).

The evidence here (figures in docs/QUALITY.md, "The trained test model"), on the small CLIP of
``tests/semantic/train_clip.py``, the one model here with meaning: the ensemble is level with the
bare class name on its 400 held-out images and on the whole 10,000-image test set (McNemar p = 0.93).
Trained again with sentence captions in place of its bare-name ones (``--captions sentences``: like
CLIP's data, where a single word is a rare caption), the ensemble is *worse* than the bare name (p =
0.0002). It does not measurably help, so search reads a text as typed by default (``--raw``, the
default, says so explicitly) and the ensemble, with its 2x encoding cost (docs/BENCHMARKS.md,
"Filtered search"), is one flag away for checkpoints where the paper's gain holds.
``tests/test_semantics.py::test_the_ensemble_default_follows_the_evidence`` ties the default to the
measurement.

Pure numpy; the encoder is passed in. Vectors are cached per text by ``search.texts.TextEncoder``, not here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from search.records import Vectors

MAX_WORDS = 3

# From CLIP's 80 ImageNet templates (github.com/openai/CLIP, notebooks/Prompt_Engineering_for_ImageNet).
TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of one {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a good photo of a {}.",
    "a bad photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of the {}.",
    "a cropped photo of the {}.",
    "a low resolution photo of a {}.",
    "a black and white photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "itap of a {}.",
)

_ARTICLE = re.compile(r"^(a|an|the)\s+", re.IGNORECASE)
_A_VOWEL = re.compile(r"\ba (?=[aeiouAEIOU])")


def is_short(text: str) -> bool:
    """A term of 1 to ``MAX_WORDS`` words (a label or keyword search), as opposed to a sentence."""
    return 1 <= len(text.split()) <= MAX_WORDS


def term(text: str) -> str:
    """The words that go into a template: whitespace collapsed, a leading article dropped."""
    words = " ".join(text.split())
    stripped = _ARTICLE.sub("", words)
    return stripped or words


def expand(text: str, templates: Sequence[str] = TEMPLATES) -> list[str]:
    """The prompts a text is embedded as: every template filled in for a short text, else the text itself."""
    if not is_short(text) or not templates:
        return [text]
    word = term(text)
    return [_A_VOWEL.sub("an ", t.format(word)) for t in templates]


def ensemble_text(
    encode: Callable[[list[str]], Vectors],
    texts: Sequence[str],
    *,
    templates: Sequence[str] = TEMPLATES,
) -> Vectors:
    """One unit vector per text: the re-normalised mean of its prompts' vectors, all prompts in one call."""
    prompts: list[str] = []
    spans: list[tuple[int, int]] = []
    for text in texts:
        start = len(prompts)
        prompts.extend(expand(text, templates))
        spans.append((start, len(prompts)))
    vectors = np.asarray(encode(prompts), dtype=np.float32)
    out = np.stack([vectors[a:b].mean(axis=0) for a, b in spans]) if spans else vectors[:0]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
