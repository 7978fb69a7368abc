"""One frozen settings object, read once from the environment and overridden with ``dataclasses.replace``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "openai/clip-vit-base-patch32"


def resolve_model_id(model: str) -> str:
    """A local folder is identified by its absolute path, a Hub model by its id."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def default_home(environ: Mapping[str, str]) -> Path:
    """``$VIEWFINDER_HOME``, else ``$XDG_DATA_HOME/viewfinder``, else ``~/.local/share/viewfinder``."""
    if environ.get("VIEWFINDER_HOME"):
        return Path(environ["VIEWFINDER_HOME"]).expanduser()
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "viewfinder"


@dataclass(frozen=True, slots=True)
class Settings:
    home: Path
    model: str | None = None  # None: the library's own model, or DEFAULT_MODEL for a new library
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int | None = None  # None: chosen for the device
    flat_below: int | None = None  # None: search.ann.FLAT_BELOW (exact index below this many images)
    ondisk_above: int | None = None  # None: search.ann.ONDISK_ABOVE (on-disk IVF-PQ lists from this many images)
    backend: str = "auto"  # auto | torch | onnx | openvino: the runtime of the model's towers (search.backends)
    precision: str = "fp32"  # fp32 | int8 (int8: ONNX Runtime only, search.backends)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            home=default_home(env),
            model=env.get("VIEWFINDER_MODEL") or None,
            device=env.get("VIEWFINDER_DEVICE", "auto"),
            flat_below=int(env["VIEWFINDER_FLAT_BELOW"]) if env.get("VIEWFINDER_FLAT_BELOW") else None,
            ondisk_above=int(env["VIEWFINDER_ONDISK_ABOVE"]) if env.get("VIEWFINDER_ONDISK_ABOVE") else None,
            backend=env.get("VIEWFINDER_BACKEND") or "auto",
            precision=env.get("VIEWFINDER_PRECISION") or "fp32",
        )
