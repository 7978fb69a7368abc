"""The CLIP vision forward alone (``get_image_features``, batch 32, CPU), across transformers versions and
loading choices, timed in alternation so that a busy machine slows every contender alike.

    python bench/vision_forward.py --model /tmp/vitb32 --json
    python bench/vision_forward.py --model /tmp/vitb32 --json \\
        --pythons .venv/bin/python,/tmp/v457/bin/python          # transformers 5.x vs 4.57

Each interpreter in ``--pythons`` runs this file as a worker that loads the model once per variant and
then times one forward pass each time the driver asks; the driver asks the (python, variant) pairs in
turn, ``--reps`` times, so the contenders' passes are interleaved second by second. Works with
transformers 4.57 and 5.x. Variants:

* ``sdpa`` / ``eager``: ``CLIPModel.from_pretrained(..., attn_implementation=...)``;
* ``*_copied``: the same after every parameter and buffer was copied into fresh memory
  (``param.data = param.data.clone()``), i.e. not views of the memory-mapped checkpoint.

Reports median and min ms per pass, each contender's median ratio to the first one over the rounds
(pass i of B / pass i of A: a paired ratio), and facts that could differ between versions: torch
threads, default dtype, weights that are views of the file mapping, 64-byte alignment, and (``--ops``)
the aten operators one pass runs, from torch.profiler.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any


def load(model_dir: str, variant: str) -> Any:
    import torch
    from transformers import CLIPModel

    attn = variant.split("_")[0]
    model = CLIPModel.from_pretrained(model_dir, attn_implementation=attn, dtype=torch.float32).eval()
    if variant.endswith("_copied"):
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                tensor.data = tensor.data.clone()
    return model


def _file_mappings() -> list[tuple[int, int]]:
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5].endswith(".safetensors"):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            ranges.append((lo, hi))
    return ranges


def weight_facts(model: Any) -> dict[str, int]:
    matrices = [p for p in model.vision_model.parameters() if p.dim() == 2]
    maps = _file_mappings()
    return {
        "params": sum(1 for _ in model.parameters()),
        "params_in_file_mapping": sum(any(lo <= p.data_ptr() < hi for lo, hi in maps) for p in model.parameters()),
        "vision_matrices": len(matrices),
        "vision_matrices_64b_aligned": sum(p.data_ptr() % 64 == 0 for p in matrices),
    }


def features(model: Any, pixels: Any) -> Any:
    out = model.get_image_features(pixel_values=pixels)
    return out if hasattr(out, "shape") else out.pooler_output  # 4.57: a tensor; 5.x: an output object


def op_counts(model: Any, pixels: Any) -> dict[str, int]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        features(model, pixels)
    counts: Counter[str] = Counter()
    for event in prof.events():
        if event.name.startswith("aten::"):
            counts[event.name] += 1
    return dict(sorted(counts.items()))


def worker(model_dir: str, variants: list[str], batch: int, ops: bool) -> None:
    """Load, say what we are, then time one pass of the variant named on each stdin line."""
    import torch
    import transformers

    torch.manual_seed(0)
    pixels = torch.randn(batch, 3, 224, 224)
    models = {v: load(model_dir, v) for v in variants}
    with torch.inference_mode():
        first = features(models[variants[0]], pixels)
        diff = {v: float((features(m, pixels) - first).abs().max()) for v, m in models.items()}  # + warm-up
        facts = {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "default_dtype": str(torch.get_default_dtype()),
            "attn_implementation": {v: m.config._attn_implementation for v, m in models.items()},
            "max_abs_diff_vs_first_variant": diff,
            "weights": {v: weight_facts(m) for v, m in models.items()},
            "features_sum": float(first.double().sum()),
        }
        if ops:
            facts["aten_ops"] = {v: op_counts(m, pixels) for v, m in models.items()}
        print(json.dumps(facts), flush=True)
        for line in sys.stdin:
            model = models[line.strip()]
            started = time.perf_counter()
            features(model, pixels)
            print(json.dumps({"ms": (time.perf_counter() - started) * 1000}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="CLIP vision forward time, versions and variants interleaved.")
    parser.add_argument("--model", required=True)
    parser.add_argument("--pythons", default=sys.executable, help="comma-separated interpreters to compare")
    parser.add_argument("--variants", default="sdpa,eager,sdpa_copied")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=12, help="timed passes per contender")
    parser.add_argument("--ops", action="store_true", help="also list the aten ops of one pass")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    if args.worker:
        worker(args.model, variants, args.batch, args.ops)
        return

    procs, facts = {}, {}
    for python in args.pythons.split(","):
        cmd = [python, __file__, "--worker", "--model", args.model, "--variants", args.variants, "--batch", str(args.batch)]
        proc = subprocess.Popen([*cmd, *(["--ops"] if args.ops else [])], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs[python] = proc
    for python, proc in procs.items():  # workers load in parallel; wait for each to be ready
        assert proc.stdout is not None
        facts[python] = json.loads(proc.stdout.readline())
    contenders = [(p, v) for p in procs for v in variants]
    times: dict[tuple[str, str], list[float]] = {c: [] for c in contenders}
    for rep in range(args.reps):
        order = contenders if rep % 2 == 0 else contenders[::-1]  # ABBA: no contender always goes first
        for python, variant in order:
            proc = procs[python]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(variant + "\n")
            proc.stdin.flush()
            times[(python, variant)].append(json.loads(proc.stdout.readline())["ms"])
    for proc in procs.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()

    def name(c: tuple[str, str]) -> str:
        return f"transformers {facts[c[0]]['transformers']} {c[1]}"

    base = times[contenders[0]]
    result = {
        "bench": "vision_forward",
        "batch": args.batch,
        "reps": args.reps,
        "median_ms": {name(c): round(statistics.median(t), 1) for c, t in times.items()},
        "min_ms": {name(c): round(min(t), 1) for c, t in times.items()},
        "paired_ratio_to_first": {
            name(c): round(statistics.median(b / a for a, b in zip(base, t, strict=True)), 3) for c, t in times.items()
        },
        "facts": {facts[p]["transformers"]: facts[p] for p in procs},
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
