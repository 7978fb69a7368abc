"""Imports the command modules that register themselves on ``ui.clikit.app`` (one line each)."""

from __future__ import annotations
from ui import cmd_tag  # noqa: F401
from ui import cmd_serve  # noqa: F401
from ui import cmd_search  # noqa: F401
from ui import cmd_dupes  # noqa: F401
from ui import cmd_eval  # noqa: F401
from ui import cmd_forget  # noqa: F401
