"""Which runtime runs the model's two towers: torch (always there), ONNX Runtime (the ``[onnx]`` extra) or
OpenVINO (the ``[openvino]`` extra), the last two on the CPU.

* ``torch``: the checkpoint's own forward, as transformers runs it.
* ``onnx`` / ``openvino``: the towers exported to ONNX once per checkpoint and run by that runtime
  (``search.backends.onnx``). Asked for without its extra installed, it is refused with the pip line
  (``extra_hint``); asked for on a GPU, refused too (these are CPU runtimes). An export, a runtime or a
  parity check that fails falls back to torch with one line on stderr saying why.
* ``auto`` (the CLI's default): of the runtimes installed, the fastest whose parity check for this
  checkpoint passed on this machine and that was faster than torch there (both measured then, see
  ``search.backends.onnx``); torch, silently, when none is, or on a GPU.
  A process that answers one query and exits runs torch under ``auto`` (``for_one_query``).

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

BACKENDS = ("auto", "torch", "onnx", "openvino")
RUNTIMES = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}  # the backends that run the exported towers
NEEDS = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx")}  # onnx: torch.onnx.export needs it


def extra_hint(backend: str) -> str:
    return f"The {backend} backend needs {RUNTIMES[backend]}, which is not installed here: pip install 'viewfinder[{backend}]'."


EXTRA_HINT = extra_hint("onnx")


def installed(backend: str) -> bool:
    """The extra's packages are importable (looked up, not imported: that costs a second)."""
    return all(_importable(name) for name in NEEDS[backend])


def onnx_installed() -> bool:
    return installed("onnx")


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
        raise ModelLoadError(f"Unknown backend '{backend}': use auto, torch, onnx or openvino.")
    return backend


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def check_precision(precision: str, backend: str) -> str:
    if precision not in ("fp32", "int8"):
        raise ModelLoadError(f"Unknown precision '{precision}': use fp32 or int8.")
    if precision == "int8" and backend not in ("onnx", "auto"):
        raise ModelLoadError("--precision int8 runs on ONNX Runtime: pass --backend onnx (or auto).")
    return precision


def for_one_query(backend: str, precision: str = "fp32") -> str:
    """The backend for a process that answers one query and exits (the CLI's ``search``/``similar``
    without a server): ``auto`` runs torch there. ``Encoder.load`` loads the torch model in any case, so
    an exported runtime is a second model to open for a few texts or one image (ONNX Runtime's import
    and text session, OpenVINO's compile of the towers: docs/BENCHMARKS.md, "Cold CLI"), and a library
    indexed with torch would be exported first. A backend or int8 asked for by name is kept."""
    return "torch" if backend == "auto" and precision == "fp32" else backend


def attach(encoder: Any, backend: str, cache: Path | None, *, precision: str = "fp32", say: Callable[[str], None] = _say) -> str:
    """Give ``encoder`` the runtime ``backend`` names, when it can have it; returns the backend in use.
    ``precision`` int8: the export quantised (ONNX Runtime only), held to a cosine of 0.99 to torch."""
    check_precision(precision, check_backend(backend))
    if precision == "int8":
        backend = "onnx"  # the one runtime int8 was measured on (docs/BENCHMARKS.md)
    if backend == "torch":
        return "torch"
    if backend != "auto" and not installed(backend):
        raise ModelLoadError(extra_hint(backend))
    candidates = [backend] if backend != "auto" else [name for name in RUNTIMES if installed(name)]
    if not candidates:
        return "torch"
    if encoder.device != "cpu":
        if backend != "auto":
            raise ModelLoadError(f"The {backend} backend runs on the CPU: pass --device cpu, or --backend torch on the GPU.")
        return "torch"
    from search.backends import onnx as exported
    from search.settings import default_home

    root = cache or cache_root(default_home(os.environ))
    prepared = [exported.prepare(encoder, root, name, say=say, precision=precision) for name in candidates]
    usable = [p for p in prepared if p.runtime is not None and p.parity is not None]
    if not usable:
        say(f"viewfinder: running the model with torch, not {RUNTIMES[candidates[0]]}: {prepared[0].reason}.")
        return "torch"
    if backend == "auto":
        usable = [p for p in usable if p.faster]
        if not usable:
            return "torch"
    best = min(usable, key=lambda p: p.parity.runtime_ms)  # type: ignore[union-attr]
    encoder.runtime = best.runtime
    encoder.backend = best.runtime.backend  # type: ignore[union-attr]
    return encoder.backend
