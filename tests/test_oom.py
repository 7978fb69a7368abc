"""Out of GPU memory while embedding: the batch is halved and the run goes on.

There is no CUDA here, so the halving is tested with an encoder function that raises torch's real
``OutOfMemoryError`` above a batch size (the one stand-in in these tests); the ``gpu`` test does it for
real when a CUDA device is present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image

from indexer.embed import OUT_OF_MEMORY, embed_halving
from indexer.run import index_paths
from indexer.writer import LibraryWriter
from search.encoder import Encoder
from search.images import decode_image
from search.library import Library


class FakeGpu:
    """Encodes (n, 3) 'pixels' to unit vectors; raises OutOfMemoryError for batches over ``fits`` images
    and for any batch holding a 'poisoned' image (one that does not fit even alone)."""

    def __init__(self, fits: int, poisoned: frozenset[float] = frozenset()) -> None:
        self.fits, self.poisoned = fits, poisoned
        self.calls: list[int] = []

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.calls.append(len(pixels))
        if len(pixels) > self.fits or any(float(p[0]) in self.poisoned for p in pixels):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return pixels / np.linalg.norm(pixels, axis=1, keepdims=True)


def pixels(n: int) -> np.ndarray:
    return np.stack([np.arange(n, dtype=np.float32) + 1, np.ones(n, np.float32), np.full(n, 2, np.float32)], axis=1)


def test_halves_until_it_fits_and_keeps_order() -> None:
    gpu, emptied = FakeGpu(fits=3), []
    out = embed_halving(gpu, pixels(10), on_oom=lambda: emptied.append(1))
    assert out.done == list(range(10)) and out.failed == []
    np.testing.assert_allclose(out.vectors, FakeGpu(99)(pixels(10)))
    assert gpu.calls[:3] == [10, 5, 2]  # 10 and 5 do not fit, 2 does, and 2 it stays
    assert set(gpu.calls[3:]) == {2} and out.limit == 2 and len(emptied) == 2


def test_the_limit_carries_over_to_the_next_batch() -> None:
    gpu = FakeGpu(fits=4)
    first = embed_halving(gpu, pixels(8), on_oom=lambda: None)
    gpu.calls.clear()
    second = embed_halving(gpu, pixels(8), limit=first.limit, on_oom=lambda: None)
    assert first.limit == 4 and gpu.calls == [4, 4] and second.limit == 4  # no failed attempt this time


def test_no_oom_no_change() -> None:
    gpu = FakeGpu(fits=100)
    out = embed_halving(gpu, pixels(7), on_oom=lambda: pytest.fail("no OOM happened"))
    assert gpu.calls == [7] and out.limit is None and out.done == list(range(7))


def test_an_image_that_never_fits_is_given_up_alone() -> None:
    gpu = FakeGpu(fits=4, poisoned=frozenset({6.0}))  # the image at position 5 has pixels[0] == 6
    out = embed_halving(gpu, pixels(9), on_oom=lambda: None)
    assert out.failed == [5] and out.done == [0, 1, 2, 3, 4, 6, 7, 8] and len(out.vectors) == 8
    np.testing.assert_allclose(out.vectors, FakeGpu(99)(pixels(9)[out.done]))
    assert out.limit == 1


def test_pipeline_goes_on_and_retries_next_run(tmp_path: Path, tiny_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real pipeline: OOM above 3 images halves the batch; one image that never fits is
    reported 'out of memory', not stored, and indexed by the next run once memory is there."""
    root = tmp_path / "photos"
    for i in range(12):
        write_image(root / f"img{i:02d}.png", seed=i, size=(40, 30))
    encoder = Encoder.load(str(tiny_clip), "cpu")
    real = encoder.encode_pixels
    poisoned = root / "img07.png"
    poison = encoder.preprocess(decode_image(poisoned, min_side=encoder.preprocess.min_side)[0])
    sizes: list[int] = []

    def small_gpu(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        if len(batch) > 3 or any(np.array_equal(b, poison) for b in batch):
            raise torch.OutOfMemoryError("CUDA out of memory.")
        return real(batch)

    monkeypatch.setattr(encoder, "encode_pixels", small_gpu)
    home = tmp_path / "library"
    with LibraryWriter.open(home) as writer:
        report = index_paths([root], writer, lambda: encoder, model_id=encoder.model_id, batch_size=8, workers=1)
    assert report.indexed == 11
    assert report.skipped == [{"path": str(poisoned), "reason": OUT_OF_MEMORY}]
    assert sizes[:3] == [8, 4, 2] and max(sizes[2:]) <= 2 and 1 in sizes  # halved, and halved again at the poisoned image
    lib = Library.open(home)
    assert len(lib) == 11 and lib.record(poisoned) is None  # not stored: retried next time
    lib.close()

    monkeypatch.setattr(encoder, "encode_pixels", real)  # memory is back
    with LibraryWriter.open(home) as writer:
        again = index_paths([root], writer, lambda: encoder, model_id=encoder.model_id, batch_size=8, workers=1)
    assert again.indexed == 1 and again.unchanged == 11 and again.skipped == []
    lib = Library.open(home)
    hit = lib.search_vector(lib.vector_for_path(poisoned), k=1)[0]
    assert hit.path == str(poisoned) and hit.score == pytest.approx(1.0, abs=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_cuda_oom_halves(tiny_clip: Path) -> None:
    """On a real GPU with its memory capped: a batch too big for the cap is halved until it fits, and the
    vectors equal those of small batches."""
    encoder = Encoder.load(str(tiny_clip), "cuda")
    batch = np.random.default_rng(0).normal(size=(2048, 3, 64, 64)).astype(np.float32)
    expected = np.concatenate([encoder.encode_pixels(batch[i : i + 64]) for i in range(0, len(batch), 64)])
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    cap_bytes = torch.cuda.memory_allocated() + 48 * 2**20  # room for a few hundred images, not 2048
    torch.cuda.set_per_process_memory_fraction(cap_bytes / total)
    try:
        out = embed_halving(encoder.encode_pixels, batch)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert out.failed == [] and out.done == list(range(len(batch)))
    assert out.limit is not None and out.limit < len(batch)
    np.testing.assert_allclose(out.vectors, expected, atol=2e-2)
