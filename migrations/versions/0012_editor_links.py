"""Vary (Region) editor links: who each was given to, for which image, and when used

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "editor_links",
        sa.Column("nonce", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=16), nullable=False),
        sa.Column("image", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("user_name", sa.String(length=100), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("role_ids", sa.JSON(), nullable=False),
        sa.Column("nsfw_channel", sa.Boolean(), nullable=False),
        sa.Column("issued_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("nonce"),
    )
    with op.batch_alter_table("editor_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_editor_links_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("editor_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_editor_links_user_id"))
    op.drop_table("editor_links")
