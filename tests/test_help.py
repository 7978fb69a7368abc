"""``--help`` as a user reads it: every command's help, rendered by the Typer that pyproject pins at a
fixed terminal width, shows each option's whole help text (Rich reads ``[...]`` as markup and used to
drop the defaults) and no type labels such as ``<bool>`` or ``{paths}``.

The commands are read from the app, so a command that a ``ui/cmd_*.py`` module registers is covered too.
"""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from search.settings import DEFAULT_MODEL
from ui.cli import app

ENV = {"COLUMNS": "100", "TERMINAL_WIDTH": "100", "NO_COLOR": "1"}
TYPE_LABEL = re.compile(r"<[A-Za-z_][\w\[\], |]*>|\{\w[^}]*\}")


def _command_names() -> list[str]:
    return sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def _render(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env=ENV, prog_name="viewfinder")
    assert result.exit_code == 0, result.output
    return result.output


def _squash(text: str) -> str:
    """The text with whitespace and the panels' box characters removed, so wrapped lines join up."""
    return re.sub(r"[\s│╭╮╰╯─]", "", text)


def test_top_level_help_lists_every_command() -> None:
    out = _render()
    for name in _command_names():
        assert re.search(rf"^\W*{re.escape(name)}\s", out, re.MULTILINE), f"{name} missing from:\n{out}"
    assert not TYPE_LABEL.search(out), out


@pytest.mark.parametrize("name", _command_names())
def test_every_option_shows_its_whole_help(name: str) -> None:
    out = _render(name)
    squashed = _squash(out)
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    for param in command.params:
        text = getattr(param, "help", None)
        if text:
            assert _squash(text) in squashed, f"{name} {param.name}: {text!r} not in:\n{out}"
        default = getattr(param, "default", None)
        shown = getattr(param, "show_default", True) is not False
        if shown and default not in (None, False, True) and not isinstance(default, (list, tuple)):
            assert f"default:{_squash(str(default))}" in squashed, f"{name} {param.name}: default {default!r} not shown"
    labels = TYPE_LABEL.findall(out)
    assert not labels, f"{name}: odd labels {labels} in:\n{out}"


def test_defaults_that_live_in_the_help_text() -> None:
    """Defaults computed at run time are written in the help; these are the ones a new user asks about."""
    index = _squash(_render("index"))
    for expected in (
        "$VIEWFINDER_HOME",
        "~/.local/share/viewfinder",
        DEFAULT_MODEL,
        "default:32onCPU,256onCUDA",  # --batch-size
        "default:CPUcount,atmost8",  # --workers
        "default:auto",  # --device
    ):
        assert _squash(expected) in index, expected
    search = _squash(_render("search"))
    assert "default:20" in search and "~/.local/share/viewfinder" in search
    usage = _render("index").strip().splitlines()[0]
    assert "PATH..." in usage and "{" not in usage, usage
