"""Cancel as data: a running job's stop request, read by whichever worker holds the job

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancel_requested_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("cancel_requested_by", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("cancel_refund", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("cancel_refund")
        batch_op.drop_column("cancel_requested_by")
        batch_op.drop_column("cancel_requested_at")
