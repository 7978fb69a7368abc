"""What differs between the CLIP-family architectures the encoder loads, kept out of ``search.encoder``.

* **Token limit** (``text_token_limit``): the text tower's positions, less RoBERTa's offset (AltCLIP's
  XLM-R tower numbers its positions from ``pad_token_id + 1``, so 514 positions hold 512 tokens), and
  never more than the tokenizer's own ``model_max_length``.
* **NaFlex images** (SigLIP 2's ``Siglip2Model``): the processor keeps each image's aspect ratio, resizes
  it to at most ``max_num_patches`` patches, and hands the model the patches (not an image), a mask of
  the real ones and each image's patch grid. ``NaflexPreprocess`` does the same per image in the decoder
  threads and packs the three into one fixed-size array, so batches stack and slice like CLIP pixels:
  row 0 is a header (patch rows, patch columns), rows 1.. are the patches, zero-padded.
  ``naflex_inputs`` unpacks a batch into the model's keyword arguments. ``tests/test_model_families.py``
  checks both against the checkpoint's own processor.

The families verified, with their vector sizes and token limits, are listed in the README (``--model``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

if TYPE_CHECKING:  # torch is imported where a model runs (as in search.encoder)
    import torch

ROBERTA_TEXT_TYPES = ("altclip_text_model", "xlm-roberta", "roberta")


def text_token_limit(text_config: Any, tokenizer: Any) -> int:
    """How many tokens a query may have (longer ones are truncated)."""
    limit = int(getattr(text_config, "max_position_embeddings", 77))
    if str(getattr(text_config, "model_type", "")) in ROBERTA_TEXT_TYPES:
        limit -= int(getattr(text_config, "pad_token_id", 1) or 0) + 1
    own = getattr(tokenizer, "model_max_length", None)
    if isinstance(own, int) and 0 < own < limit:
        limit = own
    return limit


def is_naflex(image_processor: Any) -> bool:
    return hasattr(image_processor, "max_num_patches") and hasattr(image_processor, "patch_size")


@dataclass(frozen=True, slots=True)
class NaflexPreprocess:
    """Aspect-preserving resize to at most ``max_num_patches`` patches, normalise, cut into patches."""

    patch_size: int
    max_num_patches: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int
    rescale: float

    @classmethod
    def from_image_processor(cls, proc: Any) -> NaflexPreprocess:
        resample = getattr(proc, "resample", Image.Resampling.BILINEAR)
        return cls(
            patch_size=int(proc.patch_size),
            max_num_patches=int(proc.max_num_patches),
            mean=tuple(proc.image_mean),
            std=tuple(proc.image_std),
            resample=int(getattr(resample, "value", resample)),
            rescale=float(proc.rescale_factor) if getattr(proc, "do_rescale", True) else 1.0,
        )

    @property
    def min_side(self) -> int:
        """A shorter side this long never needs upscaling: a square image fills the whole patch budget."""
        return self.patch_size * math.isqrt(self.max_num_patches)

    @property
    def out_size(self) -> tuple[int, int]:
        return (self.min_side, self.min_side)

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize: the processor's own rule."""
        from transformers.models.siglip2.image_processing_pil_siglip2 import get_image_size_for_max_num_patches

        h, w = get_image_size_for_max_num_patches(height, width, self.patch_size, self.max_num_patches)
        return w, h

    def __call__(self, image: Image.Image) -> NDArray[np.float32]:
        """An RGB image -> (1 + max_num_patches, patch_size² · 3): the header row, then the patches."""
        width, height = self.target_size(*image.size)
        pixels = np.asarray(image.resize((width, height), resample=self.resample), dtype=np.float32)
        pixels = (pixels * self.rescale - np.array(self.mean, dtype=np.float32)) / np.array(self.std, dtype=np.float32)
        p = self.patch_size
        rows, cols = height // p, width // p
        patches = pixels.reshape(rows, p, cols, p, 3).transpose(0, 2, 1, 3, 4).reshape(rows * cols, p * p * 3)
        out = np.zeros((1 + self.max_num_patches, p * p * 3), dtype=np.float32)
        out[0, :2] = (rows, cols)
        out[1 : 1 + rows * cols] = patches
        return out


def naflex_inputs(batch: NDArray[np.float32] | torch.Tensor) -> dict[str, torch.Tensor]:
    """A stacked batch of ``NaflexPreprocess`` outputs -> ``pixel_values``, ``pixel_attention_mask``,
    ``spatial_shapes`` for ``Siglip2Model.get_image_features``."""
    import torch

    tensor = torch.as_tensor(batch)
    shapes = tensor[:, 0, :2].round().long()
    pixels = tensor[:, 1:]
    counts = shapes[:, 0] * shapes[:, 1]
    mask = (torch.arange(pixels.shape[1], device=pixels.device)[None, :] < counts[:, None].to(pixels.device)).long()
    return {"pixel_values": pixels, "pixel_attention_mask": mask, "spatial_shapes": shapes}
