"""The README points to the one statement of each number instead of repeating it (it went stale once:
the index threshold and parameters it gave no longer matched the code)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _paragraph(text: str, start: str) -> str:
    at = text.index(start)
    end = text.find("\n\n", at)
    return text[at : end if end >= 0 else None]


def test_index_rule_points_to_the_module_docstring_and_repeats_no_number() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rule = _paragraph(readme, "**Index rule**")
    assert "search/ann.py" in rule
    assert not re.search(r"\d", rule.replace("search/ann.py", "")), rule
    intro = _paragraph(readme, "- **Exact where it counts**")
    assert not re.search(r"\d", intro), intro
    assert '"""' in (ROOT / "search" / "ann.py").read_text(encoding="utf-8").split("\n", 1)[0]  # the docstring exists
