"""What a claim's scheduler reads of a job's spec, as columns: the batch key's digest
and the image count (bot.store.models.Job.batch_key), so a claim parses no specs;
computed here from the spec of every row that waits or runs (a running job may wait
again), as the bot computes them

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.jobs.spec import JobSpec, stored_batch_key

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_jobs = sa.table(
    "jobs",
    sa.column("id", sa.String),
    sa.column("state", sa.String),
    sa.column("spec", sa.JSON),
    sa.column("batch_key", sa.String),
    sa.column("image_count", sa.Integer),
)


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("image_count", sa.Integer(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_jobs.c.id, _jobs.c.spec).where(_jobs.c.state.in_(["queued", "running"]))
    )
    for job_id, stored in rows.all():
        spec = JobSpec.model_validate(stored)
        bind.execute(
            _jobs.update()
            .where(_jobs.c.id == job_id)
            .values(batch_key=stored_batch_key(spec), image_count=spec.count)
        )


def downgrade() -> None:
    # Not a batch (on SQLite a copy of the table, whose drop the outputs' foreign keys
    # refuse once jobs have outputs): both databases drop a plain column in place.
    op.drop_column("jobs", "image_count")
    op.drop_column("jobs", "batch_key")
