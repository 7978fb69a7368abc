"""Train the small CLIP that gives the semantic tests a model with real meaning.

Run (about five minutes on two idle CPU cores)::

    .venv/bin/python tests/semantic/train_clip.py tests/data/fashion-clip --heldout tests/data/fashion-heldout

It trains a ``transformers.CLIPModel`` (built from ``CLIPConfig``) contrastively on the 60,000 training
images of Fashion-MNIST (Debian package ``dataset-fashion-mnist``, MIT licence), with captions made
from the class names, their synonyms and varied templates, and tokenised by the *real* OpenAI CLIP BPE
tokenizer (``tests/data/bpe_simple_vocab_16e6.txt.gz``). The official 10,000-image test set is never
trained on: its first ``HELDOUT_PER_CLASS`` images of each class are written as PNG files with
``--heldout`` (the sample the tests use), and the script prints zero-shot accuracy on all of it.

Everything is seeded (``SEED``) and runs on ``THREADS`` CPU threads, so a rerun on the same machine
rebuilds the same weights. The model is saved with ``save_pretrained`` in float16 (8.5 MB with the tokenizer), with a
``CLIPProcessor`` whose image processor does what training did: 28x28 pixels (no resize, no crop for
Fashion-MNIST's own size), grey copied to RGB, OpenAI CLIP's mean and std. ``search.encoder.Encoder.load``
reads it back in float32, as it reads any checkpoint.

Each step pairs ``BATCH`` images with one random caption of its class each; the loss is CLIP's
symmetric cross-entropy with soft targets over every (image, caption) pair of the same class (10
classes, about 25 of each per batch: a hard one-to-one target would push apart images and captions
that mean the same thing).

Class captions alone collapse every image of a class onto one point (two different sneakers at cosine
0.99), which no real CLIP does: its 400M distinct captions make it tell individual photos apart, and
that is what near-duplicate finding needs. So, as SLIP does (Mu et al. 2022, self-supervision beside
language supervision), each step adds ``INSTANCE_WEIGHT`` x SimCLR's loss between two edited views of
every image (``edit``: a small rotation, scale and shift, sometimes a blurred smaller copy, a little
noise), at temperature ``INSTANCE_TEMPERATURE``: views of one image are pulled together,
different images (of any class) pushed apart, in the same projected space the library stores.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tiny_model import (  # noqa: E402
    CLIP_BOS_ID,
    CLIP_EOS_ID,
    CLIP_MAX_POSITIONS,
    CLIP_VOCAB_SIZE,
    _clip_tokenizer,
    _pil_image_processor,
    build_clip_tokenizer_files,
)

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SEED = 0
THREADS = 2
IMAGE_SIZE = 28
PATCH = 7
PROJECTION = 64
VISION = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4)
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
BATCH = 256  # images (and captions) per step
EPOCHS = 3  # three passes, 702 steps
LR = 2e-3
WEIGHT_DECAY = 0.05
HELDOUT_PER_CLASS = 40
INSTANCE_WEIGHT = 1.0
INSTANCE_TEMPERATURE = 0.1
# OpenAI CLIP's normalisation (what CLIPImageProcessor defaults to), so the checkpoint looks like a real one.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

# Fashion-MNIST label order. Folder name of the held-out sample, then the names a caption may use.
CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("t-shirt", ("t-shirt", "t-shirt", "tee shirt", "tee", "top", "t shirt")),
    ("trouser", ("trousers", "trouser", "pants", "pair of trousers", "jeans", "slacks")),
    ("pullover", ("pullover", "sweater", "jumper", "knitted sweater", "sweatshirt")),
    ("dress", ("dress", "dress", "gown", "summer dress", "frock")),
    ("coat", ("coat", "coat", "jacket", "overcoat", "winter coat")),
    ("sandal", ("sandal", "sandals", "flip-flop", "summer sandal", "open shoe")),
    ("shirt", ("shirt", "shirt", "button-down shirt", "blouse", "dress shirt")),
    ("sneaker", ("sneaker", "sneakers", "trainer", "running shoe", "sports shoe", "trainers")),
    ("bag", ("bag", "bag", "handbag", "purse", "tote bag", "shoulder bag")),
    ("ankle-boot", ("ankle boot", "ankle boots", "boot", "boots", "short boot")),
)

# Caption styles: plain words, photo captions, product listings. Deliberately not the list in
# search/prompts.py (the ensembling templates), so the evidence for ensembling is not built in.
# BARE: captions that are the name and nothing more (the committed model is trained with them).
BARE = ("{}", "{}", "a {}", "the {}", "{} .")
# ``--captions sentences`` trains on these instead, as CLIP's web captions are: "relatively rare ... for
# the text paired with the image to be just a single word" (Radford et al. 2021, sec. 3.1.4), the
# reason given there for prompt ensembling. docs/QUALITY.md reports what ensembling does on both models.
SENTENCES = ("a {} in a shop window", "someone is selling a {}", "i just bought this {}", "look at this {}", "a scan of a {}")
CAPTION_SETS = {"bare": BARE, "sentences": SENTENCES}
CAPTIONS = (
    "a photo of a {}",
    "a photo of the {}",
    "a picture of a {}",
    "an image of a {}",
    "a black and white photo of a {}",
    "a black and white picture of a {}",
    "a grayscale image of a {}",
    "a small picture of a {}",
    "a low resolution photo of a {}",
    "a product photo of a {}",
    "{} on a black background",
    "a {} for sale",
    "my new {}",
    "this is a {}",
    "a thumbnail of a {}",
    "fashion item: {}",
    "a pixelated {}",
    "clothing: {}",
    "a {} in a catalogue",
)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format: big-endian header, then uint8 data) -> a numpy array."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(FASHION_MNIST / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(FASHION_MNIST / f"{prefix}-labels-idx1-ubyte.gz")
    return images, labels.astype(np.int64)


def caption(template: str, name: str) -> str:
    """A template filled with a class name, with "a" turned into "an" before a vowel."""
    return re.sub(r"\ba (?=[aeiou])", "an ", template.format(name))


def caption_table(tokenizer, templates: tuple[str, ...]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every caption the training can draw, tokenised once: (texts, ids, lengths)."""
    texts = sorted({caption(t, n) for _, names in CLASSES for n in names for t in templates})
    enc = tokenizer(texts, padding=True, return_tensors="np")
    return texts, enc["input_ids"], enc["attention_mask"].sum(1)


