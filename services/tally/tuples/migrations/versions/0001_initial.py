"""Initial schema: tuple chunks, reservations and the served high-water marks.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tally.common.db import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tuple_chunks",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reservation_id", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tuple_chunks")),
    )
    for column in ("kind", "state", "reservation_id"):
        op.create_index(op.f(f"ix_tuple_chunks_{column}"), "tuple_chunks", [column])

    op.create_table(
        "tuple_reservations",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("session", sa.String(64), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tuple_reservations")),
    )
    for column in ("job_id", "state"):
        op.create_index(op.f(f"ix_tuple_reservations_{column}"), "tuple_reservations", [column])

    op.create_table(
        "tuple_served",
        sa.Column("reservation_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("reservation_id", "kind", name=op.f("pk_tuple_served")),
    )


def downgrade() -> None:
    op.drop_table("tuple_served")
    for column in ("job_id", "state"):
        op.drop_index(op.f(f"ix_tuple_reservations_{column}"), table_name="tuple_reservations")
    op.drop_table("tuple_reservations")
    for column in ("kind", "state", "reservation_id"):
        op.drop_index(op.f(f"ix_tuple_chunks_{column}"), table_name="tuple_chunks")
    op.drop_table("tuple_chunks")
