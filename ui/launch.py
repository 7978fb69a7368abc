"""How ``viewfinder ui`` starts Streamlit, and how the Streamlit script learns its library folder."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from search.settings import Settings

APP_SCRIPT = Path(__file__).resolve().with_name("app.py")
MAX_UPLOAD_MB = 50


def streamlit_command(home: Path, *, port: int = 8501, host: str = "127.0.0.1") -> list[str]:
    """The argv that serves ``ui/app.py`` on ``home`` (headless: no browser is opened, no usage stats)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT),
        "--server.port", str(port),
        "--server.address", host,
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",  # a served app does not reload itself when its source changes
        "--server.maxUploadSize", str(MAX_UPLOAD_MB),
        "--client.toolbarMode", "viewer",
        "--",
        "--home", str(Path(home).expanduser().resolve()),
    ]  # fmt: skip


def parse_home(argv: Sequence[str]) -> Path:
    """``--home DIR`` from the script's arguments, else ``$VIEWFINDER_HOME`` or the default library."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--home", type=Path, default=None)
    known, _ = parser.parse_known_args(list(argv))
    return (known.home or Settings.from_env().home).expanduser()
