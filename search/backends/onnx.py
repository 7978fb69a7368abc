"""The model's two towers exported to ONNX and run by ONNX Runtime on the CPU.

* **Export, once per checkpoint**: ``torch.onnx.export`` with the TorchScript exporter (``dynamo=False``:
  it traces transformers 5's CLIP and SigLIP as they are; the dynamo exporter needs ``onnxscript`` and
  was not needed), opset ``OPSET``, a dynamic batch axis for the vision tower and dynamic batch and
  sequence axes for the text tower (traced on a padded pair of texts, so the padding mask is in the
  graph). Written into a temporary folder and renamed into place: a killed export leaves nothing half
  written. The folder is ``<library>/onnx/<key>``, the key a hash of the checkpoint's files (names,
  sizes, modification times), ``EXPORT_VERSION`` and the torch / transformers versions: a changed
  checkpoint gets a new export. An export that fails is remembered (``<key>.failed`` holds the reason)
  and the model runs with torch.
* **Parity, once per machine**: before the runtime is used, both runtimes embed a fixed check set
  (``check_images``: synthetic pictures through the model's own preprocessing, alone and as a batch;
  ``PARITY_TEXTS``, alone and as one padded batch, a truncated one among them); every vector pair must
  have a cosine >= ``PARITY_MIN``. The result and both runtimes' times are kept in
  ``parity-<machine>.json`` next to the export; ``--backend auto`` uses ONNX Runtime only where it
  passed and was faster on this machine.
* **Runtime**: one ``InferenceSession`` per tower, full graph optimisation; the vision session's idle
  threads do not spin (they would take the cores the decoding threads need while indexing, as
  ``OMP_WAIT_POLICY=PASSIVE`` does for torch).

OpenVINO (reading the same ONNX files) was measured too and not kept: docs/BENCHMARKS.md, "A faster
CPU runtime".
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from search.errors import ModelLoadError
from search.records import Vectors

EXPORT_VERSION = 1  # bump when the export itself changes: every cached export is then redone
OPSET = 17
PARITY_MIN = 0.9999
INT8_MIN = 0.99  # --precision int8: its bar against torch's fp32 vectors (docs/BENCHMARKS.md: measured 0.9998)
PRECISIONS = ("fp32", "int8")
PARITY_TEXTS = (
    "a",
    "a photo of a cat",
    "a red bicycle in the snow",
    "Ünïcödé 写真, with punctuation!",
    " ".join(["a very long caption that goes on"] * 20),  # longer than any text tower: truncated
)


@dataclass(frozen=True, slots=True)
class Parity:
    min_cosine_image: float
    min_cosine_text: float
    torch_ms: float  # one vision batch of the check images + one short text, best of a few runs
    runtime_ms: float
    machine: str
    precision: str = "fp32"

    @property
    def bar(self) -> float:
        return INT8_MIN if self.precision == "int8" else PARITY_MIN

    @property
    def passed(self) -> bool:
        return min(self.min_cosine_image, self.min_cosine_text) >= self.bar

    @property
    def faster(self) -> bool:
        return self.runtime_ms < self.torch_ms


@dataclass(frozen=True, slots=True)
class Prepared:
    runtime: Towers | None  # None: use torch, for ``reason``
    reason: str | None = None
    parity: Parity | None = None

    @property
    def faster(self) -> bool:
        return bool(self.parity and self.parity.faster)


# --- where the export lives ------------------------------------------------------------------------------


def checkpoint_folder(model_id: str) -> Path | None:
    """The checkpoint's files: the local folder itself, or the Hub cache's snapshot folder."""
    if Path(model_id).is_dir():
        return Path(model_id)
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(model_id, "config.json")
    except Exception:
        return None
    return Path(config).parent if isinstance(config, str) else None


def checkpoint_key(folder: Path) -> str:
    """A hash of the checkpoint's files (name, size, mtime) and of what the export depends on."""
    import torch
    import transformers

    digest = hashlib.sha256(f"{EXPORT_VERSION} {OPSET} {torch.__version__} {transformers.__version__}".encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"\0{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def machine_id(backend: str = "onnx") -> str:
    """This machine as far as floating point goes: host, CPU model, the runtime's version."""
    from importlib.metadata import version

    runtime = {"onnx": "onnxruntime", "openvino": "openvino"}[backend]
    cpu = ""
    try:
        cpu = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "")
    except OSError:
        pass
    text = f"{platform.node()} {platform.machine()} {platform.processor()} {cpu} {runtime} {version(runtime)}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --- export ----------------------------------------------------------------------------------------------


