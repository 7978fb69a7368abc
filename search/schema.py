"""Schema versioning: Alembic revisions, applied on open; a catalog from a newer release is refused."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine

from search.errors import SchemaTooNew

MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, *, where: str) -> str:
    """Bring the catalog to the newest schema this release knows; return the revision."""
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
