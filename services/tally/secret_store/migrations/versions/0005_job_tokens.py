"""Job-scoped worker credentials: one row per token, holding its digest and scope.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tally.common.db import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_tokens",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("issued_by", sa.String(128), nullable=False),
        sa.Column("identity", sa.String(128), nullable=False),
        sa.Column("program", sa.String(128), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_job_tokens")),
    )
    for column in ("job_id", "expires_at"):
        op.create_index(op.f(f"ix_job_tokens_{column}"), "job_tokens", [column])


def downgrade() -> None:
    op.drop_table("job_tokens")
