"""The result cache: a job's result key, and the identical job whose result answers it

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("cached_from", sa.String(length=16), nullable=True))
        batch_op.create_index("ix_jobs_user_result_key", ["user_id", "result_key"], unique=False)
        batch_op.create_index("ix_jobs_cached_from", ["cached_from"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_cached_from")
        batch_op.drop_index("ix_jobs_user_result_key")
        batch_op.drop_column("cached_from")
        batch_op.drop_column("result_key")
