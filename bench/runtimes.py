"""Torch vs ONNX Runtime vs OpenVINO on the same exported towers, forward passes alone, interleaved.

    python bench/runtimes.py --model /tmp/vitb32 --json      # needs onnxruntime (and openvino to compare)

The ONNX files are the backend's own export (``search.backends.onnx``, cached under ``--onnx-cache``).
OpenVINO reads the same files (``openvino.Core().compile_model``, CPU plugin, latency hint, f32: on a CPU
with AVX-512 BF16 its default precision is bf16, whose vectors missed the parity bar). Each round times
one vision batch (``--batch``) and ``--texts`` single short texts on every runtime in turn, the order
reversed every other round, so a busy machine slows them alike. Reports medians, each runtime's paired
median ratio to torch, the lowest cosine to torch, and the time to get a runtime ready (session
creation / compilation) in this process.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import emit, log, machine

from search.backends import onnx as ort_backend
from search.encoder import Encoder


def openvino_towers(folder: Path) -> tuple[Any, Any]:
    import openvino

    core = openvino.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    return core.compile_model(str(folder / "vision.onnx"), "CPU", config), core.compile_model(str(folder / "text.onnx"), "CPU", config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--texts", type=int, default=10, help="single-text passes per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--onnx-cache", type=Path, default=Path(tempfile.gettempdir()) / "viewfinder-bench-onnx")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    torch_enc = Encoder.load(args.model, "cpu")
    onnx_enc = Encoder.load(args.model, "cpu", backend="onnx", cache=args.onnx_cache)
    if onnx_enc.backend != "onnx":
        raise SystemExit("the ONNX export is not available (see the line above)")
    folder = onnx_enc.runtime.folder
    h, w = torch_enc.preprocess.out_size
    pixels = np.random.default_rng(0).standard_normal((args.batch, 3, h, w), dtype=np.float32)
    tokens = {k: v.numpy() for k, v in torch_enc.tokens(["a red bicycle in the snow"]).items()}
    names = list(tokens)

    ready: dict[str, float] = {}
    started = time.perf_counter()
    ort = ort_backend.OrtTowers(folder)
    ort.session("vision"), ort.session("text")
    ready["onnxruntime"] = time.perf_counter() - started
    vision = {
        "torch": lambda: torch_enc.encode_pixels(pixels),
        "onnxruntime": lambda: ort.image(pixels),
    }
    text = {
        "torch": lambda: torch_enc.encode_text(["a red bicycle in the snow"]),
        "onnxruntime": lambda: ort.text(tokens),
    }
    try:
        started = time.perf_counter()
        ov_vision, ov_text = openvino_towers(folder)
        ready["openvino"] = time.perf_counter() - started
        vision["openvino"] = lambda: ort_backend.unit_rows(ov_vision(pixels)[ov_vision.output(0)])
        text["openvino"] = lambda: ort_backend.unit_rows(ov_text([tokens[n] for n in names])[ov_text.output(0)])  # export order
    except ImportError:
        log("openvino is not installed: comparing torch and ONNX Runtime only")

    reference = (vision["torch"](), text["torch"]())
    cosine = {name: min(ort_backend.min_cosine(vision[name](), reference[0]), ort_backend.min_cosine(text[name](), reference[1])) for name in vision}
    times: dict[str, dict[str, list[float]]] = {"vision": {n: [] for n in vision}, "text": {n: [] for n in text}}
    log(f"timing {args.rounds} rounds")
    for r in range(args.rounds):
        order = list(vision) if r % 2 == 0 else list(vision)[::-1]
        for name in order:
            started = time.perf_counter()
            vision[name]()
            times["vision"][name].append(time.perf_counter() - started)
            for _ in range(args.texts):
                started = time.perf_counter()
                text[name]()
                times["text"][name].append(time.perf_counter() - started)

    def paired(kind: str, name: str) -> float:
        return round(statistics.median(b / a for a, b in zip(times[kind]["torch"], times[kind][name], strict=True)), 3)

    result = {
        "bench": "runtimes",
        "batch": args.batch,
        "rounds": args.rounds,
        "vision_median_ms": {n: round(1000 * statistics.median(t), 1) for n, t in times["vision"].items()},
        "text_median_ms": {n: round(1000 * statistics.median(t), 2) for n, t in times["text"].items()},
        "vision_ratio_to_torch": {n: paired("vision", n) for n in vision},
        "text_ratio_to_torch": {n: paired("text", n) for n in text},
        "min_cosine_to_torch": {n: round(c, 7) for n, c in cosine.items()},
        "ready_s": {n: round(s, 2) for n, s in ready.items()},
        "machine": machine(),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
