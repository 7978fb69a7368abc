"""Queries: a text or an image -> ranked hits from a library. The CLI and the UI both use this."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from search.encoder import Encoder
from search.errors import ImageDecodeError, QueryError
from search.images import decode_image
from search.library import Library
from search.records import Hit, Vectors

ImageQuery = str | os.PathLike[str] | bytes | BinaryIO | Image.Image


class Searcher:
    """``Searcher(library, encoder)``; ``encoder`` may be a zero-argument factory, called the first time
    the model is needed (looking up an image that is already in the library needs no model)."""

    def __init__(self, library: Library, encoder: Encoder | Callable[[], Encoder]) -> None:
        self.library = library
        self._encoder = encoder if isinstance(encoder, Encoder) else None
        self._factory = None if isinstance(encoder, Encoder) else encoder

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            assert self._factory is not None
            self._encoder = self._factory()
        return self._encoder

    def search(self, text: str, k: int = 20, allowed: np.ndarray | None = None) -> list[Hit]:
        """Images matching a text, best first."""
        if not text or not text.strip():
            raise QueryError("The text query is empty.")
        self.library.ensure_searchable()
        return self.library.search_vector(self.encoder.encode_text([text])[0], k, allowed)

    def similar(self, image: ImageQuery, k: int = 20, allowed: np.ndarray | None = None) -> list[Hit]:
        """Images like the given one: a path (an indexed file uses its stored vector), bytes, a file object
        or a PIL image. The image itself, when indexed, comes first with a score of about 1."""
        self.library.ensure_searchable()
        return self.library.search_vector(self.image_vector(image), k, allowed)

    def image_vector(self, image: ImageQuery) -> Vectors:
        if isinstance(image, (str, os.PathLike)):
            path = Path(os.path.abspath(os.path.expanduser(image)))
            stored = self.library.vector_for_path(path)
            if stored is not None:
                return stored
            if not path.is_file():
                raise QueryError(f"{path} is not a file.")
            image = path
        try:
            decoded, _ = decode_image(image, min_side=self.encoder.preprocess.min_side)
        except ImageDecodeError as err:
            raise QueryError(f"The query image cannot be used: {err.reason}.") from err
        return self.encoder.encode_images([decoded])[0]