def pixels(batch: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
    """uint8 (n, 28, 28) -> float (n, 3, 28, 28): rescale, grey to RGB, normalise (as the processor does)."""
    import torch

    x = batch.float().div(255.0).unsqueeze(1).expand(-1, 3, -1, -1)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(batch: "torch.Tensor", gen: "torch.Generator") -> "torch.Tensor":  # noqa: F821
    """Random shifts of up to 2 px (zero padding) and horizontal flips: cheap, label-preserving."""
    import torch

    n = batch.shape[0]
    padded = torch.nn.functional.pad(batch, (2, 2, 2, 2))
    dx = torch.randint(0, 5, (n,), generator=gen)
    dy = torch.randint(0, 5, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(IMAGE_SIZE).view(1, -1)).view(n, IMAGE_SIZE, 1)
    cols = (dx.view(n, 1) + torch.arange(IMAGE_SIZE).view(1, -1)).view(n, 1, IMAGE_SIZE)
    out = padded[torch.arange(n).view(n, 1, 1), rows, cols]
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def edit(batch: "torch.Tensor", gen: "torch.Generator") -> "torch.Tensor":  # noqa: F821
    """An edited view of each uint8 image, as a float (n, 28, 28) in [0, 255]: rotation up to 6 degrees,
    scale 0.9-1.1, shift up to 1.5 px (one affine resample), a half-size blurred copy for a third of
    them, and a little noise (what re-encoding leaves). No brightness or contrast change: invariance to
    those would also hide a broken normalisation, which tests/test_semantics.py must catch."""
    import torch

    n = batch.shape[0]
    x = batch.float().unsqueeze(1)
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(6)
    scale = 0.9 + 0.2 * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1.5 * 2 / IMAGE_SIZE)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    small = torch.rand(n, generator=gen) < 1 / 3
    if small.any():
        half = torch.nn.functional.interpolate(x[small], scale_factor=0.5, mode="area")
        x[small] = torch.nn.functional.interpolate(half, size=IMAGE_SIZE, mode="bilinear", align_corners=False)
    x = x + 4 * torch.randn(x.shape, generator=gen)
    return x.clamp(0, 255).squeeze(1)


