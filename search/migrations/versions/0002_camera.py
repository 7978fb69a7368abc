"""Camera make and model (EXIF) per file, and the version of the metadata reader that filled a row.

``meta_version`` NULL marks rows written before this revision: the next index run reads their files'
metadata again (no re-embedding) and back-fills the camera columns.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("camera_make", sa.String(64)))
        batch.add_column(sa.Column("camera_model", sa.String(64)))
        batch.add_column(sa.Column("meta_version", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_column("meta_version")
        batch.drop_column("camera_model")
        batch.drop_column("camera_make")
