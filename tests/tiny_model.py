"""Tiny random-weight CLIP / SigLIP checkpoints for offline tests.

Nothing here downloads anything.  The CLIP tokenizer is the *real* OpenAI CLIP
BPE vocabulary (``tests/data/bpe_simple_vocab_16e6.txt.gz``, MIT, see
``tests/data/LICENSE-bpe_simple_vocab.txt``), so token ids match the real
``openai/clip-vit-*`` checkpoints; only the weights are random and tiny.

Usage::

    from tiny_model import build_tiny_clip
    model_dir = build_tiny_clip(tmp_path / "clip")
    model = transformers.AutoModel.from_pretrained(model_dir)
    processor = transformers.AutoProcessor.from_pretrained(model_dir)

This is a plain helper module, not a test file.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
BPE_VOCAB_GZ = DATA_DIR / "bpe_simple_vocab_16e6.txt.gz"

# Real CLIP special-token ids (49408-token vocabulary).
CLIP_VOCAB_SIZE = 49408
CLIP_BOS_ID = 49406  # <|startoftext|>
CLIP_EOS_ID = 49407  # <|endoftext|>  (also pad and unk in HF CLIP)
CLIP_MAX_POSITIONS = 77

# Small transformer shared by both tiny models.
_HIDDEN = 32
_LAYERS = 2
_HEADS = 4
_INTERMEDIATE = 37


# --------------------------------------------------------------------------- #
# CLIP tokenizer files
# --------------------------------------------------------------------------- #
@lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """Byte -> printable unicode char table, identical to OpenAI CLIP's."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _clip_vocab_and_merges(bpe_gz: Path = BPE_VOCAB_GZ) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Reproduce OpenAI ``SimpleTokenizer.__init__`` exactly."""
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab.extend("".join(m) for m in merges)
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    encoder = {tok: i for i, tok in enumerate(vocab)}
    if len(encoder) != CLIP_VOCAB_SIZE:  # pragma: no cover - guards a corrupt vocab file
        raise ValueError(f"expected {CLIP_VOCAB_SIZE} CLIP tokens, got {len(encoder)}")
    return encoder, merges  # type: ignore[return-value]


def build_clip_tokenizer_files(dest: Path) -> None:
    """Write HF-style ``vocab.json`` + ``merges.txt`` for the real CLIP BPE into *dest*."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    encoder, merges = _clip_vocab_and_merges()
    (dest / "vocab.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    with open(dest / "merges.txt", "w", encoding="utf-8", newline="\n") as fh:
        fh.write("#version: 0.2\n")
        for a, b in merges:
            fh.write(f"{a} {b}\n")


def _clip_tokenizer(files_dir: Path):
    import inspect

    from transformers import CLIPTokenizer

    if "vocab_file" in inspect.signature(CLIPTokenizer.__init__).parameters:  # transformers 4 (the floor)
        from transformers import CLIPTokenizerFast

        return CLIPTokenizerFast(
            vocab_file=str(files_dir / "vocab.json"),
            merges_file=str(files_dir / "merges.txt"),
            model_max_length=CLIP_MAX_POSITIONS,
        )

    # transformers 5: CLIPTokenizer is the tokenizers-library backed class (no
    # separate CLIPTokenizerFast).  Its __init__ takes vocab/merges *objects* and
    # silently ignores vocab_file=/merges_file= (you get a 3-token vocab).
    # CLIPTokenizer.from_pretrained(files_dir) also works, but it writes
    # "is_local"/"local_files_only" into the saved tokenizer_config.json, so read
    # the files ourselves.
    vocab = json.loads((files_dir / "vocab.json").read_text(encoding="utf-8"))
    lines = (files_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_MAX_POSITIONS)


def _quiet_transformers() -> None:
    """No progress bars ("Writing model shards: 100%") or warnings on stderr: `make demo MODEL=tiny` runs this."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _pil_image_processor(name: str, **kwargs):
    """Prefer the explicit PIL-backend class (no torchvision needed, no warning)."""
    import transformers

    cls = getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)
    return cls(**kwargs)


