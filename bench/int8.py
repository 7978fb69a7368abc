"""Would ``--precision int8`` be worth having? Dynamic int8 quantisation of the exported towers
(``onnxruntime.quantization.quantize_dynamic``, int8 weights, activations quantised per batch) against
the fp32 export, on the same machine in the same run.

    python bench/int8.py --model /tmp/vitb32 --json
    python bench/int8.py --model tests/data/fashion-clip --heldout tests/data/fashion-heldout --json

Reports the lowest cosine between int8 and fp32 vectors (and between fp32 ONNX and torch) over the
parity check set (``search.backends.onnx``), every picture under ``data/`` and the query texts of
``bench/query.py``; the time of a vision batch of 32 and of one short text for both; and, with
``--heldout`` (a trained model and its held-out class folders, ``tests/semantic/measure.py``), recall@1/5/10
and zero-shot accuracy with each. The bar for exposing int8: cosine >= 0.99 to fp32 and recall within
one point (docs/BENCHMARKS.md, "A faster CPU runtime").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import emit, log, machine
from PIL import Image
from query import QUERIES

from search.backends import onnx as ort_backend
from search.encoder import Encoder

ROOT = Path(__file__).resolve().parents[1]
COSINE_BAR = 0.99


def data_images() -> list[Image.Image]:
    out = []
    for path in sorted((ROOT / "data").rglob("*")):
        try:
            with Image.open(path) as img:
                out.append(img.convert("RGB"))
        except (OSError, ValueError):
            continue
    return out


def quantise(folder: Path) -> ort_backend.Towers:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for tower in ("vision", "text"):
        target = folder / f"{tower}.int8.onnx"
        if not target.is_file():
            quantize_dynamic(str(folder / f"{tower}.onnx"), str(target), weight_type=QuantType.QInt8)
    return ort_backend.OrtTowers(folder, vision_file="vision.int8.onnx", text_file="text.int8.onnx")


def median_ms(run: Any, times: int) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return round(1000 * statistics.median(samples), 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--heldout", type=Path, help="class folders of held-out images (a trained model's)")
    parser.add_argument("--onnx-cache", type=Path, default=Path(tempfile.gettempdir()) / "viewfinder-bench-onnx")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    torch_enc = Encoder.load(args.model, "cpu")
    fp32 = Encoder.load(args.model, "cpu", backend="onnx", cache=args.onnx_cache)
    if fp32.backend != "onnx":
        raise SystemExit("the ONNX export is not available (see the line above)")
    log("quantising")
    started = time.perf_counter()
    int8 = quantise(fp32.runtime.folder)
    quantise_s = time.perf_counter() - started

    pixels = np.stack([fp32.preprocess(img) for img in ort_backend.check_images() + data_images()])
    texts = list(ort_backend.PARITY_TEXTS) + QUERIES
    tokens = {k: v.numpy() for k, v in fp32.tokens(texts).items()}
    vec = {
        "torch": (torch_enc.encode_pixels(pixels), torch_enc.encode_text(texts)),
        "fp32": (fp32.encode_pixels(pixels), fp32.encode_text(texts)),
        "int8": (int8.image(pixels), int8.text(tokens)),
    }
    result: dict[str, Any] = {
        "bench": "int8",
        "vectors": {"images": len(pixels), "texts": len(texts)},
        "min_cosine": {
            "onnx_fp32_vs_torch": {"image": ort_backend.min_cosine(vec["fp32"][0], vec["torch"][0]), "text": ort_backend.min_cosine(vec["fp32"][1], vec["torch"][1])},
            "int8_vs_fp32": {"image": ort_backend.min_cosine(vec["int8"][0], vec["fp32"][0]), "text": ort_backend.min_cosine(vec["int8"][1], vec["fp32"][1])},
        },
        "quantise_s": round(quantise_s, 1),
    }
    h, w = fp32.preprocess.out_size
    batch = np.random.default_rng(0).standard_normal((32, 3, h, w), dtype=np.float32)
    short = {k: v.numpy() for k, v in fp32.tokens([QUERIES[1]]).items()}
    log("timing")
    result["vision_batch32_ms"] = {"fp32": median_ms(lambda: fp32.runtime.image(batch), args.reps), "int8": median_ms(lambda: int8.image(batch), args.reps)}
    result["text_ms"] = {"fp32": median_ms(lambda: fp32.runtime.text(short), 10 * args.reps), "int8": median_ms(lambda: int8.text(short), 10 * args.reps)}

    if args.heldout:
        sys.path.insert(0, str(ROOT / "tests" / "semantic"))
        import measure

        paths, labels = measure.held_out(args.heldout)
        from search.images import decode_image

        held = np.stack([fp32.preprocess(decode_image(p)[0]) for p in paths])
        names = list(measure.QUERIES.values())
        name_tokens = {k: v.numpy() for k, v in fp32.tokens(names).items()}
        figures = {}
        for label, (images, class_texts) in {
            "torch": (torch_enc.encode_pixels(held), torch_enc.encode_text(names)),
            "onnx_fp32": (fp32.encode_pixels(held), fp32.encode_text(names)),
            "onnx_int8": (int8.image(held), int8.text(name_tokens)),
        }.items():
            f = measure.text_figures(images, labels, class_texts)
            figures[label] = {k: round(v, 4) for k, v in f.items() if k in ("R@1", "R@5", "R@10", "zero-shot top-1")}
        result["heldout"] = figures
        result["recall_drop_points_int8"] = {k: round(100 * (figures["onnx_fp32"][k] - figures["onnx_int8"][k]), 2) for k in ("R@1", "R@5", "R@10")}
    worst = min(result["min_cosine"]["int8_vs_fp32"].values())
    result["int8_meets_cosine_bar"] = bool(worst >= COSINE_BAR)
    result["machine"] = machine()
    emit(result, args.json)


if __name__ == "__main__":
    main()
