"""Tiny random-weight checkpoints of the multilingual CLIP-family architectures Viewfinder supports
besides CLIP and SigLIP: SigLIP 2, AltCLIP and Chinese-CLIP. Nothing is downloaded.

Each tokenizer is the architecture's own transformers class (``Siglip2Tokenizer``: Gemma-style BPE
with byte fallback; ``XLMRobertaTokenizer``: SentencePiece-style unigram; ``BertTokenizer``: WordPiece
with one token per CJK character), built from a small vocabulary by the ``tokenizers`` library, so
the saved folder loads through ``AutoProcessor`` exactly like the real checkpoint. Only the weights
and the vocabularies are tiny; the weights are random, so rankings mean nothing.

``python tests/tiny_families.py OUT_DIR siglip2|altclip|chinese_clip`` writes one to try by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import _HEADS, _HIDDEN, _INTERMEDIATE, _LAYERS, _pil_image_processor  # noqa: E402

# Words in several scripts, so the tests can query in French, German, Spanish, Chinese and Japanese.
WORDS = (
    "a photo of the cat dog rocket space star sky stone texture "
    "une un chat chien fusée ciel étoile pierre "  # French
    "ein eine foto katze hund rakete himmel stern "  # German
    "una foto gato perro cohete cielo estrella "  # Spanish
).split()
CJK = "一张猫狗的照片火箭星空石头写真宇宙の"  # Chinese / Japanese characters (one token each)
LETTERS = "abcdefghijklmnopqrstuvwxyzàáâäçèéêëíîïñóôöúûüß0123456789.,!?'-"
TEXT_POSITIONS = 64  # context length of the tiny text towers


def _vision(image_size: int, patch_size: int, **extra: object) -> dict[str, object]:
    return dict(
        hidden_size=_HIDDEN,
        intermediate_size=_INTERMEDIATE,
        num_hidden_layers=_LAYERS,
        num_attention_heads=_HEADS,
        image_size=image_size,
        patch_size=patch_size,
        num_channels=3,
        **extra,
    )


def _text(vocab_size: int, **extra: object) -> dict[str, object]:
    return dict(
        vocab_size=vocab_size,
        hidden_size=_HIDDEN,
        intermediate_size=_INTERMEDIATE,
        num_hidden_layers=_LAYERS,
        num_attention_heads=_HEADS,
        **extra,
    )


def _save(dest: Path, model: object, processor: object) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)  # type: ignore[attr-defined]
    processor.save_pretrained(dest)  # type: ignore[attr-defined]
    return dest


# --- SigLIP 2 -----------------------------------------------------------------------------------------


def siglip2_tokenizer():
    """Gemma-style BPE: specials, the byte-fallback tokens, letters with and without the word marker."""
    from transformers import Siglip2Tokenizer

    vocab: dict[str, int] = {}
    for token in ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", *(f"<0x{b:02X}>" for b in range(256)), "▁"]:
        vocab.setdefault(token, len(vocab))
    for ch in LETTERS + CJK:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault("▁" + ch, len(vocab))
    merges = [("▁", ch) for ch in LETTERS + CJK]
    return Siglip2Tokenizer(vocab=vocab, merges=merges, model_max_length=TEXT_POSITIONS)


def build_tiny_siglip2(dest: Path, *, patch_size: int = 16, max_num_patches: int = 256, seed: int = 0) -> Path:
    """A ``Siglip2Model`` (NaFlex: images keep their aspect ratio, up to ``max_num_patches`` patches)."""
    import torch
    from transformers import Siglip2Config, Siglip2Model, Siglip2Processor

    tokenizer = siglip2_tokenizer()
    config = Siglip2Config(
        text_config=_text(
            len(tokenizer), max_position_embeddings=TEXT_POSITIONS, pad_token_id=0, bos_token_id=2, eos_token_id=1
        ),
        vision_config=_vision(patch_size * 4, patch_size, num_patches=max_num_patches),
    )
    torch.manual_seed(seed)
    model = Siglip2Model(config).eval()
    images = _pil_image_processor("Siglip2ImageProcessor", patch_size=patch_size, max_num_patches=max_num_patches)
    return _save(Path(dest), model, Siglip2Processor(image_processor=images, tokenizer=tokenizer))


# --- AltCLIP ------------------------------------------------------------------------------------------


def xlmr_tokenizer():
    """XLM-R's layout (<s>=0, <pad>=1, </s>=2, <unk>=3) with a unigram vocabulary of whole words,
    then letters and CJK characters as the expensive fallback."""
    from transformers import XLMRobertaTokenizer

    pieces: list[tuple[str, float]] = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    seen = {p for p, _ in pieces}
    for piece, score in [*(("▁" + w, -2.0) for w in WORDS), ("▁", -4.0), *((c, -8.0) for c in CJK)]:
        if piece not in seen:
            seen.add(piece)
            pieces.append((piece, score))
    for ch in LETTERS + LETTERS.upper():  # XLM-R keeps case
        for piece in ("▁" + ch, ch):
            if piece not in seen:
                seen.add(piece)
                pieces.append((piece, -10.0))
    pieces.append(("<mask>", 0.0))
    return XLMRobertaTokenizer(vocab=pieces, model_max_length=TEXT_POSITIONS - 2)


def build_tiny_altclip(dest: Path, *, image_size: int = 64, patch_size: int = 16, projection_dim: int = 24, seed: int = 0) -> Path:
    """An ``AltCLIPModel``: CLIP's vision tower with an XLM-R text tower (positions offset by 2, as RoBERTa)."""
    import torch
    from transformers import AltCLIPConfig, AltCLIPModel, AltCLIPProcessor

    tokenizer = xlmr_tokenizer()
    config = AltCLIPConfig(
        text_config=_text(
            len(tokenizer),
            max_position_embeddings=TEXT_POSITIONS,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            project_dim=projection_dim,
        ),
        vision_config=_vision(image_size, patch_size),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model = AltCLIPModel(config).eval()
    images = _pil_image_processor(
        "CLIPImageProcessor", size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return _save(Path(dest), model, AltCLIPProcessor(image_processor=images, tokenizer=tokenizer))


# --- Chinese-CLIP -------------------------------------------------------------------------------------


def bert_tokenizer():
    """BERT WordPiece: [PAD]=0 ... with whole words, letters, ##letters, and one token per CJK character."""
    from transformers import BertTokenizer

    vocab: dict[str, int] = {}
    for token in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *CJK, *LETTERS, *(f"##{c}" for c in LETTERS)]:
        vocab.setdefault(token, len(vocab))
    return BertTokenizer(vocab=vocab, model_max_length=TEXT_POSITIONS)


def build_tiny_chinese_clip(dest: Path, *, image_size: int = 64, patch_size: int = 16, projection_dim: int = 40, seed: int = 0) -> Path:
    """A ``ChineseCLIPModel``: CLIP's vision tower with a BERT text tower (the [CLS] token is projected)."""
    import torch
    from transformers import ChineseCLIPConfig, ChineseCLIPModel, ChineseCLIPProcessor

    tokenizer = bert_tokenizer()
    config = ChineseCLIPConfig(
        text_config=_text(len(tokenizer), max_position_embeddings=TEXT_POSITIONS, pad_token_id=0),
        vision_config=_vision(image_size, patch_size),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model = ChineseCLIPModel(config).eval()
    images = _pil_image_processor(
        "ChineseCLIPImageProcessor",
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    return _save(Path(dest), model, ChineseCLIPProcessor(image_processor=images, tokenizer=tokenizer))


BUILDERS = {"siglip2": build_tiny_siglip2, "altclip": build_tiny_altclip, "chinese_clip": build_tiny_chinese_clip}

if __name__ == "__main__":
    print(BUILDERS[sys.argv[2]](Path(sys.argv[1])))
