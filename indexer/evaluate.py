"""Evaluation runs (``viewfinder eval retrieval`` and ``eval zeroshot``): the images go through the real
indexing path (decode, preprocess, embed, store) into a temporary library that is removed afterwards,
or into the user's ``--home`` library, which keeps them, so a second run reuses the stored vectors.

Every input is read and checked before a library is opened or a model loaded: bad input changes nothing.
The metrics and the file formats are in ``search.evaluate``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from indexer.run import NoProgress, Progress, index_paths
from indexer.writer import LibraryWriter
from search import ann
from search.encoder import Encoder
from search.errors import EvalInputError
from search.evaluate import (
    ACCURACY_KS,
    RETRIEVAL_KS,
    RetrievalReport,
    ZeroShotReport,
    class_ranks,
    find_images,
    image_to_text_ranks,
    parse_captions,
    parse_class_tree,
    recall_from_ranks,
    relative_to,
    text_to_image_ranks,
)
from search.library import Library
from search.records import Vectors

TEXT_BATCH = 256
MISSING_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class EvalRun:
    """How to embed: the model, where, and how to show progress (one ``Progress`` per named step)."""

    encoder_factory: Callable[[], Encoder]
    model_id: str
    home: Path | None = None  # None: a temporary library
    batch_size: int = 32
    workers: int | None = None
    progress: Callable[[str, str], Progress] = lambda label, unit: NoProgress()  # noqa: E731


@contextmanager
def eval_home(home: Path | None) -> Iterator[Path]:
    if home is not None:
        yield home
        return
    with tempfile.TemporaryDirectory(prefix="viewfinder-eval-") as tmp:
        yield Path(tmp)


class _Shorter:
    """Passes progress through, with the walk's stage text (which names every file given) shortened."""

    def __init__(self, inner: Progress, n: int) -> None:
        self.inner, self.n = inner, n

    def stage(self, text: str | None) -> None:
        self.inner.stage(f"looking at {self.n} images" if text and text.startswith("looking for images") else text)

    def start(self, total: int) -> None:
        self.inner.start(total)

    def advance(self, n: int) -> None:
        self.inner.advance(n)

    def finish(self) -> None:
        self.inner.finish()


def _needs_indexing(files: Sequence[str], states: dict[str, tuple[int, int]]) -> list[str]:
    """Files the library does not hold as they are on disk now (new or changed). Pure apart from stat."""
    todo = []
    for path in files:
        st = os.stat(path)
        if states.get(path) != (st.st_size, st.st_mtime_ns):
            todo.append(path)
    return todo


@dataclass(frozen=True, slots=True)
class Embedded:
    vectors: Vectors  # one row per file that could be embedded, in the order given
    ok: NDArray[np.bool_]  # over the files given
    unreadable: tuple[dict[str, str], ...]


def embed_files(files: Sequence[Path], home: Path, encoder: Encoder, run: EvalRun) -> Embedded:
    """Index the files into the library at ``home`` (only what it does not hold yet) and read back
    their stored vectors."""
    from search import catalog

    paths = [os.path.abspath(f) for f in files]
    with LibraryWriter.open(home) as writer:
        writer.check_model(run.model_id)
        with writer.session() as session:
            states = catalog.file_states(session)
        todo = _needs_indexing(paths, states)
        if todo:
            index_paths(
                [Path(p) for p in todo],
                writer,
                lambda: encoder,
                model_id=run.model_id,
                batch_size=run.batch_size,
                progress=_Shorter(run.progress("embedding images", "img"), len(todo)),
                workers=run.workers,
                flat_below=ann.FLAT_BELOW,
            )
    library = Library.open(home)
    try:
        rows: list[Vectors] = []
        ok = np.zeros(len(paths), dtype=bool)
        unreadable: list[dict[str, str]] = []
        for i, path in enumerate(paths):
            record = library.record(path)
            if record is None or record.faiss_id is None:
                unreadable.append({"path": path, "reason": (record.reason if record else None) or "not indexed"})
                continue
            rows.append(library.vector(record.faiss_id))
            ok[i] = True
    finally:
        library.close()
    dim = encoder.dim
    vectors = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), dtype=np.float32)
    return Embedded(vectors=vectors, ok=ok, unreadable=tuple(unreadable))


