"""FAISS on the GPU (search/gpu.py). No GPU is lent to most runs: the k-means hand-over is proven on the
CPU with a CPU index standing in for the GPU one (same ``clustering_index`` pointer, same ``train()``);
the ``gpu`` test runs the real thing where faiss-gpu sees a GPU.
"""

from __future__ import annotations

import gc

import faiss
import numpy as np
import pytest

from search import ann
from search.gpu import faiss_gpus, gpu_clustering
from search.records import IndexParams

D, NLIST = 16, 8


def _ivfpq() -> faiss.Index:
    return ann.new_index(IndexParams(kind="ivfpq", dim=D, nlist=NLIST, m=4, nbits=4, nprobe=2, rerank=10, trained_on=0))


def _points(n: int = 2000) -> np.ndarray:
    return np.random.default_rng(1338).standard_normal((n, D)).astype(np.float32)


def test_clustering_index_is_held_for_the_whole_training() -> None:
    index = _ivfpq()
    ivf = faiss.extract_index_ivf(index)
    with gpu_clustering(index, gpus=lambda: 1, to_gpu=lambda cpu: cpu) as held:
        gc.collect()  # the hand-over must not depend on a temporary surviving
        assert held is not None and held.ntotal == 0
        index.train(_points())
        assert held.ntotal == NLIST  # k-means ran on the held index: its centroids are in it
    assert ivf.clustering_index is None  # no pointer left to an index nobody holds
    assert index.is_trained and ivf.quantizer.ntotal == NLIST


def test_without_a_gpu_training_stays_on_the_cpu() -> None:
    index = _ivfpq()
    with gpu_clustering(index, gpus=lambda: 0, to_gpu=lambda cpu: pytest.fail("no GPU: nothing to move")) as held:
        assert held is None
        index.train(_points())
    assert faiss.extract_index_ivf(index).clustering_index is None and index.is_trained


def test_info_reports_the_gpus_faiss_sees(cli, collection) -> None:
    cli("index", str(collection), "--json")
    facts = cli("info", "--json")
    assert facts["faiss_gpus"] == faiss_gpus() == (faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0)


@pytest.mark.gpu
@pytest.mark.skipif(faiss_gpus() == 0, reason="needs faiss-gpu and a GPU (README, GPU)")
def test_ivfpq_trains_on_the_gpu() -> None:
    params = ann.choose_index_params(20_000, 64, flat_below=1_000)
    vectors = np.random.default_rng(7).standard_normal((20_000, 64)).astype(np.float16)
    index = ann.build_index(params, vectors, np.arange(20_000))
    assert index.is_trained and index.ntotal == 20_000
    assert faiss.extract_index_ivf(index).clustering_index is None
