"""Measuring quality: recall@k and top-k accuracy (pure functions over vectors), and the captioned
sets and class trees they are measured on.

Definitions (those of the CLIP paper's tables and Karpathy & Fei-Fei's retrieval protocol):

* text-to-image R@k: the share of captions whose own image is among the k images closest to it;
* image-to-text R@k: the share of images with at least one of their own captions among the k captions
  closest to it;
* zero-shot top-k accuracy: the share of images whose class is among the k class texts closest to it.

A tie counts in the query's favour (only strictly better candidates push the right answer down).
Scores are computed in blocks of ``BLOCK`` queries, so 25,000 captions x 5,000 images stay small.

Captioned sets, in the formats people have (``parse_captions``; the format is told from the content):

* Karpathy split JSON (``dataset_coco.json``, ``dataset_flickr30k.json``): ``images[]`` with
  ``filename``, optional ``filepath`` (COCO's ``val2014``), ``split`` and ``sentences[].raw``;
  ``split`` selects one split (the published figures use ``test``: 1,000 Flickr30k images, 5,000 COCO);
* COCO captions JSON (``captions_val2017.json``): ``images[]{id, file_name}`` and
  ``annotations[]{image_id, caption}``;
* CSV: ``path,caption`` rows (a header row is optional), several rows per image allowed; a relative path
  is taken from the images folder.

Bad input (empty, not JSON or CSV, JSON of another shape, an unknown split) raises ``EvalInputError``
with one sentence. Images that are not on disk are counted by the caller (``find_images``), not fatal.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from search.errors import EvalInputError
from search.formats import is_image_candidate
from search.records import Vectors

BLOCK = 1024
RETRIEVAL_KS = (1, 5, 10)
ACCURACY_KS = (1, 5)


# --- metrics ------------------------------------------------------------------------------------------


def _blocks(n: int) -> Sequence[slice]:
    return [slice(start, min(n, start + BLOCK)) for start in range(0, n, BLOCK)]


def text_to_image_ranks(texts: Vectors, images: Vectors, owner: NDArray[np.int64]) -> NDArray[np.int64]:
    """For each caption, how many images score strictly higher than its own image (0 = first)."""
    ranks = np.empty(len(texts), dtype=np.int64)
    for part in _blocks(len(texts)):
        scores = texts[part] @ images.T
        own = scores[np.arange(scores.shape[0]), owner[part]]
        ranks[part] = np.count_nonzero(scores > own[:, None], axis=1)
    return ranks


def image_to_text_ranks(texts: Vectors, images: Vectors, owner: NDArray[np.int64]) -> NDArray[np.int64]:
    """For each image, how many captions score strictly higher than the best of its own captions."""
    ranks = np.empty(len(images), dtype=np.int64)
    mine = owner[None, :]
    for part in _blocks(len(images)):
        scores = images[part] @ texts.T
        is_own = mine == np.arange(part.start, part.stop)[:, None]
        best_own = np.where(is_own, scores, -np.inf).max(axis=1)
        ranks[part] = np.count_nonzero(scores > best_own[:, None], axis=1)
    return ranks


def recall_from_ranks(ranks: NDArray[np.int64], ks: Sequence[int]) -> dict[int, float]:
    """The share of queries whose right answer is within the first k, for each k."""
    if len(ranks) == 0:
        return {k: 0.0 for k in ks}
    return {k: float(np.mean(ranks < k)) for k in ks}


def class_ranks(images: Vectors, classes: Vectors, labels: NDArray[np.int64]) -> NDArray[np.int64]:
    """For each image, how many class texts score strictly higher than its own class."""
    scores = images @ classes.T
    own = scores[np.arange(len(images)), labels]
    return np.count_nonzero(scores > own[:, None], axis=1)


def relative_to(base: Path, path: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


# --- captioned sets -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaptionSet:
    """Images (each a tuple of relative paths to try, first found wins) and their captions."""

    format: str  # "karpathy" | "coco" | "csv"
    images: tuple[tuple[str, ...], ...]
    captions: tuple[str, ...]
    owner: NDArray[np.int64]  # caption i belongs to images[owner[i]]
    split: str | None = None

    def keep(self, mask: NDArray[np.bool_]) -> CaptionSet:
        """The images where ``mask`` is True, with their captions only (re-numbered)."""
        new_index = np.cumsum(mask) - 1
        kept_captions = mask[self.owner]
        return CaptionSet(
            format=self.format,
            images=tuple(img for img, keep in zip(self.images, mask, strict=True) if keep),
            captions=tuple(c for c, keep in zip(self.captions, kept_captions, strict=True) if keep),
            owner=new_index[self.owner[kept_captions]].astype(np.int64),
            split=self.split,
        )


def _build(fmt: str, per_image: list[tuple[tuple[str, ...], list[str]]], split: str | None, source: Path) -> CaptionSet:
    per_image = [(paths, [c.strip() for c in caps if c and c.strip()]) for paths, caps in per_image]
    per_image = [(paths, caps) for paths, caps in per_image if caps]
    if not per_image:
        raise EvalInputError(f"The captions file {source} holds no captions{f' in the split {split!r}' if split else ''}.")
    owner = np.concatenate([np.full(len(caps), i, dtype=np.int64) for i, (_, caps) in enumerate(per_image)])
    return CaptionSet(
        format=fmt,
        images=tuple(paths for paths, _ in per_image),
        captions=tuple(c for _, caps in per_image for c in caps),
        owner=owner,
        split=split,
    )


def _karpathy(data: dict[str, Any], split: str | None, source: Path) -> CaptionSet:
    entries = [e for e in data["images"] if isinstance(e, dict)]
    if split is not None:
        splits = sorted({str(e.get("split")) for e in entries})
        entries = [e for e in entries if e.get("split") == split]
        if not entries:
            raise EvalInputError(f"No image in {source} is in the split {split!r}; its splits are: {', '.join(splits)}.")
    per_image = []
    for e in entries:
        name = str(e.get("filename", ""))
        paths = (f"{e['filepath']}/{name}", name) if e.get("filepath") else (name,)
        per_image.append((paths, [str(s.get("raw", "")) for s in e.get("sentences", []) if isinstance(s, dict)]))
    return _build("karpathy", per_image, split, source)


def _coco(data: dict[str, Any], source: Path) -> CaptionSet:
    names = {img["id"]: str(img["file_name"]) for img in data["images"] if isinstance(img, dict) and "id" in img}
    captions: dict[Any, list[str]] = {}
    for ann in data["annotations"]:
        if isinstance(ann, dict) and ann.get("image_id") in names:
            captions.setdefault(ann["image_id"], []).append(str(ann.get("caption", "")))
    return _build("coco", [((names[i],), caps) for i, caps in captions.items()], None, source)


def _csv(text: str, source: Path) -> CaptionSet:
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    except csv.Error as err:
        raise EvalInputError(f"The captions file {source} is not a readable CSV ({err}).") from err
    if rows and [c.strip().lower() for c in rows[0][:2]] in (["path", "caption"], ["image", "caption"], ["filename", "caption"]):
        rows = rows[1:]
    if not rows or any(len(row) < 2 or not row[0].strip() for row in rows):
        raise EvalInputError(
            f"The captions file {source} is neither JSON (a Karpathy split file or COCO captions) nor a CSV whose "
            "rows are path,caption."
        )
    per_path: dict[str, list[str]] = {}
    for row in rows:
        per_path.setdefault(row[0].strip(), []).append(",".join(row[1:]))
    return _build("csv", [((p,), caps) for p, caps in per_path.items()], None, source)


def parse_captions(path: Path, split: str | None = None) -> CaptionSet:
    """A captions file in any of the formats of the module docstring."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise EvalInputError(f"Cannot read the captions file {path}: {err.strerror or err}.") from err
    if not raw.strip():
        raise EvalInputError(f"The captions file {path} is empty.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise EvalInputError(f"The captions file {path} is not text: expected JSON or a CSV of path,caption.") from err
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise EvalInputError(f"The captions file {path} is not valid JSON ({err.msg} at line {err.lineno}).") from err
        if isinstance(data, dict) and isinstance(data.get("images"), list):
            if any(isinstance(e, dict) and "sentences" in e for e in data["images"]):
                return _karpathy(data, split, path)
            if isinstance(data.get("annotations"), list):
                _no_split(split, "COCO captions", path)
                return _coco(data, path)
        raise EvalInputError(
            f"The captions file {path} is JSON but neither a Karpathy split file (images[].sentences) nor COCO "
            "captions (images[] and annotations[])."
        )
    _no_split(split, "CSV", path)
    return _csv(text, path)


def _no_split(split: str | None, what: str, path: Path) -> None:
    if split is not None:
        raise EvalInputError(f"--split applies to Karpathy split files; {path} is {what}, which has no splits.")


def find_images(captions: CaptionSet, images_dir: Path) -> list[Path | None]:
    """Each image's file under ``images_dir`` (absolute paths are taken as they are), None when missing."""
    found: list[Path | None] = []
    for candidates in captions.images:
        hit = None
        for rel in candidates:
            path = Path(rel) if Path(rel).is_absolute() else images_dir / rel
            if path.is_file():
                hit = path
                break
        found.append(hit)
    return found


# --- class trees --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClassTree:
    """A folder per class: ``classes`` (the label texts), the image files and each one's class."""

    classes: tuple[str, ...]
    folders: tuple[str, ...]
    files: tuple[Path, ...]
    labels: NDArray[np.int64]


def label_text(folder_name: str) -> str:
    """A folder name as a label: ``t-shirt_top`` -> ``t-shirt top``, ``ankle_boot`` -> ``ankle boot``."""
    return " ".join(folder_name.replace("_", " ").split())


def parse_class_tree(root: Path) -> ClassTree:
    """Every image under each sub-folder of ``root`` (recursively), labelled with that folder's name."""
    if not root.is_dir():
        raise EvalInputError(f"{root} is not a folder; give a folder with one sub-folder of images per class.")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[Path] = []
    labels: list[int] = []
    for i, folder in enumerate(folders):
        found = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_candidate(p))
        files.extend(found)
        labels.extend([i] * len(found))
    used = sorted(set(labels))
    if len(used) < 2:
        raise EvalInputError(
            f"{root} has {len(used)} class folder(s) with images; zero-shot accuracy needs at least two "
            "(one sub-folder of images per class)."
        )
    remap = {old: new for new, old in enumerate(used)}
    return ClassTree(
        classes=tuple(label_text(folders[i].name) for i in used),
        folders=tuple(folders[i].name for i in used),
        files=tuple(files),
        labels=np.array([remap[i] for i in labels], dtype=np.int64),
    )