def encode_texts(encoder: Encoder, texts: Sequence[str], progress: Progress) -> Vectors:
    """The texts' vectors, ``TEXT_BATCH`` at a time."""
    out: list[Vectors] = []
    progress.start(len(texts))
    try:
        for start in range(0, len(texts), TEXT_BATCH):
            batch = list(texts[start : start + TEXT_BATCH])
            out.append(encoder.encode_text(batch))
            progress.advance(len(batch))
    finally:
        progress.finish()
    return np.concatenate(out) if out else np.zeros((0, encoder.dim), dtype=np.float32)


def evaluate_retrieval(captions_file: Path, images_dir: Path, split: str | None, run: EvalRun) -> RetrievalReport:
    """Text-to-image and image-to-text recall@1/5/10 of a captioned set (``search.evaluate``)."""
    started = time.perf_counter()
    captions = parse_captions(captions_file, split)
    if not images_dir.is_dir():
        raise EvalInputError(f"The images folder {images_dir} does not exist; pass --images with the folder of the captioned images.")
    found = find_images(captions, images_dir)
    present = np.array([f is not None for f in found], dtype=bool)
    missing = [c[0] for c, f in zip(captions.images, found, strict=True) if f is None]
    if not present.any():
        raise EvalInputError(
            f"None of the {len(found)} images named in {captions_file} is under {images_dir} (the first is "
            f"{captions.images[0][0]}); pass --images with the folder that holds them."
        )
    captions = captions.keep(present)
    encoder = run.encoder_factory()
    with eval_home(run.home) as home:
        embedded = embed_files([f for f in found if f is not None], home, encoder, run)
    if not embedded.ok.any():
        raise EvalInputError(f"None of the images named in {captions_file} could be read as an image.")
    captions = captions.keep(embedded.ok)
    texts = encode_texts(encoder, captions.captions, run.progress("embedding captions", "text"))
    images = embedded.vectors
    return RetrievalReport(
        captions_file=str(captions_file),
        format=captions.format,
        split=captions.split,
        model=run.model_id,
        images=len(images),
        captions=len(texts),
        missing=len(missing),
        missing_examples=tuple(missing[:MISSING_EXAMPLES]),
        unreadable=tuple({"path": relative_to(images_dir, Path(u["path"])), "reason": u["reason"]} for u in embedded.unreadable),
        text_to_image=recall_from_ranks(text_to_image_ranks(texts, images, captions.owner), RETRIEVAL_KS),
        image_to_text=recall_from_ranks(image_to_text_ranks(texts, images, captions.owner), RETRIEVAL_KS),
        seconds=time.perf_counter() - started,
    )


def evaluate_zeroshot(folder: Path, run: EvalRun) -> ZeroShotReport:
    """Top-1/top-5 accuracy of a folder-per-class tree, with each class's label text as it is and with
    its prompt ensemble (``search.prompts.ensemble_text``)."""
    from search.prompts import ensemble_text

    started = time.perf_counter()
    tree = parse_class_tree(folder)
    encoder = run.encoder_factory()
    with eval_home(run.home) as home:
        embedded = embed_files(tree.files, home, encoder, run)
    if not embedded.ok.any():
        raise EvalInputError(f"None of the images under {folder} could be read as an image.")
    labels = tree.labels[embedded.ok]
    ks = tuple(k for k in ACCURACY_KS if k <= len(tree.classes))
    classes = list(tree.classes)
    results = {}
    per_class: dict[str, dict[str, float]] = {name: {} for name in tree.folders}
    for name, class_vectors in (("plain", encoder.encode_text(classes)), ("ensembled", ensemble_text(encoder.encode_text, classes))):
        ranks = class_ranks(embedded.vectors, np.asarray(class_vectors, dtype=np.float32), labels)
        results[name] = recall_from_ranks(ranks, ks)
        for i, folder_name in enumerate(tree.folders):
            mine = ranks[labels == i]
            per_class[folder_name][name] = round(float(np.mean(mine == 0)), 4) if len(mine) else 0.0
    return ZeroShotReport(
        folder=str(folder),
        model=run.model_id,
        classes=tree.classes,
        images=len(labels),
        unreadable=tuple({"path": relative_to(folder, Path(u["path"])), "reason": u["reason"]} for u in embedded.unreadable),
        plain=results["plain"],
        ensembled=results["ensembled"],
        per_class=per_class,
        seconds=time.perf_counter() - started,
    )
