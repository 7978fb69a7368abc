"""Zero-shot tags: which labels each image gets, from the stored image vectors and the label text vectors.

Pure functions over arrays (no catalog, no model): the write side (``indexer/tagging.py``) stores what
they return, the read side (``search/tagdb.py``) filters and counts it.

The rule (``TagRule``):

* Each label's text vector is the prompt ensemble of ``search.prompts`` (several templates, one batch,
  averaged per label, re-normalised). Image vectors are never recomputed: one matrix product of the
  stored vectors (in blocks of ``BLOCK`` rows) with the label matrix gives every cosine.
* Cosines are not comparable across labels or models, so they are turned into probabilities the way
  the model was trained to compare them: for CLIP, a softmax over the library's label set of
  ``logit_scale · cos`` (``logit_scale`` read from the checkpoint); for SigLIP (a model with a
  ``logit_bias``), an independent sigmoid of ``logit_scale · cos + logit_bias`` per label.
* An image keeps every label whose probability is at least ``threshold`` (``DEFAULT_THRESHOLD``), at
  most ``top`` of them (``None``: no cap; with a softmax at most ⌊1/threshold⌋ labels can pass anyway).
* A softmax over a single label is always 1, so CLIP-style models need at least two labels.

``DEFAULT_THRESHOLD`` was chosen on the trained test model (``tests/test_tags.py``,
``test_default_threshold_on_the_trained_model``, figures in docs/QUALITY.md "Tags"): held-out
Fashion-MNIST images against their 10 class names, where 0.3 to 0.5 are level on F1 and 0.3, the low
end, keeps more right labels (a missing tag hides an image from a tag filter); below it the second
guesses of ambiguous images (shirt / T-shirt / pullover) creep in. Speed at 1M x 1,000 labels:
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from search.errors import QueryError
from search.records import Vectors

DEFAULT_THRESHOLD = 0.3
BLOCK = 32_768  # image rows per matrix product: 32k x 1,000 labels of float32 scores = 131 MB
MAX_LABEL_CHARS = 200
LABELS_PER_CALL = 64  # labels per text-tower call (x the templates): 1,000 labels in one batch would not fit


@dataclass(frozen=True, slots=True)
class TagRule:
    """How label probabilities are computed and which labels an image keeps."""

    scale: float  # the model's logit scale (exp of the stored log value)
    bias: float | None = None  # SigLIP's logit bias: sigmoid per label; None: softmax over the label set
    threshold: float = DEFAULT_THRESHOLD
    top: int | None = None

    @property
    def kind(self) -> str:
        return "softmax" if self.bias is None else "sigmoid"

    def to_json(self) -> dict[str, Any]:
        return {"scale": self.scale, "bias": self.bias, "threshold": self.threshold, "top": self.top, "kind": self.kind}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TagRule:
        return cls(scale=float(data["scale"]), bias=data.get("bias"), threshold=float(data["threshold"]), top=data.get("top"))


@dataclass(frozen=True, slots=True)
class Tagged:
    """The labels kept for a block of images: parallel arrays, one entry per (image, label)."""

    faiss_ids: NDArray[np.int64]
    labels: NDArray[np.int64]  # index into the label set
    scores: NDArray[np.float32]  # probabilities


# --- input ---------------------------------------------------------------------------------------------


def check_threshold(threshold: float) -> float:
    if not (0.0 <= threshold <= 1.0) or math.isnan(threshold):
        raise QueryError(f"The tag threshold is a probability between 0 and 1; {threshold} is outside that range.")
    return threshold


def clean_labels(labels: Sequence[str]) -> list[str]:
    """Labels stripped, blank ones and repeats dropped (first spelling kept), order kept. Raises ``QueryError``
    for an empty list or a label too long to be one."""
    seen: set[str] = set()
    out: list[str] = []
    for raw in labels:
        label = " ".join(raw.split())
        if not label or label.casefold() in seen:
            continue
        if len(label) > MAX_LABEL_CHARS:
            raise QueryError(f"A label is {len(label)} characters long; labels are short names (at most {MAX_LABEL_CHARS}).")
        seen.add(label.casefold())
        out.append(label)
    if not out:
        raise QueryError("No labels were given: pass labels as arguments or --labels FILE with one label per line.")
    return out


def parse_label_file(data: bytes, name: str) -> list[str]:
    """One label per line; '#' starts a comment line. Raises ``QueryError`` for a file that is not text."""
    if b"\x00" in data:
        raise QueryError(f"The label file {name} is not a text file (one label per line).")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise QueryError(f"The label file {name} is not a UTF-8 text file (one label per line).") from None
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    if not any(line.strip() for line in lines):
        raise QueryError(f"The label file {name} holds no labels (one label per line).")
    return clean_labels(lines)


def check_rule(rule: TagRule, n_labels: int) -> None:
    check_threshold(rule.threshold)
    if rule.top is not None and rule.top < 1:
        raise QueryError("--top must be at least 1.")
    if rule.bias is None and n_labels < 2:
        raise QueryError(
            "Give at least two labels: this model's labels are scored against each other (a softmax), "
            "so a single label would be given to every image."
        )


def model_rule(model: Any, *, threshold: float = DEFAULT_THRESHOLD, top: int | None = None) -> TagRule:
    """The rule for a transformers CLIP-family model: its ``logit_scale`` (and SigLIP's ``logit_bias``)."""
    scale = float(model.logit_scale.detach().float().exp().item()) if hasattr(model, "logit_scale") else 100.0
    bias = getattr(model, "logit_bias", None)
    return TagRule(scale=scale, bias=None if bias is None else float(bias.detach().float().item()), threshold=threshold, top=top)


# --- scoring --------------------------------------------------------------------------------------------


def probabilities(cosines: NDArray[np.float32], rule: TagRule) -> NDArray[np.float32]:
    """(n, labels) cosines -> (n, labels) probabilities under ``rule`` (in place on a float32 copy)."""
    logits = np.multiply(cosines, np.float32(rule.scale), dtype=np.float32)
    if rule.bias is not None:
        logits += np.float32(rule.bias)
        np.negative(logits, out=logits)
        np.exp(logits, out=logits)
        logits += 1.0
        np.reciprocal(logits, out=logits)
        return logits
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def keep(probs: NDArray[np.float32], rule: TagRule) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(rows, labels) of the kept entries: probability >= threshold, the best ``top`` per row at most."""
    if rule.top is not None and rule.top < probs.shape[1]:
        best = np.argpartition(-probs, rule.top - 1, axis=1)[:, : rule.top]
        picked = np.take_along_axis(probs, best, axis=1)
        rows, col = np.nonzero(picked >= rule.threshold)
        return rows.astype(np.int64), best[rows, col].astype(np.int64)
    rows, cols = np.nonzero(probs >= rule.threshold)
    return rows.astype(np.int64), cols.astype(np.int64)


def tag_block(images: np.ndarray, faiss_ids: np.ndarray, labels: Vectors, rule: TagRule) -> Tagged:
    """Tags of one block of stored image vectors (float16 rows are re-normalised, as the re-rank does)."""
    block = np.asarray(images, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", block, block))
    cosines = block @ labels.T
    cosines /= np.maximum(norms, 1e-12)[:, None]
    probs = probabilities(cosines, rule)
    rows, cols = keep(probs, rule)
    return Tagged(np.asarray(faiss_ids, dtype=np.int64)[rows], cols, probs[rows, cols].astype(np.float32))


def tag_vectors(vectors: np.ndarray, ids: np.ndarray, labels: Vectors, rule: TagRule, block: int = BLOCK) -> Iterator[Tagged]:
    """Tags of the rows ``ids`` (sorted: read in file order) of the stored vectors, one block at a time."""
    ids = np.sort(np.asarray(ids, dtype=np.int64))
    for start in range(0, len(ids), block):
        chunk = ids[start : start + block]
        rows = vectors[chunk[0] : chunk[-1] + 1]  # contiguous slice of the memory map, then pick
        yield tag_block(rows[chunk - chunk[0]], chunk, labels, rule)


def label_vectors(encode: Callable[[list[str]], Vectors], labels: Sequence[str]) -> Vectors:
    """One unit vector per label: the prompt ensemble of ``search.prompts`` (one call per ``LABELS_PER_CALL``
    labels, all their templates in it)."""
    from search.prompts import ensemble_text

    names = list(labels)
    parts = [ensemble_text(encode, names[i : i + LABELS_PER_CALL]) for i in range(0, len(names), LABELS_PER_CALL)]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def templates_version() -> list[str]:
    """The prompt templates the label vectors were made with (stored with them)."""
    from search.prompts import TEMPLATES

    return list(TEMPLATES)
