"""Job tokens: the credentials of one job's workers, by digest (tally.tuples.job_tokens).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
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
    op.create_table(
        "tuple_job_tokens",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(200), nullable=False),
        sa.Column("issued_by", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_tuple_job_tokens")),
    )
    op.create_index(op.f("ix_tuple_job_tokens_job_id"), "tuple_job_tokens", ["job_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_tuple_job_tokens_job_id"), table_name="tuple_job_tokens")
    op.drop_table("tuple_job_tokens")
