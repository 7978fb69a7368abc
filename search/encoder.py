"""The embedding model: a CLIP-family checkpoint (CLIP, SigLIP, ...) loaded through transformers.

Images are preprocessed here with Pillow + numpy from the checkpoint's own image-processor settings
(size, crop, mean, std, resampling), so decoder threads can prepare ready tensors while the model
runs; ``tests/test_encoder.py`` checks the result against the checkpoint's processor.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from search import families
from search.errors import ModelLoadError, QueryError
from search.pixels import to_rgb
from search.records import Vectors
from search.settings import resolve_model_id  # noqa: F401  (callers import it from here; it needs no model)

if TYPE_CHECKING:  # torch is imported where a model is loaded or run, never by merely importing this module
    import torch


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for, but PyTorch sees no CUDA GPU on this machine; use --device cpu.")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ModelLoadError(f"Unknown device '{device}': use auto, cpu or cuda.")
    return device


def default_batch_size(device: str) -> int:
    return 256 if device.startswith("cuda") else 32


@dataclass(frozen=True, slots=True)
class Preprocess:
    """Resize (shorter side, or to a fixed size), centre-crop, scale to [0,1], normalise: as the processor does."""

    shortest_edge: int | None  # resize the shorter side to this (aspect kept) ...
    resize_to: tuple[int, int] | None  # ... or to exactly (height, width)
    crop: tuple[int, int] | None  # (height, width) centre crop, if any
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int
    rescale: float

    @property
    def out_size(self) -> tuple[int, int]:
        if self.crop:
            return self.crop
        if self.resize_to:
            return self.resize_to
        assert self.shortest_edge is not None
        return (self.shortest_edge, self.shortest_edge)

    @property
    def min_side(self) -> int:
        """The shorter side an input needs before resizing (for JPEG draft / reduce at decode time)."""
        return self.shortest_edge or max(self.resize_to or self.out_size)

    @classmethod
    def from_image_processor(cls, proc: Any) -> Preprocess:
        size = dict(getattr(proc, "size", None) or {})
        crop = dict(getattr(proc, "crop_size", None) or {}) if getattr(proc, "do_center_crop", False) else {}
        shortest = size.get("shortest_edge")
        resize_to = (size["height"], size["width"]) if "height" in size else None
        if shortest is None and resize_to is None:
            raise ModelLoadError(f"The model's image processor has an image size this version cannot use: {size}.")
        resample = getattr(proc, "resample", Image.Resampling.BICUBIC)
        return cls(
            shortest_edge=shortest,
            resize_to=resize_to,
            crop=(crop["height"], crop["width"]) if crop else None,
            mean=tuple(proc.image_mean),
            std=tuple(proc.image_std),
            resample=int(getattr(resample, "value", resample)),
            rescale=float(proc.rescale_factor) if getattr(proc, "do_rescale", True) else 1.0,
        )

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step, with the processor's rounding."""
        if self.resize_to:
            return self.resize_to[1], self.resize_to[0]
        assert self.shortest_edge is not None
        short, long = sorted((width, height))
        new_long = int(self.shortest_edge * long / short)
        return (self.shortest_edge, new_long) if width <= height else (new_long, self.shortest_edge)

    def __call__(self, image: Image.Image) -> NDArray[np.float32]:
        """An image -> a (3, H, W) float32 array ready for the model. Any other mode than RGB (grey,
        palette, alpha, 16-bit) is converted as the decoder converts files (``search.pixels.to_rgb``): a
        grey image read as three channels would give a vector of noise."""
        if image.mode != "RGB":
            image = to_rgb(image)
        width, height = self.resized_size(*image.size)
        resized = image.resize((width, height), resample=self.resample)
        if self.crop:
            ch, cw = self.crop
            if height < ch or width < cw:  # the processor pads with zeros before cropping
                return self._normalise(_pad_crop(np.asarray(resized), ch, cw))
            top, left = (height - ch) // 2, (width - cw) // 2
            resized = resized.crop((left, top, left + cw, top + ch))  # crop before converting: fewer pixels
        return self._normalise(np.asarray(resized))

    def _normalise(self, pixels: NDArray[Any]) -> NDArray[np.float32]:
        """(H, W, 3) uint8 -> (3, H, W) float32: (x * rescale - mean) / std in one pass per channel."""
        out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
        for c in range(3):
            np.multiply(pixels[..., c], self.rescale / self.std[c], out=out[c], dtype=np.float32)
            out[c] -= self.mean[c] / self.std[c]
        return out


def _pad_crop(pixels: NDArray[Any], ch: int, cw: int) -> NDArray[Any]:
    """Centre an image smaller than the crop on zeros (as the processor does), then centre-crop."""
    h, w = pixels.shape[:2]
    ph, pw = max(h, ch), max(w, cw)
    padded = np.zeros((ph, pw, 3), dtype=pixels.dtype)
    top, left = (ph - h) // 2, (pw - w) // 2
    padded[top : top + h, left : left + w] = pixels
    top, left = (ph - ch) // 2, (pw - cw) // 2
    return padded[top : top + ch, left : left + cw]


