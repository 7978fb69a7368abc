"""The lower bounds that pyproject.toml declares, as pip constraints, for CI's floors job (``.ci/floors``).

``python tests/floors.py`` prints one ``name==floor`` line per runtime dependency (its ``>=`` bound) and
refuses a dependency that declares none or an interpreter older than ``requires-python``. Installing the
project with these constraints gives the oldest environment the project claims to support; the floors
job runs a fast part of the suite there so the claims stay true. ``tests/test_floors.py`` ties each
floor to the feature of that release the code uses.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")
_LOWER = re.compile(r">=\s*([0-9][0-9A-Za-z.]*)")


def _project(pyproject: Path = PYPROJECT) -> dict:
    return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def floors(pyproject: Path = PYPROJECT) -> dict[str, str]:
    """{normalised name: lower bound} of the runtime dependencies."""
    out: dict[str, str] = {}
    for requirement in _project(pyproject)["dependencies"]:
        match = _NAME.match(requirement.split(";")[0])
        lower = _LOWER.search(match.group(2)) if match else None
        if match is None or lower is None:
            raise ValueError(f"{requirement!r} declares no '>=' lower bound")
        out[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = lower.group(1)
    return out


def python_floor(pyproject: Path = PYPROJECT) -> str:
    lower = _LOWER.search(_project(pyproject)["requires-python"])
    if lower is None:
        raise ValueError("requires-python declares no '>=' lower bound")
    return lower.group(1)


def main() -> int:
    low = python_floor()
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if version_tuple(running) < version_tuple(low):
        print(f"Python {running} is older than requires-python >={low}", file=sys.stderr)
        return 1
    if version_tuple(running) != version_tuple(low):
        print(f"note: Python {running} runs the floors job; requires-python says >={low}", file=sys.stderr)
    for name, version in floors().items():
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
