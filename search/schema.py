"""Schema versioning: Alembic revisions, applied on open; a catalog from a newer release is refused."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from search.errors import SchemaTooNew

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
_REVISION = re.compile(r"^(down_)?revision\s*(?::[^=]*)?=\s*(?:[\"']([^\"']+)[\"']|None)", re.MULTILINE)


@functools.cache
def head_from_files() -> str | None:
    """The head revision read from the revision files' ``revision``/``down_revision`` lines, without
    importing Alembic (a third of a cold ``viewfinder info``): the revision no other one revises. None
    when the files do not give exactly one head (then ``migrate`` asks Alembic)."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for down, name in _REVISION.findall(path.read_text(encoding="utf-8")):
            if name:
                (revised if down else revisions).add(name)
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None


def stored_revision(engine: Engine) -> str | None:
    """The catalog's Alembic revision by plain SQL; None for a new catalog."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError):  # no alembic_version table yet (ProgrammingError: PostgreSQL)
        return None


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, *, where: str) -> str:
    """Bring the catalog to the newest schema this release knows; return the revision."""
    head = head_from_files()
    if head is not None and stored_revision(engine) == head:
        return head  # the common case, answered without importing Alembic
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    cfg = _config()
    script = ScriptDirectory.from_config(cfg)
    head = head_revision()
    with engine.begin() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return head
        if current is not None:
            try:
                script.get_revision(current)
            except CommandError:
                raise SchemaTooNew(
                    f"The catalog in {where} was written by a newer Viewfinder (schema {current}); "
                    "upgrade Viewfinder to open it."
                ) from None
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return head
