"""job lifecycle: received commands, attempts, batches, priority lane, indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "received_commands",
        sa.Column("interaction_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("command", sa.String(length=64), nullable=False),
        sa.Column(
            "state",
            sa.Enum("received", "handled", name="commandstate", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("user_name", sa.String(length=100), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("role_ids", sa.JSON(), nullable=False),
        sa.Column("token", sa.Text(), nullable=True),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("upload_limit", sa.BigInteger(), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("handled_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("interaction_id"),
    )
    with op.batch_alter_table("received_commands", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_received_commands_state"), ["state"], unique=False)

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("batch_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("upload_limit", sa.BigInteger(), nullable=True))
        batch_op.create_index(
            "ix_jobs_model_state_finished", ["model", "state", "finished_at"], unique=False
        )
        batch_op.create_index(
            "ix_jobs_state_lane_created", ["state", "lane", "created_at"], unique=False
        )
        batch_op.create_index("ix_jobs_user_state", ["user_id", "state"], unique=False)

    with op.batch_alter_table("usage_ledger", schema=None) as batch_op:
        batch_op.create_index("ix_usage_ledger_user_at", ["user_id", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usage_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_ledger_user_at")

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_user_state")
        batch_op.drop_index("ix_jobs_state_lane_created")
        batch_op.drop_index("ix_jobs_model_state_finished")
        batch_op.drop_column("upload_limit")
        batch_op.drop_column("batch_id")
        batch_op.drop_column("attempts")

    with op.batch_alter_table("received_commands", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_received_commands_state"))

    op.drop_table("received_commands")
