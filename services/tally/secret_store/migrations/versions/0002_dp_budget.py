"""Privacy budgets: a dataset's total epsilon, and the epsilon each job spent on it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tally.common.db import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("dp_budget", sa.Float(), nullable=True))
    op.create_table(
        "dp_charges",
        sa.Column(
            "dataset_id",
            sa.String(36),
            sa.ForeignKey(
                "datasets.id", ondelete="CASCADE", name=op.f("fk_dp_charges_dataset_id_datasets")
            ),
            nullable=False,
        ),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("identity", sa.String(128), nullable=False),
        sa.Column("program", sa.String(128), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.Column("charged_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("dataset_id", "job_id", name=op.f("pk_dp_charges")),
    )


def downgrade() -> None:
    op.drop_table("dp_charges")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("dp_budget")