def simclr_loss(a, b, temperature):  # noqa: ANN001, ANN201 - torch tensors
    """NT-Xent: each view's positive is the other view of its image, every other view is a negative."""
    import torch

    z = torch.cat([a, b])
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    n = a.shape[0]
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return torch.nn.functional.cross_entropy(logits, target)


def build_model():
    from transformers import CLIPConfig, CLIPModel

    text = dict(
        TEXT,
        vocab_size=CLIP_VOCAB_SIZE,
        max_position_embeddings=CLIP_MAX_POSITIONS,
        bos_token_id=CLIP_BOS_ID,
        eos_token_id=CLIP_EOS_ID,
        pad_token_id=CLIP_EOS_ID,
        projection_dim=PROJECTION,
    )
    vision = dict(VISION, image_size=IMAGE_SIZE, patch_size=PATCH, num_channels=3, projection_dim=PROJECTION)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=PROJECTION))


def soft_clip_loss(img, txt, img_labels, txt_labels, scale):  # noqa: ANN001, ANN201 - torch tensors
    """Symmetric cross-entropy; every same-class (image, caption) pair in the batch is a positive."""
    logits = scale * img @ txt.T
    same = (img_labels.view(-1, 1) == txt_labels.view(1, -1)).float()
    loss_i = -((same / same.sum(1, keepdim=True)) * logits.log_softmax(1)).sum(1).mean()
    loss_t = -((same.T / same.T.sum(1, keepdim=True)) * logits.T.log_softmax(1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def zero_shot_accuracy(model, tokenizer, images: np.ndarray, labels: np.ndarray) -> float:
    import torch

    prompts = [f"a photo of a {names[0]}" for _, names in CLASSES]
    with torch.inference_mode():
        tok = tokenizer(prompts, padding=True, return_tensors="pt")
        t = model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).pooler_output
        t = t / t.norm(dim=-1, keepdim=True)
        correct = 0
        for start in range(0, len(images), 1000):
            chunk = torch.tensor(images[start : start + 1000])
            v = model.get_image_features(pixel_values=pixels(chunk)).pooler_output
            v = v / v.norm(dim=-1, keepdim=True)
            pred = (v @ t.T).argmax(1).numpy()
            correct += int((pred == labels[start : start + 1000]).sum())
    return correct / len(images)


def write_heldout(dest: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """The first HELDOUT_PER_CLASS test images of each class as ``dest/<class>/<n>.png`` (8-bit grey)."""
    from PIL import Image

    for label, (folder, _) in enumerate(CLASSES):
        out = dest / folder
        out.mkdir(parents=True, exist_ok=True)
        for n, i in enumerate(np.flatnonzero(labels == label)[:HELDOUT_PER_CLASS]):
            Image.fromarray(images[i], mode="L").save(out / f"{n:02d}.png", optimize=True)


def save(model, tokenizer, dest: Path) -> None:
    import torch
    from transformers import CLIPProcessor

    image_processor = _pil_image_processor(
        "CLIPImageProcessor",
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=list(MEAN),
        image_std=list(STD),
    )
    dest.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(dest)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(dest)
    model.to(torch.float32)
    compact_json(dest / "tokenizer.json")


def compact_json(path: Path) -> None:
    """Re-write a JSON file without indentation: the tokenizer's 3.6 MB become 1.7 MB, same content."""
    data = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


def train(out: Path, heldout: Path | None, epochs: int, templates: tuple[str, ...] = BARE + CAPTIONS) -> None:
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    rng = random.Random(SEED)
    gen = torch.Generator().manual_seed(SEED)

    with tempfile.TemporaryDirectory() as tmp:
        build_clip_tokenizer_files(Path(tmp))
        tokenizer = _clip_tokenizer(Path(tmp))
    train_x, train_y = load_split("train")
    test_x, test_y = load_split("test")
    if heldout is not None:
        write_heldout(heldout, test_x, test_y)

    texts, ids, lengths = caption_table(tokenizer, templates)
    by_class = [[i for i, t in enumerate(texts) if any(_mentions(t, n, templates) for n in names)] for _, names in CLASSES]
    model = build_model().train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}], lr=LR
    )
    steps_per_epoch = len(train_x) // BATCH
    total = steps_per_epoch * epochs
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))
    )
    images_t = torch.from_numpy(train_x.copy())
    labels_t = torch.from_numpy(train_y)
    ids_t, lengths_t = torch.from_numpy(ids), torch.from_numpy(lengths)

    started = time.perf_counter()
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(len(train_x), generator=gen)
        for b in range(steps_per_epoch):
            idx = order[b * BATCH : (b + 1) * BATCH]
            y = labels_t[idx]
            text_y = y  # one random caption of its class per image
            pick = torch.tensor([rng.choice(by_class[int(c)]) for c in text_y])
            width = int(lengths_t[pick].max())
            tok = ids_t[pick, :width]
            mask = (torch.arange(width).view(1, -1) < lengths_t[pick].view(-1, 1)).long()
            flipped = augment(images_t[idx], gen)
            views = torch.cat([edit(flipped, gen), edit(flipped, gen)])
            both = model.get_image_features(pixel_values=pixels(views)).pooler_output
            both = both / both.norm(dim=-1, keepdim=True)
            img, other = both[: len(idx)], both[len(idx) :]
            txt = model.get_text_features(input_ids=tok, attention_mask=mask).pooler_output
            txt = txt / txt.norm(dim=-1, keepdim=True)
            loss = soft_clip_loss(img, txt, y, text_y, model.logit_scale.exp().clamp(max=100))
            loss = loss + INSTANCE_WEIGHT * simclr_loss(img, other, INSTANCE_TEMPERATURE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 20 == 0 or step == total:
                print(f"epoch {epoch + 1} step {step}/{total} loss {loss.item():.3f} "
                      f"{time.perf_counter() - started:.0f}s", flush=True)
    model.eval()
    seconds = time.perf_counter() - started
    accuracy = zero_shot_accuracy(model, tokenizer, test_x, test_y)
    save(model, tokenizer, out)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"trained {total} steps in {seconds:.0f}s on {THREADS} threads; "
          f"zero-shot top-1 on the 10,000 test images: {accuracy:.3f}; saved {size / 1e6:.1f} MB to {out}")


def _mentions(text: str, name: str, templates: tuple[str, ...]) -> bool:
    """Whether a caption was made from this class name (names are unique across classes as whole phrases)."""
    return any(caption(t, name) == text for t in templates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to save the model in (save_pretrained)")
    parser.add_argument("--heldout", type=Path, help="also write the held-out PNG sample here")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--captions", choices=sorted(CAPTION_SETS), default="bare",
                        help="with the bare-name captions (the committed model) or sentences in their place")
    args = parser.parse_args()
    train(args.out, args.heldout, args.epochs, CAPTION_SETS[args.captions] + CAPTIONS)


if __name__ == "__main__":
    main()