# --- reports ------------------------------------------------------------------------------------------


def _rounded(recalls: dict[int, float]) -> dict[str, float]:
    return {f"R@{k}": round(v, 4) for k, v in recalls.items()}


@dataclass(frozen=True, slots=True)
class RetrievalReport:
    captions_file: str
    format: str
    split: str | None
    model: str
    images: int  # evaluated
    captions: int  # evaluated
    missing: int  # images named in the file but not on disk
    missing_examples: tuple[str, ...]
    unreadable: tuple[dict[str, str], ...]  # on disk but not decodable: [{path, reason}]
    text_to_image: dict[int, float]
    image_to_text: dict[int, float]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "captions_file": self.captions_file,
            "format": self.format,
            "split": self.split,
            "model": self.model,
            "images": self.images,
            "captions": self.captions,
            "missing_images": self.missing,
            "missing_examples": list(self.missing_examples),
            "unreadable_images": list(self.unreadable),
            "text_to_image": _rounded(self.text_to_image),
            "image_to_text": _rounded(self.image_to_text),
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True, slots=True)
class ZeroShotReport:
    folder: str
    model: str
    classes: tuple[str, ...]
    images: int
    unreadable: tuple[dict[str, str], ...]
    plain: dict[int, float]  # each class's label text as it is
    ensembled: dict[int, float]  # each class's prompt ensemble (search.prompts)
    per_class: dict[str, dict[str, float]]  # class -> {"plain": top-1, "ensembled": top-1}
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "model": self.model,
            "classes": list(self.classes),
            "images": self.images,
            "unreadable_images": list(self.unreadable),
            "plain": {f"top{k}": round(v, 4) for k, v in self.plain.items()},
            "ensembled": {f"top{k}": round(v, 4) for k, v in self.ensembled.items()},
            "per_class_top1": self.per_class,
            "seconds": round(self.seconds, 2),
        }
