"""Initial schema: datasets, columns, shares, tags, grants, input masks.

Revision ID: 0001
Revises:
Create Date: 2026-11-20
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
        "datasets",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(400), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("partitions", sa.Integer(), nullable=False),
        sa.Column("spec_sha256", sa.String(64), nullable=False),
        sa.Column("mask_id", sa.String(36), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("committed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
    )
    for column in ("name", "owner", "state", "created_at"):
        op.create_index(op.f(f"ix_datasets_{column}"), "datasets", [column])

    op.create_table(
        "dataset_columns",
        sa.Column(
            "dataset_id",
            sa.String(36),
            sa.ForeignKey(
                "datasets.id",
                ondelete="CASCADE",
                name=op.f("fk_dataset_columns_dataset_id_datasets"),
            ),
            nullable=False,
        ),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("bits", sa.Integer(), nullable=False),
        sa.Column("frac_bits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("dataset_id", "name", name=op.f("pk_dataset_columns")),
    )

    op.create_table(
        "shares",
        sa.Column(
            "dataset_id",
            sa.String(36),
            sa.ForeignKey(
                "datasets.id", ondelete="CASCADE", name=op.f("fk_shares_dataset_id_datasets")
            ),
            nullable=False,
        ),
        sa.Column("column", sa.String(64), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("upload_sha256", sa.String(64), nullable=False),
        sa.Column("blob_key", sa.String(400), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("dataset_id", "column", "partition", name=op.f("pk_shares")),
    )

    op.create_table(
        "tags",
        sa.Column(
            "dataset_id",
            sa.String(36),
            sa.ForeignKey(
                "datasets.id", ondelete="CASCADE", name=op.f("fk_tags_dataset_id_datasets")
            ),
            nullable=False,
        ),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("number", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("dataset_id", "key", name=op.f("pk_tags")),
    )
    op.create_index("ix_tags_key_value", "tags", ["key", "value"])
    op.create_index("ix_tags_key_number", "tags", ["key", "number"])

    op.create_table(
        "grants",
        sa.Column(
            "dataset_id",
            sa.String(36),
            sa.ForeignKey(
                "datasets.id", ondelete="CASCADE", name=op.f("fk_grants_dataset_id_datasets")
            ),
            nullable=False,
        ),
        sa.Column("grantee", sa.String(128), nullable=False),
        sa.Column("permission", sa.String(8), nullable=False),
        sa.Column("programs", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("dataset_id", "grantee", "permission", name=op.f("pk_grants")),
    )
    op.create_index("ix_grants_grantee", "grants", ["grantee"])

    op.create_table(
        "input_masks",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("blob_key", sa.String(400), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("dataset_id", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_input_masks")),
    )
    op.create_index(op.f("ix_input_masks_owner"), "input_masks", ["owner"])
    op.create_index(op.f("ix_input_masks_expires_at"), "input_masks", ["expires_at"])


def downgrade() -> None:
    for table in ("input_masks", "grants", "tags", "shares", "dataset_columns", "datasets"):
        op.drop_table(table)