def _wrappers(model: Any, text_inputs: list[str]) -> tuple[Any, Any]:
    import torch

    from search.encoder import _features

    class Vision(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return _features(self.model.get_image_features(pixel_values=pixel_values))

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return _features(self.model.get_text_features(**dict(zip(text_inputs, tensors, strict=True))))

    return Vision().eval(), Text().eval()


def export(encoder: Any, folder: Path) -> None:
    """Write ``vision.onnx`` and ``text.onnx`` of ``encoder``'s (CPU, float32) model into ``folder``."""
    import torch

    tokens = encoder.tokens(["a photo of a cat on a red bicycle", "a dog"])  # padded: the mask is traced
    names = list(tokens)
    vision, text = _wrappers(encoder.model, names)
    height, width = encoder.preprocess.out_size
    batch = {"pixel_values": {0: "batch"}, "features": {0: "batch"}}
    sequence = {name: {0: "batch", 1: "sequence"} for name in names} | {"features": {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer warnings about Python-level branches on shapes
        common = {"output_names": ["features"], "opset_version": OPSET, "dynamo": False}
        torch.onnx.export(vision, (torch.zeros(2, 3, height, width),), str(folder / "vision.onnx"), input_names=["pixel_values"], dynamic_axes=batch, **common)
        torch.onnx.export(text, tuple(tokens.values()), str(folder / "text.onnx"), input_names=names, dynamic_axes=sequence, **common)


def ensure_export(encoder: Any, cache: Path, *, say: Callable[[str], None]) -> Path:
    """The export folder of ``encoder``'s checkpoint, exported now if it is not there (atomically)."""
    folder = checkpoint_folder(encoder.model_id)
    if folder is None:
        raise ExportFailed("the checkpoint's files are not on this machine")
    key = checkpoint_key(folder)
    target = cache / key
    failed = cache / f"{key}.failed"
    if (target / "vision.onnx").is_file() and (target / "text.onnx").is_file():
        return target
    if failed.is_file():
        raise ExportFailed(f"its ONNX export failed before ({failed.read_text().strip()}; {failed} records it)")
    cache.mkdir(parents=True, exist_ok=True)
    say("viewfinder: exporting the model to ONNX for the faster CPU runtime (once per model)...")
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache))
    scratch.chmod(0o755)
    try:
        export(encoder, scratch)
        (scratch / "export.json").write_text(json.dumps({"model_id": encoder.model_id, "seconds": round(time.perf_counter() - started, 1)}))
        try:
            os.replace(scratch, target)
        except OSError:  # another process put its export there first: keep that one
            if not (target / "vision.onnx").is_file():
                raise
    except Exception as err:
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no details'}"[:300]
        _write_atomic(failed, reason + "\n")
        raise ExportFailed(f"its ONNX export failed ({reason})") from err
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


class ExportFailed(Exception):
    """Internal: why the ONNX Runtime backend cannot be used; the encoder falls back to torch."""


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- runtime ---------------------------------------------------------------------------------------------


def unit_rows(features: NDArray[np.float32]) -> Vectors:
    features = np.asarray(features, dtype=np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def _session(path: Path, *, spin: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Towers:
    """The two exported towers in one runtime, each opened when first used (a text query never pays for
    the vision tower); ``image`` and ``text`` return unit vectors. Subclasses open and run a file."""

    backend = ""

    def __init__(self, folder: Path, *, vision_file: str = "vision.onnx", text_file: str = "text.onnx") -> None:
        self.folder = folder
        self.files = {"vision": folder / vision_file, "text": folder / text_file}
        missing = [str(p) for p in self.files.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"no {', '.join(missing)}")
        self._sessions: dict[str, Any] = {}

    def session(self, tower: str) -> Any:
        if tower not in self._sessions:
            try:
                self._sessions[tower] = self._open(self.files[tower], tower)
            except Exception as err:  # a damaged cache file (the parity check opened it fine once)
                raise ModelLoadError(
                    f"{self.backend} cannot load {self.files[tower]} ({str(err).splitlines()[0][:200]}); delete "
                    f"{self.folder} to export the model again, or pass --backend torch."
                ) from err
        return self._sessions[tower]

    def image(self, pixels: NDArray[np.float32]) -> Vectors:
        return unit_rows(self._run("vision", {"pixel_values": np.ascontiguousarray(pixels, dtype=np.float32)}))

    def text(self, tokens: dict[str, Any]) -> Vectors:
        return unit_rows(self._run("text", {k: np.asarray(v, dtype=np.int64) for k, v in tokens.items()}))

    def _open(self, path: Path, tower: str) -> Any:
        raise NotImplementedError

    def _run(self, tower: str, feed: dict[str, NDArray[Any]]) -> NDArray[np.float32]:
        raise NotImplementedError


class OrtTowers(Towers):
    """ONNX Runtime, CPU provider, full graph optimisation; the vision session's idle threads do not spin."""

    backend = "onnx"

    def _open(self, path: Path, tower: str) -> Any:
        return _session(path, spin=tower == "text")

    def _run(self, tower: str, feed: dict[str, NDArray[Any]]) -> NDArray[np.float32]:
        session = self.session(tower)
        return session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0]


class OvTowers(Towers):
    """OpenVINO's CPU plugin on the same files, latency hint, f32 (on CPUs with AVX-512 BF16 its default
    is bf16, whose vectors miss the parity bar: 0.99994 measured)."""

    backend = "openvino"

    def _open(self, path: Path, tower: str) -> Any:
        import openvino

        return openvino.Core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})

    def _run(self, tower: str, feed: dict[str, NDArray[Any]]) -> NDArray[np.float32]:
        model = self.session(tower)
        inputs = [next(feed[name] for name in i.get_names() if name in feed) for i in model.inputs]  # a port has several names
        return model(inputs)[model.output(0)]


