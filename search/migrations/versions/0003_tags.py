"""Zero-shot tags: the library's label set (one text vector per label) and each image's labels above the
threshold with their scores. The rule that made them (threshold, top, logit scale, prompts) is in
``meta['tagging']``; see ``search/tags.py``.

``tags.faiss_id`` points at ``files.faiss_id``: a changed or renamed file gets a new FAISS id, so its old
tags stop matching any row (and are swept by the next ``viewfinder tag``), and the new id is tagged in
the same transaction that commits it.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("vector", sa.LargeBinary, nullable=False),  # float32, the model's dimension, unit length
    )
    op.create_table(
        "tags",
        sa.Column("faiss_id", sa.BigInteger, primary_key=True),
        sa.Column("label_id", sa.Integer, sa.ForeignKey("labels.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("score", sa.Float, nullable=False),
    )
    op.create_index("ix_tags_label_score", "tags", ["label_id", "score"])


def downgrade() -> None:
    op.drop_index("ix_tags_label_score", "tags")
    op.drop_table("tags")
    op.drop_table("labels")
