"""FAISS on the GPU: whether the installed ``faiss`` sees one, and k-means on it while an IVF index trains.

``faiss-cpu`` (a base dependency) and ``faiss-gpu`` (PyPI's CUDA 12 wheels, the same versions as
``faiss-cpu``) both install the module ``faiss``; with both installed, whichever pip unpacked last wins.
The one supported way to the GPU build is in the README ("GPU"): uninstall ``faiss-cpu``, then install
``faiss-gpu``. ``faiss_gpus()`` says whether that
worked (``viewfinder info --json`` shows it as ``faiss_gpus``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import faiss


def faiss_gpus() -> int:
    """GPUs the imported ``faiss`` module can use (0 with faiss-cpu)."""
    count = getattr(faiss, "get_num_gpus", None)
    return int(count()) if count is not None else 0


@contextmanager
def gpu_clustering(
    index: faiss.Index,
    *,
    gpus: Callable[[], int] = faiss_gpus,
    to_gpu: Callable[[faiss.Index], faiss.Index] | None = None,
) -> Iterator[faiss.Index | None]:
    """Within the block, the IVF index's k-means runs on all GPUs (when there are any).

    ``IndexIVF.clustering_index`` is a bare C++ pointer: assigning a Python object to it does not keep
    that object alive, and the GPU index it wraps would be freed as soon as the temporary goes, leaving
    ``train()`` to use freed memory. So the GPU index is held here (and yielded) for the length of the
    block, and the pointer is cleared before the reference goes. ``to_gpu`` defaults to
    ``faiss.index_cpu_to_all_gpus``; a test passes a CPU stand-in.
    """
    if gpus() == 0:
        yield None
        return
    ivf = faiss.extract_index_ivf(index)
    clustering = (to_gpu or faiss.index_cpu_to_all_gpus)(faiss.IndexFlatIP(ivf.d))
    ivf.clustering_index = clustering
    try:
        yield clustering
    finally:
        ivf.clustering_index = None