def _features(output: Any) -> torch.Tensor:
    """transformers 5 returns an output object whose ``pooler_output`` is the projected embedding."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise ModelLoadError("The model returned no pooled embedding; it does not look like a CLIP-family model.")
    return pooled


def _normalise(features: torch.Tensor) -> Vectors:
    features = features.float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return features.cpu().numpy().astype(np.float32, copy=False)


class Encoder:
    """Turns images and texts into L2-normalised vectors of one model. Construct with ``Encoder.load``."""

    def __init__(self, model_id: str, model: Any, processor: Any, device: str) -> None:
        self.model_id = model_id
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.device = device
        self.dtype = next(model.parameters()).dtype
        images = processor.image_processor
        self.naflex = families.is_naflex(images)  # SigLIP 2 NaFlex: patches + mask + grid instead of pixels
        self.preprocess = (families.NaflexPreprocess if self.naflex else Preprocess).from_image_processor(images)
        self.pad_to_max = "siglip" in str(getattr(model.config, "model_type", "")).lower()
        self.max_text_tokens = families.text_token_limit(model.config.text_config, self.tokenizer)
        self.runtime: Any = None  # another runtime for both towers (search.backends); None: the torch model
        self.backend = "torch"
        self.dim = int(self.encode_text(["a"]).shape[1])

    @classmethod
    def load(cls, model: str, device: str = "auto", backend: str = "torch", cache: Path | None = None, precision: str = "fp32") -> Encoder:
        """``backend``: torch, onnx, openvino or auto, ``precision``: fp32 or int8 (``search.backends``);
        ``cache``: where exports live (a library's ``search.backends.cache_root``)."""
        from transformers import AutoModel, AutoProcessor
        from transformers.utils import logging as hf_logging

        model_id = resolve_model_id(model)
        device = pick_device(device)
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
        local_only = Path(model_id).is_dir() or _in_hub_cache(model_id)
        if not local_only and not _hub_reachable():
            raise ModelLoadError(_load_hint(model, model_id, None))
        import torch

        try:
            dtype = torch.float16 if device.startswith("cuda") else torch.float32
            net = AutoModel.from_pretrained(model_id, dtype=dtype, local_files_only=local_only).eval().to(device)
            processor = AutoProcessor.from_pretrained(model_id, local_files_only=local_only)
        except Exception as err:  # transformers raises OSError, ValueError, hub errors...: all mean "cannot load"
            raise ModelLoadError(_load_hint(model, model_id, err)) from err
        if not hasattr(net, "get_image_features") or not hasattr(processor, "image_processor"):
            raise ModelLoadError(f"'{model}' is not a CLIP-family model (no joint image/text embedding); use a CLIP or SigLIP checkpoint.")
        encoder = cls(model_id, net, processor, device)
        if backend != "torch" or precision != "fp32":
            from search.backends import attach

            attach(encoder, backend, cache, precision=precision)
        return encoder

    # --- images ---------------------------------------------------------------------------------------

    def encode_pixels(self, pixels: NDArray[np.float32]) -> Vectors:
        """A (batch, 3, H, W) array made by ``self.preprocess`` -> (batch, dim) unit vectors."""
        if self.runtime is not None:
            return self.runtime.image(pixels)
        import torch

        with torch.inference_mode():
            return self._encode_pixels(torch.from_numpy(pixels))

    def _encode_pixels(self, tensor: torch.Tensor) -> Vectors:
        if self.device.startswith("cuda"):
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        if self.naflex:
            inputs = families.naflex_inputs(tensor)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            return _normalise(_features(self.model.get_image_features(**inputs)))
        tensor = tensor.to(self.dtype)
        return _normalise(_features(self.model.get_image_features(pixel_values=tensor)))

    def encode_images(self, images: Sequence[Image.Image]) -> Vectors:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_pixels(np.stack([self.preprocess(img) for img in images]))

    # --- text -----------------------------------------------------------------------------------------

    def encode_text(self, texts: Sequence[str]) -> Vectors:
        import torch

        with torch.inference_mode():
            return self._encode_text(texts)

    def _encode_text(self, texts: Sequence[str]) -> Vectors:
        texts = [t.strip() for t in texts]
        if not texts or not all(texts):
            raise QueryError("The text query is empty.")
        tokens = self.tokens(texts)
        if self.runtime is not None:
            return self.runtime.text({k: v.numpy() for k, v in tokens.items()})
        return _normalise(_features(self.model.get_text_features(**tokens)))

    def tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The text tower's inputs for ``texts``, on the model's device."""
        tokens = self.tokenizer(
            list(texts),
            padding="max_length" if self.pad_to_max else True,  # pad to the query, not to 77 tokens
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        if self.pad_to_max:
            tokens.pop("attention_mask", None)  # SigLIP was trained without one
        return tokens


def _in_hub_cache(model_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # an id the hub would reject: let from_pretrained say so
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick check before from_pretrained, which retries for half a minute when offline."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    hostname, _, port = host.partition(":")
    try:
        socket.create_connection((hostname, int(port or 443)), timeout=timeout).close()
    except OSError:
        return False
    return True


def _load_hint(model: str, model_id: str, err: Exception | None) -> str:
    if Path(model).expanduser().is_dir():
        detail = str(err).splitlines()[0] if err and str(err) else "no details"
        return (
            f"The folder {model_id} does not hold a loadable CLIP/SigLIP checkpoint ({detail}); point --model "
            "at a folder saved with save_pretrained (config.json, weights, tokenizer and preprocessor files)."
        )
    if model.startswith((".", "/", "~")):
        return f"The model folder {model} does not exist; pass --model with an existing folder or a Hugging Face model id."
    return (
        f"Could not load the model '{model}': it is not in the local Hugging Face cache and could not be "
        "downloaded (no internet, or a wrong id); run once with internet access to download it, or pass "
        "--model with a local folder that holds a CLIP/SigLIP checkpoint."
    )