# --------------------------------------------------------------------------- #
# Tiny CLIP
# --------------------------------------------------------------------------- #
def build_tiny_clip(
    dest: Path,
    *,
    image_size: int = 64,
    patch_size: int = 16,
    projection_dim: int = 32,
    seed: int = 0,
) -> Path:
    """Save a random-weight tiny ``CLIPModel`` + ``CLIPProcessor`` into *dest* and return it."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    _quiet_transformers()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        build_clip_tokenizer_files(Path(tmp))
        tokenizer = _clip_tokenizer(Path(tmp))

    text_config = dict(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=_HIDDEN,
        intermediate_size=_INTERMEDIATE,
        num_hidden_layers=_LAYERS,
        num_attention_heads=_HEADS,
        max_position_embeddings=CLIP_MAX_POSITIONS,
        bos_token_id=CLIP_BOS_ID,
        eos_token_id=CLIP_EOS_ID,
        pad_token_id=CLIP_EOS_ID,
        projection_dim=projection_dim,
    )
    vision_config = dict(
        hidden_size=_HIDDEN,
        intermediate_size=_INTERMEDIATE,
        num_hidden_layers=_LAYERS,
        num_attention_heads=_HEADS,
        image_size=image_size,
        patch_size=patch_size,
        num_channels=3,
        projection_dim=projection_dim,
    )
    config = CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=projection_dim)

    torch.manual_seed(seed)
    model = CLIPModel(config).eval()

    image_processor = _pil_image_processor(
        "CLIPImageProcessor",
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)

    model.save_pretrained(dest)
    processor.save_pretrained(dest)
    return dest


# --------------------------------------------------------------------------- #
# Tiny SigLIP
# --------------------------------------------------------------------------- #
# SigLIP's real tokenizer is a 32k SentencePiece model (needs the `sentencepiece`
# package).  Instead we build a tiny SentencePiece-*style* Unigram tokenizer with
# the `tokenizers` library (already a transformers dependency) and save it as
# tokenizer.json; AutoTokenizer loads it back as a generic fast tokenizer.
# Special ids follow the real SigLIP layout: <pad>=0, </s>=1, <unk>=2; the text
# is lower-cased and "</s>" is appended, like SiglipTokenizer does.
SIGLIP_PAD_ID = 0
SIGLIP_EOS_ID = 1
SIGLIP_UNK_ID = 2
SIGLIP_MAX_POSITIONS = 64

_SIGLIP_WORDS = (
    "a an the of in on at with and or is are photo picture image drawing painting close up view "
    "cat cats dog dogs horse bird fish person man woman child people astronaut rocket space star stars "
    "galaxy sky cloud clouds sun moon earth planet launch night day city street car road tree trees "
    "grass gravel brick wall texture stone rock sand water sea beach mountain snow flower flowers "
    "cup coffee mug table food camera clock time text letters cell retina eye microscope science "
    "red green blue black white gray grey brown yellow orange small large old new blurry sharp"
).split()


def _siglip_unigram_vocab() -> list[tuple[str, float]]:
    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    seen = {p for p, _ in vocab}

    def add(piece: str, score: float) -> None:
        if piece not in seen:
            seen.add(piece)
            vocab.append((piece, score))

    for w in _SIGLIP_WORDS:  # whole words: cheap, so they win over char splits
        add("\u2581" + w, -2.0)
    add("\u2581", -4.0)
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789":  # char fallback: expensive
        add("\u2581" + ch, -9.0)
        add(ch, -10.0)
    for ch in ".,!?'\"-:;()/&":
        add(ch, -10.0)
    return vocab


def _siglip_tokenizer():
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(Unigram(_siglip_unigram_vocab(), unk_id=SIGLIP_UNK_ID, byte_fallback=False))
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(" +", " "), normalizers.Lowercase(), normalizers.Strip()]
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", SIGLIP_EOS_ID)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=SIGLIP_MAX_POSITIONS,
    )


def build_tiny_siglip(
    dest: Path,
    *,
    image_size: int = 64,
    patch_size: int = 16,
    seed: int = 0,
) -> Path:
    """Save a random-weight tiny ``SiglipModel`` + ``SiglipProcessor`` into *dest* and return it.

    SigLIP has no separate projection: embeddings have size ``hidden_size`` (32).
    Like real SigLIP, text should be tokenized with ``padding="max_length"``
    (the text tower pools the *last* position).
    """
    import torch
    from transformers import SiglipConfig, SiglipModel, SiglipProcessor

    _quiet_transformers()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _siglip_tokenizer()

    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=_HIDDEN,
        intermediate_size=_INTERMEDIATE,
        num_hidden_layers=_LAYERS,
        num_attention_heads=_HEADS,
        max_position_embeddings=SIGLIP_MAX_POSITIONS,
        pad_token_id=SIGLIP_PAD_ID,
        bos_token_id=SIGLIP_EOS_ID,  # SigLIP has no BOS; keep ids inside the tiny vocab
        eos_token_id=SIGLIP_EOS_ID,
    )
    vision_config = dict(
        hidden_size=_HIDDEN,
        intermediate_size=_INTERMEDIATE,
        num_hidden_layers=_LAYERS,
        num_attention_heads=_HEADS,
        image_size=image_size,
        patch_size=patch_size,
        num_channels=3,
    )
    config = SiglipConfig(text_config=text_config, vision_config=vision_config)

    torch.manual_seed(seed)
    model = SiglipModel(config).eval()

    image_processor = _pil_image_processor(
        "SiglipImageProcessor", size={"height": image_size, "width": image_size}
    )
    processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)

    model.save_pretrained(dest)
    processor.save_pretrained(dest)
    return dest


__all__ = [
    "BPE_VOCAB_GZ",
    "CLIP_BOS_ID",
    "CLIP_EOS_ID",
    "CLIP_VOCAB_SIZE",
    "build_clip_tokenizer_files",
    "build_tiny_clip",
    "build_tiny_siglip",
    "bytes_to_unicode",
]


if __name__ == "__main__":  # `python tests/tiny_model.py OUT_DIR [siglip]`: a random model to try things offline
    import sys

    out = Path(sys.argv[1])
    (build_tiny_siglip if sys.argv[2:] == ["siglip"] else build_tiny_clip)(out)
    print(out)
