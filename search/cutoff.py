"""The relevance cutoff: which of a query's results are relevant at all.

``--cutoff SCORE`` keeps results with a cosine score >= SCORE. ``--cutoff auto`` adapts per query,
because raw CLIP cosines are not comparable across queries (one query's 0.25 is another's noise):

* A query with text in it: a result is kept when it matches the query better than it matches generic
  "null" prompts (``NULL_PROMPTS``: "a photo." ...) by at least ``NULL_MARGIN``. Every image scores
  well against "a photo", so this margin measures what the query's own words add, per image.
* An image-only query: a result is kept when its score is an outlier of the query's score distribution
  over the library: at least ``IMAGE_Z`` standard deviations above the mean, estimated on a seeded
  sample of ``SAMPLE`` stored vectors.

The constants were read off ``bench/cutoff.py`` on the trained test model's held-out images (400
Fashion-MNIST images, 10 classes; figures in docs/QUALITY.md, "Relevance cutoff"), not on random
weights. Both lean towards keeping: hiding a relevant image costs the user more than showing a few
extra ones below the good ones.

* ``NULL_MARGIN`` 0: text queries keep 93 % of their class and drop 69 % of the rest; -0.02 keeps 95 %
  but drops 64 %, +0.05 keeps only 86 %. The same whether the text is read as typed or through its
  prompt ensemble (within 0.005).
* ``IMAGE_Z`` 0.5: image queries keep 58 % of their class and drop 76 % of the rest, the best balance of
  the two in the sweep (0.25: 66 % / 67 %; 1.0: 43 % / 90 %). An image's class is a loose stand-in for
  what is relevant to it: a model that tells single images apart (as real CLIP does, and the test model
  since it learned to find duplicates) does not hold a whole class as outliers of one image's scores.
"""

from __future__ import annotations

import numpy as np

from search.records import Vectors

NULL_PROMPTS = ("a photo.", "an image.", "a picture of something.", "a photo of an object.")
NULL_MARGIN = 0.0
IMAGE_Z = 0.5
SAMPLE = 2048


def keep_over_null(scores: np.ndarray, rows: Vectors, nulls: Vectors, margin: float | None = None) -> np.ndarray:
    """True where a result's score beats its best null-prompt score by ``margin``. Pure."""
    if len(scores) == 0:
        return np.zeros(0, dtype=bool)
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    null_scores = (unit @ np.asarray(nulls, dtype=np.float32).T).max(axis=1)
    return np.asarray(scores) >= null_scores + (NULL_MARGIN if margin is None else margin)


def outlier_threshold(sample_scores: np.ndarray, z: float | None = None) -> float:
    """The score ``z`` standard deviations above the mean of a query's scores over a library sample. Pure."""
    if len(sample_scores) < 2:
        return -1.0
    return float(np.mean(sample_scores) + (IMAGE_Z if z is None else z) * np.std(sample_scores))


def sample_ids(live: np.ndarray, n: int = SAMPLE, seed: int = 20261128) -> np.ndarray:
    """A seeded sample of live ids (sorted, for memory-map friendly reads)."""
    if len(live) <= n:
        return np.asarray(live)
    return np.sort(np.random.default_rng(seed).choice(live, size=n, replace=False))