TOWERS: dict[str, type[Towers]] = {"onnx": OrtTowers, "openvino": OvTowers}


# --- parity ----------------------------------------------------------------------------------------------


def check_images(n: int = 4, size: tuple[int, int] = (96, 72), seed: int = 11) -> list[Image.Image]:
    """Seeded pictures with structure (gradients, stripes, blocks), so that features are not noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for _ in range(n):
        freq, phase = rng.uniform(0.02, 0.3, 3), rng.uniform(0, 6.3, 3)
        pixels = np.stack([127 + 120 * np.sin(freq[c] * (xx + (c + 1) * yy) + phase[c]) for c in range(3)], axis=-1)
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        pixels[top : top + height // 3, left : left + width // 3] = rng.uniform(0, 255, 3)
        out.append(Image.fromarray(pixels.astype(np.uint8)))
    return out


def min_cosine(a: Vectors, b: Vectors) -> float:
    return float(np.min(np.sum(unit_rows(a) * unit_rows(b), axis=1)))


def _best_ms(run: Callable[[], Any], times: int = 3) -> float:
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return 1000 * best


def check_parity(encoder: Any, towers: Towers, precision: str = "fp32") -> Parity:
    """Both runtimes on the check set (vectors compared pairwise) and timed on it, torch first."""
    pixels = np.stack([encoder.preprocess(image) for image in check_images()])
    torch_images = encoder.encode_pixels(pixels)
    onnx_images = np.concatenate([towers.image(pixels), *(towers.image(pixels[i : i + 1]) for i in range(len(pixels)))])
    torch_texts = encoder.encode_text(list(PARITY_TEXTS))
    onnx_texts = np.concatenate([towers.text(_numpy(encoder.tokens(list(PARITY_TEXTS))))] + [towers.text(_numpy(encoder.tokens([t]))) for t in PARITY_TEXTS])
    tokens = _numpy(encoder.tokens([PARITY_TEXTS[2]]))
    return Parity(
        min_cosine_image=min_cosine(np.concatenate([torch_images, torch_images]), onnx_images),
        min_cosine_text=min_cosine(np.concatenate([torch_texts, torch_texts]), onnx_texts),
        torch_ms=_best_ms(lambda: encoder.encode_pixels(pixels)) + _best_ms(lambda: encoder.encode_text([PARITY_TEXTS[2]])),
        runtime_ms=_best_ms(lambda: towers.image(pixels)) + _best_ms(lambda: towers.text(tokens)),
        machine=machine_id(towers.backend),
        precision=precision,
    )


def _numpy(tokens: dict[str, Any]) -> dict[str, Any]:
    return {k: v.cpu().numpy() for k, v in tokens.items()}


def parity_for(encoder: Any, folder: Path, towers: Towers, precision: str = "fp32") -> Parity:
    """This machine's parity record for the export in ``folder`` and the runtime: read, or measured now and kept."""
    kind = towers.backend if precision == "fp32" else f"{towers.backend}-{precision}"
    path = folder / f"parity-{kind}-{machine_id(towers.backend)}.json"
    if path.is_file():
        try:
            return Parity(**_from_json(json.loads(path.read_text())))
        except (ValueError, TypeError, KeyError):
            pass  # unreadable: measure again
    parity = check_parity(encoder, towers, precision)
    try:
        _write_atomic(path, json.dumps(asdict(parity) | {"passed": parity.passed}, indent=2))
    except OSError:
        pass  # a read-only library: checked again next time
    return parity


