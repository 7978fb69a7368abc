"""Which runtime runs the model's two towers: torch (always there) or ONNX Runtime (CPU, the ``[onnx]`` extra).

* ``torch``: the checkpoint's own forward, as transformers runs it.
* ``onnx``: the towers exported once per checkpoint and run by ONNX Runtime (``search.backends.onnx``).
  Asked for without the extra installed, it is refused with the pip line (``EXTRA_HINT``); asked for on a
  GPU, refused too (the runtime here is the CPU one). An export, a session or a parity check that fails
  falls back to torch with one line on stderr saying why.
* ``auto`` (the CLI's default): ``onnx`` when the extra is installed, the model runs on the CPU, and this
  machine's parity check for this checkpoint passed with ONNX Runtime the faster of the two (both
  measured then, see ``search.backends.onnx``); else torch, silently.

The backend never changes a library's vectors beyond the parity bar, so a library indexed with one is
searched with the other. Measurements: docs/BENCHMARKS.md, "A faster CPU runtime".
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from search.errors import ModelLoadError

BACKENDS = ("auto", "torch", "onnx")
EXTRA_HINT = "The onnx backend needs ONNX Runtime, which is not installed here: pip install 'viewfinder[onnx]'."


def onnx_installed() -> bool:
    """Both packages of the extra are importable (looked up, not imported: that costs a second)."""
    return all(_importable(name) for name in ("onnxruntime", "onnx"))


def _importable(name: str) -> bool:
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[name] is None (imports of it are blocked)
        return False


def cache_root(home: Path) -> Path:
    """Where a library keeps its exported models: next to the library, one folder per checkpoint."""
    return Path(home) / "onnx"


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ModelLoadError(f"Unknown backend '{backend}': use auto, torch or onnx.")
    return backend


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def attach(encoder: Any, backend: str, cache: Path | None, *, say: Callable[[str], None] = _say) -> str:
    """Give ``encoder`` the runtime ``backend`` names, when it can have it; returns the backend in use."""
    if check_backend(backend) == "torch":
        return "torch"
    if not onnx_installed():
        if backend == "onnx":
            raise ModelLoadError(EXTRA_HINT)
        return "torch"
    if encoder.device != "cpu":
        if backend == "onnx":
            raise ModelLoadError("The onnx backend runs on the CPU: pass --device cpu, or --backend torch on the GPU.")
        return "torch"
    from search.backends import onnx as ort_backend
    from search.settings import default_home

    prepared = ort_backend.prepare(encoder, cache or cache_root(default_home(os.environ)), say=say)
    if prepared.runtime is None:
        say(f"viewfinder: running the model with torch, not ONNX Runtime: {prepared.reason}.")
        return "torch"
    if backend == "auto" and not prepared.faster:
        return "torch"
    encoder.runtime = prepared.runtime
    encoder.backend = "onnx"
    return "onnx"
