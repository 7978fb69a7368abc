"""Alembic environment: always run programmatically by ``search.schema.migrate`` on an open connection."""

from alembic import context

from search.catalog import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
