"""Privacy charges record delta too (DESIGN §6.5: every release spends epsilon and delta).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dp_charges") as batch:
        batch.add_column(sa.Column("delta", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("dp_charges") as batch:
        batch.drop_column("delta")
