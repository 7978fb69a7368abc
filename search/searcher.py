"""Queries: a text or an image -> ranked hits from a library. The CLI and the UI both use this."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from search import querying
from search.encoder import Encoder
from search.errors import ImageDecodeError, QueryError
from search.images import decode_image, read_image_info
from search.library import Library
from search.query import Query, Results, Term
from search.records import Hit, Vectors
from search.texts import TextEncoder

ImageQuery = str | os.PathLike[str] | bytes | BinaryIO | Image.Image


class Searcher:
    """``Searcher(library, encoder)``; ``encoder`` may be a zero-argument factory, called the first time
    the model is needed (looking up an image that is already in the library needs no model)."""

    def __init__(self, library: Library, encoder: Encoder | Callable[[], Encoder]) -> None:
        self.library = library
        self._encoder = encoder if isinstance(encoder, Encoder) else None
        self._factory = None if isinstance(encoder, Encoder) else encoder
        self._texts: TextEncoder | None = None

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            assert self._factory is not None
            self._encoder = self._factory()
        return self._encoder

    @property
    def texts(self) -> TextEncoder:
        """Text terms -> vectors (prompt ensembles, long-text windows, a cache); loads the model on first use."""
        if self._texts is None:
            encoder = self.encoder
            tokenizer = encoder.tokenizer

            def count_tokens(texts: list[str]) -> list[int]:
                return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

            self._texts = TextEncoder(encode=encoder.encode_text, count_tokens=count_tokens, limit=encoder.max_text_tokens)
        return self._texts

    def run(self, query: Query) -> Results:
        """A whole query: terms, filter, cutoff, grouping, sort and page (``search.querying``)."""
        return querying.run(self, query)

    def search(self, text: str, k: int = 20, *, ensemble: bool = False) -> list[Hit]:
        """Images matching a text, best first: ``run`` with one text term (read as typed, or a short text
        through its prompt ensemble with ``ensemble``)."""
        if not text or not text.strip():
            raise QueryError("The text query is empty.")
        return self.run(Query(terms=(Term("text", text.strip()),), k=k, ensemble=ensemble)).hits

    def similar(self, image: ImageQuery, k: int = 20, allowed: np.ndarray | None = None) -> list[Hit]:
        """Images like the given one: a path (an indexed file uses its stored vector), bytes, a file object
        or a PIL image. The image itself, when indexed, comes first with a score of about 1, whatever the
        index returns and however many byte-identical copies it has (``querying.self_first``)."""
        self.library.ensure_searchable()
        own = self.indexed_id(image)
        query = self.image_vector(image)
        ids, scores = querying.self_first(self.library, *self.library.rank(query, k, allowed), own, query, k, allowed)
        return self.library.hits(ids, scores)

    def indexed_id(self, image: ImageQuery) -> int | None:
        """The FAISS id of an image given by the path of an indexed file; None for anything else."""
        if not isinstance(image, (str, os.PathLike)):
            return None
        rec = self.library.record(Path(os.path.abspath(os.path.expanduser(image))))
        return None if rec is None else rec.faiss_id

    def image_vector(self, image: ImageQuery) -> Vectors:
        if isinstance(image, (str, os.PathLike)):
            path = Path(os.path.abspath(os.path.expanduser(image)))
            stored = self.library.vector_for_path(path)
            if stored is not None:
                return stored
            if not path.is_file():
                raise QueryError(f"{path} is not a file.")
            image = path
        if isinstance(image, (os.PathLike, bytes)):  # not an image: say so before loading the model
            try:
                read_image_info(image)
            except ImageDecodeError as err:
                raise QueryError(f"The query image cannot be used: {err.reason}.") from err
        try:
            decoded, _ = decode_image(image, min_side=self.encoder.preprocess.min_side)
        except ImageDecodeError as err:
            raise QueryError(f"The query image cannot be used: {err.reason}.") from err
        return self.encoder.encode_images([decoded])[0]