def _from_json(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data[k] for k in Parity.__dataclass_fields__}


def quantise(folder: Path) -> dict[str, str]:
    """int8 copies of both towers next to them (dynamic quantisation: int8 weights, activations quantised
    per batch), made once, atomically; returns the file names to load."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing tip on the root logger
    files = {}
    for tower in ("vision", "text"):
        target = folder / f"{tower}.int8.onnx"
        if not target.is_file():
            scratch = folder / f".{tower}.int8.{os.getpid()}.onnx"
            quantize_dynamic(str(folder / f"{tower}.onnx"), str(scratch), weight_type=QuantType.QInt8)
            os.replace(scratch, target)
        files[f"{tower}_file"] = target.name
    return files


def prepare(encoder: Any, cache: Path, backend: str = "onnx", *, say: Callable[[str], None], precision: str = "fp32") -> Prepared:
    """The ``backend`` runtime's towers for ``encoder`` (exported and checked as needed), or why not."""
    if getattr(encoder, "naflex", False):
        return Prepared(None, "SigLIP 2 NaFlex models are not exported to ONNX by this version")
    try:
        folder = ensure_export(encoder, cache, say=say)
    except ExportFailed as err:
        return Prepared(None, str(err))
    except OSError as err:
        return Prepared(None, f"the export folder {cache} cannot be written ({err.strerror or err})")
    try:
        towers = TOWERS[backend](folder, **(quantise(folder) if precision == "int8" else {}))
        parity = parity_for(encoder, folder, towers, precision)
    except Exception as err:  # a runtime that cannot load the file: a broken or foreign cache entry
        return Prepared(None, f"{backend} could not run the exported model ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
    if not parity.passed:
        worst = min(parity.min_cosine_image, parity.min_cosine_text)
        return Prepared(None, f"its vectors differ from torch's on this machine (cosine {worst:.6f} < {parity.bar})", parity)
    return Prepared(towers, None, parity)
