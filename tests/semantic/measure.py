"""Quality figures of a model on the held-out Fashion-MNIST images (the ones in docs/QUALITY.md).

    .venv/bin/python tests/semantic/measure.py tests/data/fashion-clip tests/data/fashion-heldout
    .venv/bin/python tests/semantic/measure.py tests/data/fashion-clip test-split   # all 10,000 test images

The model goes through ``search.encoder.Encoder.load`` and the images through ``search.images`` and the
encoder's own preprocessing, as in a library. ``tests/test_semantics.py`` uses the same functions.

Definitions (10 class queries, 400 images, 40 per class):

* text -> image recall@k: each image's caption is its class name; a hit when the image is among the
  top k of that query (what ``viewfinder eval retrieval`` computes on a caption file). Chance k/400;
  the ceiling is k/40, since 40 images share each caption.
* precision@k: the share of a class query's top k that are of the class (chance 0.1); recall@k is
  precision@k x k/40.
* zero-shot accuracy: an image's most similar class text is its class (chance 0.1).
* mAP: average precision of each class query over all 400 images, averaged (chance about 0.1).
* neighbour purity: the share of an image's 10 nearest other images of its class (chance 39/399).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# Folder -> the words a user would type.
QUERIES = {
    "t-shirt": "t-shirt",
    "trouser": "trousers",
    "pullover": "pullover",
    "dress": "dress",
    "coat": "coat",
    "sandal": "sandal",
    "shirt": "shirt",
    "sneaker": "sneaker",
    "bag": "bag",
    "ankle-boot": "ankle boot",
}


def class_of(path: str | Path) -> str:
    return Path(path).parent.name


def held_out(root: Path) -> tuple[list[Path], np.ndarray]:
    """The held-out PNG files, sorted, and each one's class index in ``QUERIES``."""
    paths = sorted(Path(root).glob("*/*.png"))
    folders = list(QUERIES)
    return paths, np.array([folders.index(class_of(p)) for p in paths])


def embed(encoder, paths: Sequence[Path]) -> np.ndarray:  # noqa: ANN001 - search.encoder.Encoder
    from search.images import decode_image

    return encoder.encode_images([decode_image(p)[0] for p in paths])


def rankings(images: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """(classes, images): image indices of each text query, best first (stable: ties keep file order)."""
    return np.argsort(-(texts @ images.T), axis=1, kind="stable")


def precision_at(images: np.ndarray, labels: np.ndarray, texts: np.ndarray, k: int) -> float:
    top = rankings(images, texts)[:, :k]
    return float((labels[top] == np.arange(len(texts))[:, None]).mean())


def recall_at(images: np.ndarray, labels: np.ndarray, texts: np.ndarray, k: int) -> float:
    """Caption-level: the share of images that are in the top k of their own class's query."""
    top = rankings(images, texts)[:, :k]
    return float(np.mean([i in set(top[labels[i]]) for i in range(len(labels))]))


def zero_shot_accuracy(images: np.ndarray, labels: np.ndarray, texts: np.ndarray) -> float:
    return float(((images @ texts.T).argmax(1) == labels).mean())


def mean_average_precision(images: np.ndarray, labels: np.ndarray, texts: np.ndarray) -> float:
    aps = []
    for c, order in enumerate(rankings(images, texts)):
        relevant = labels[order] == c
        hits = np.cumsum(relevant)
        aps.append(float((hits[relevant] / (np.flatnonzero(relevant) + 1)).mean()))
    return float(np.mean(aps))


def neighbour_purity(images: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    sims = images @ images.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return float((labels[nearest] == labels[:, None]).mean())


def text_figures(images: np.ndarray, labels: np.ndarray, texts: np.ndarray) -> dict[str, float]:
    out = {f"R@{k}": recall_at(images, labels, texts, k) for k in (1, 5, 10)}
    out["P@10"] = precision_at(images, labels, texts, 10)
    out["zero-shot top-1"] = zero_shot_accuracy(images, labels, texts)
    out["mAP"] = mean_average_precision(images, labels, texts)
    return out


def ways_to_embed_text(encode: Callable[[list[str]], np.ndarray]) -> dict[str, np.ndarray]:
    from search import prompts

    names = list(QUERIES.values())
    return {
        "class name as typed": encode(names),
        "'a photo of a {}.'": encode([prompts.expand(n, ("a photo of a {}.",))[0] for n in names]),
        "ensemble (search.prompts.TEMPLATES)": prompts.ensemble_text(encode, names),
        "ensemble, CLIP's best 7 (origami, video game...)": prompts.ensemble_text(encode, names, templates=CLIP_BEST_7),
    }


def mcnemar(images: np.ndarray, labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """Paired zero-shot comparison of two text embeddings of the classes: (images only ``a`` gets right,
    images only ``b`` gets right, two-sided exact McNemar p: a binomial test on the discordant pairs)."""
    from math import comb

    right_a = (images @ a.T).argmax(1) == labels
    right_b = (images @ b.T).argmax(1) == labels
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    n, low = only_a + only_b, min(only_a, only_b)
    p = min(1.0, 2 * sum(comb(n, i) for i in range(low + 1)) / 2**n) if n else 1.0
    return only_a, only_b, p


# The 7 templates the CLIP authors picked by forward selection on ImageNet (their prompt notebook).
CLIP_BEST_7 = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def main() -> None:
    from search.encoder import Encoder

    model, root = Path(sys.argv[1]), Path(sys.argv[2])
    encoder = Encoder.load(str(model), device="cpu")
    if str(root) == "test-split":  # the whole 10,000-image test set of Debian's dataset-fashion-mnist
        from PIL import Image
        from train_clip import load_split  # type: ignore[import-not-found]

        pixels, labels = load_split("test")  # Fashion-MNIST's label order is QUERIES' order
        images = np.concatenate([encoder.encode_images([Image.fromarray(p) for p in pixels[i : i + 500]]) for i in range(0, len(pixels), 500)])
        n, per = len(labels), len(labels) // len(QUERIES)
    else:
        paths, labels = held_out(root)
        images = embed(encoder, paths)
        n, per = len(paths), len(paths) // len(QUERIES)
    print(f"{n} images, {len(QUERIES)} classes; chance: R@1/5/10 {1 / n:.4f}/{5 / n:.4f}/{10 / n:.4f}, "
          f"ceiling R@1/5/10 {1 / per:.3f}/{5 / per:.3f}/{10 / per:.3f}, P@10 / zero-shot / mAP ~0.100")
    print("| text embedding | R@1 | R@5 | R@10 | P@10 | zero-shot top-1 | mAP |")
    print("|---|---|---|---|---|---|---|")
    for name, texts in ways_to_embed_text(encoder.encode_text).items():
        f = text_figures(images, labels, texts)
        print(f"| {name} | {f['R@1']:.4f} | {f['R@5']:.4f} | {f['R@10']:.4f} | {f['P@10']:.3f} | "
              f"{f['zero-shot top-1']:.3f} | {f['mAP']:.3f} |")
    ways = ways_to_embed_text(encoder.encode_text)
    raw, ensemble = ways["class name as typed"], ways["ensemble (search.prompts.TEMPLATES)"]
    only_raw, only_ensemble, p = mcnemar(images, labels, raw, ensemble)
    print(f"zero-shot, ensemble against the class name: right only with the name {only_raw}, only with the "
          f"ensemble {only_ensemble}; exact McNemar p = {p:.2g}")
    print(f"image -> image: neighbour purity@10 {neighbour_purity(images, labels):.3f} (chance {(per - 1) / (n - 1):.3f})")


if __name__ == "__main__":
    main()
