"""The read side of an on-disk IVF-PQ index (``IndexParams.ondisk``; the rule is in ``search.ann``).

An on-disk library's index is two parts, each in files of its own:

* the **base**: ``index-G-K.base`` (coarse centroids, PQ codebooks, the size and offset of every
  inverted list: megabytes) and ``index-G-K.ivfdata`` (the lists themselves: codes and ids, gigabytes),
  written once by a full build (``indexer.shards``) and never modified: readers have it memory-mapped
  read-only (faiss's ``OnDiskInvertedLists``), so opening reads the small file and the lists are paged in
  as queries touch them;
* the **delta**: the library's ``index_file`` as for an in-memory index (``index-G.faiss``), an in-memory
  IVF-PQ with the base's centroids and codebooks holding the vectors added since the base was built;
  rewritten per commit as any index file is.

Searches see both at once: ``stacked`` gives one ``IndexIVFPQ`` whose lists are the base's list followed
by the delta's (faiss's ``HStackInvertedLists``), so the IVF search, ``nprobe``, ID selectors and the
exact re-rank work on it unchanged. Rows removed since the base was built stay in it as tombstones; the
snapshot's live mask filters them (``search.library.Library.rank``) until the next full build drops them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss

from search.ann import UnreadableIndex, read_index

BASE_SUFFIX = ".base"
DATA_SUFFIX = ".ivfdata"
READ_FLAGS = faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY  # the header now, the lists mapped read-only after


@dataclass(frozen=True, slots=True)
class Base:
    """What the catalog records of an on-disk base (meta ``index_base``)."""

    name: str  # the header file; its lists are in ``data_name``
    rows: int  # vector rows of the library when it was built: ids below it were live then or removed since
    count: int  # vectors it holds

    @property
    def data_name(self) -> str:
        return data_name(self.name)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "rows": self.rows, "count": self.count}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Base | None:
        return None if not data else cls(name=data["name"], rows=int(data["rows"]), count=int(data["count"]))


def data_name(base_name: str) -> str:
    return base_name.removesuffix(BASE_SUFFIX) + DATA_SUFFIX


def base_of(meta: dict[str, Any]) -> Base | None:
    return Base.from_json(meta.get("index_base"))


def index_files(meta: dict[str, Any]) -> set[str]:
    """Every index file the catalog names (the index file, and the base's two when there is one)."""
    base = base_of(meta)
    named = {meta.get("index_file")} | ({base.name, base.data_name} if base else set())
    return {n for n in named if n}


def read_base(path: Path, dim: int | None = None) -> faiss.Index:
    """The base's header with its lists memory-mapped read-only; ``UnreadableIndex`` as ``ann.read_index``."""
    data = path.with_name(data_name(path.name))
    if not data.is_file():
        raise UnreadableIndex(f"its lists file {data.name} is missing")
    index = read_index(path, dim, flags=READ_FLAGS)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    if not isinstance(lists, faiss.OnDiskInvertedLists):
        raise UnreadableIndex("it is not an on-disk index")
    lists.filename = str(data)  # the header records a bare name: the lists are found next to it, wherever the library is
    try:
        lists.do_mmap()
    except RuntimeError as err:
        raise UnreadableIndex(str(err).strip().splitlines()[-1]) from err
    return index


def stacked(base: faiss.Index, delta: faiss.Index) -> faiss.Index:
    """One IVF-PQ searching ``base``'s lists and then ``delta``'s (same centroids and codebooks). Holds both:
    they live as long as the returned index."""
    base_ivf = faiss.downcast_index(faiss.extract_index_ivf(base))
    delta_ivf = faiss.extract_index_ivf(delta)
    lists = faiss.InvertedListsPtrVector()
    lists.push_back(base_ivf.invlists)
    lists.push_back(delta_ivf.invlists)
    both = faiss.HStackInvertedLists(lists.size(), lists.data())
    view = faiss.IndexIVFPQ(base_ivf.quantizer, base_ivf.d, base_ivf.nlist, base_ivf.pq.M, base_ivf.pq.nbits, base_ivf.metric_type)
    view.pq = base_ivf.pq
    view.by_residual = base_ivf.by_residual
    view.is_trained = True
    view.replace_invlists(both, True)
    both.this.disown()  # the view deletes the stack; the stack does not own the two parts
    view.ntotal = base.ntotal + delta.ntotal
    view.referenced_objects = [base, delta]  # faiss's own idiom: parts kept alive by the Python wrapper
    return view


def delta_of(view: faiss.Index) -> faiss.Index:
    """The delta part of a ``stacked`` index (what is written as the library's index file)."""
    return view.referenced_objects[1]


def empty_delta(base: faiss.Index) -> faiss.Index:
    """An empty in-memory IVF-PQ with ``base``'s centroids and codebooks: where later additions go."""
    ivf = faiss.downcast_index(faiss.extract_index_ivf(base))
    delta = faiss.IndexIVFPQ(faiss.IndexFlatIP(ivf.d), ivf.d, ivf.nlist, ivf.pq.M, ivf.pq.nbits, ivf.metric_type)
    delta.quantizer.add(ivf.quantizer.reconstruct_n(0, ivf.nlist))
    delta.pq = ivf.pq
    delta.by_residual = ivf.by_residual
    delta.is_trained = True
    return delta


def open_index(home: Path, meta: dict[str, Any], dim: int | None = None) -> faiss.Index:
    """The index the catalog names, whole: the stacked base + delta of an on-disk library, else its file."""
    delta = read_index(home / meta["index_file"], dim)
    base = base_of(meta)
    return delta if base is None else stacked(read_base(home / base.name, dim), delta)
