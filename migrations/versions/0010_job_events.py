"""Events across processes: a running job's progress as row data, and the claim on
delivering a finished job's answer

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("progress_step", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("progress_total", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("preview", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("delivery_claimed_by", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("delivery_claimed_until", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("delivery_claimed_until")
        batch_op.drop_column("delivery_claimed_by")
        batch_op.drop_column("preview")
        batch_op.drop_column("progress_total")
        batch_op.drop_column("progress_step")
