"""Text terms -> vectors: prompt ensembles for short texts, windows for texts past the token limit.

* A text is embedded as typed; with ``ensemble``, a short one (``search.prompts.is_short``: 1-3 words)
  as the average of its prompt templates (``search.prompts``).
* A text longer than the model reads (77 tokens for CLIP) is never silently cut: it is split at word
  boundaries into windows that each fit, their vectors are averaged, and a notice says so once.
* Vectors are cached per (text, ensemble) for the life of the ``TextEncoder`` (the server and the page keep one).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search.records import Vectors

CACHE_SIZE = 1024
SPECIAL_TOKENS = 2  # start and end of text, added to every window


def word_windows(words: Sequence[str], costs: Sequence[int], budget: int) -> list[str]:
    """Consecutive words packed greedily into windows of at most ``budget`` tokens. Pure. A word that
    alone exceeds the budget gets a window of its own (the tokenizer then truncates that one word)."""
    windows: list[list[str]] = []
    used = budget + 1
    for word, cost in zip(words, costs, strict=True):
        if used + cost > budget:
            windows.append([])
            used = 0
        windows[-1].append(word)
        used += cost
    return [" ".join(w) for w in windows if w]


@dataclass
class TextEncoder:
    """``encode``: texts -> unit vectors (one model call); ``count_tokens``: texts -> token counts without
    the special tokens; ``limit``: the model's token limit."""

    encode: Callable[[list[str]], Vectors]
    count_tokens: Callable[[list[str]], list[int]]
    limit: int
    _cache: OrderedDict[tuple[str, bool], Any] = field(default_factory=OrderedDict)

    def vectors(self, texts: Sequence[str], *, ensemble: bool = False) -> tuple[Vectors, list[str]]:
        """Unit vectors for ``texts`` and the notices for the user (long texts split)."""
        from search import prompts

        notices: list[str] = []
        out: list[Vectors | None] = [self._cache.get((t, ensemble)) for t in texts]
        todo = [i for i, v in enumerate(out) if v is None]
        counts = self.count_tokens([texts[i] for i in todo]) if todo else []
        long_texts = {i for i, n in zip(todo, counts, strict=True) if n + SPECIAL_TOKENS > self.limit}
        for i in sorted(long_texts):
            windows = self.windows(texts[i])
            vec = self.encode(windows).mean(axis=0)
            out[i] = vec / max(float(np.linalg.norm(vec)), 1e-12)
            notices.append(
                f"The text '{_clip(texts[i])}' is longer than the model's {self.limit}-token limit; "
                f"it was read in {len(windows)} parts and their meanings averaged."
            )
        rest = [i for i in todo if i not in long_texts]
        if rest:
            batch = [texts[i] for i in rest]
            vecs = prompts.ensemble_text(self.encode, batch) if ensemble else self.encode(batch)
            for i, vec in zip(rest, vecs, strict=True):
                out[i] = vec
        for i in todo:
            self._remember((texts[i], ensemble), out[i])
        return np.stack([np.asarray(v, dtype=np.float32) for v in out]), notices

    def clear(self) -> None:
        """Forget the cached vectors (benchmarks time the encoding itself)."""
        self._cache.clear()

    def windows(self, text: str) -> list[str]:
        words = text.split()
        return word_windows(words, self.count_tokens(words), self.limit - SPECIAL_TOKENS)

    def _remember(self, key: tuple[str, bool], value: Any) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)


def _clip(text: str, n: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
