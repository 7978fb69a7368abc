"""A random-weight CLIP checkpoint with the real ViT-B/32 shapes, for benchmarks (weights don't change speed).

    python bench/checkpoint.py OUT_DIR [--seed 0]

writes ``config.json``, ``model.safetensors`` (~600 MB, float32), the real CLIP BPE tokenizer (built from
``tests/data``, as ``tests/tiny_model.py`` does) and the real preprocessing settings (resize the shorter
side to 224, bicubic, centre crop 224, OpenAI mean/std), so ``Encoder.load(OUT_DIR)`` goes through the
users' code path with the same tensors and FLOPs as ``openai/clip-vit-base-patch32``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from tiny_model import (
    CLIP_BOS_ID,
    CLIP_EOS_ID,
    CLIP_MAX_POSITIONS,
    CLIP_VOCAB_SIZE,
    _clip_tokenizer,
    _pil_image_processor,
    build_clip_tokenizer_files,
)

# openai/clip-vit-base-patch32
VISION = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "image_size": 224, "patch_size": 32}
TEXT = {"hidden_size": 512, "num_hidden_layers": 12, "num_attention_heads": 8, "intermediate_size": 2048}
PROJECTION = 512
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def vit_b32_config():
    from transformers import CLIPConfig

    text = dict(
        TEXT,
        vocab_size=CLIP_VOCAB_SIZE,
        max_position_embeddings=CLIP_MAX_POSITIONS,
        bos_token_id=CLIP_BOS_ID,
        eos_token_id=CLIP_EOS_ID,
        pad_token_id=CLIP_EOS_ID,
        hidden_act="quick_gelu",
        projection_dim=PROJECTION,
    )
    vision = dict(VISION, num_channels=3, hidden_act="quick_gelu", projection_dim=PROJECTION)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=PROJECTION)


def build_vit_b32(dest: Path, *, seed: int = 0) -> Path:
    """Save a random ViT-B/32 ``CLIPModel`` + ``CLIPProcessor`` into ``dest`` (created) and return it."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        build_clip_tokenizer_files(Path(tmp))
        tokenizer = _clip_tokenizer(Path(tmp))
    torch.manual_seed(seed)
    model = CLIPModel(vit_b32_config()).eval()
    image_processor = _pil_image_processor(
        "CLIPImageProcessor",
        size={"shortest_edge": VISION["image_size"]},
        crop_size={"height": VISION["image_size"], "width": VISION["image_size"]},
        image_mean=list(OPENAI_MEAN),
        image_std=list(OPENAI_STD),
        resample=3,  # bicubic
    )
    model.save_pretrained(dest)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(dest)
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    build_vit_b32(args.out_dir, seed=args.seed)
    size = sum(p.stat().st_size for p in args.out_dir.iterdir() if p.is_file())
    print(json.dumps({"model_dir": str(args.out_dir.resolve()), "bytes": size, "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
