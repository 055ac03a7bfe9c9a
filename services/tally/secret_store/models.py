"""SQL metadata of the secret-store (SQLAlchemy 2 ORM); the shares themselves are blobs.

A dataset goes ``pending`` (created, shares being uploaded; invisible to every reader)
→ ``committed`` (complete, immutable, visible to its owner and grantees) → ``deleting``
(metadata hidden, blobs being removed; garbage collection finishes the job after a
crash). Each uploaded part of a column (one per partition) is a ``Share`` row that
points at the blob holding it; the row is written only after the blob is stored.
A ``JobToken`` is the credential of one job's workers: only its digest is kept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from tally.common.db import UTCDateTime, make_metadata

PENDING = "pending"
COMMITTED = "committed"
DELETING = "deleting"


class Base(DeclarativeBase):
    """Declarative base of the secret-store tables."""

    metadata = make_metadata()


class Dataset(Base):
    """A named table of secret-shared columns held by this party."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(400), index=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    created_by: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)
    rows: Mapped[int] = mapped_column(BigInteger)
    partitions: Mapped[int] = mapped_column(Integer)
    spec_sha256: Mapped[str] = mapped_column(String(64))
    mask_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    committed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    dp_budget: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Total epsilon that differentially private jobs may spend on this dataset; None: no cap."""
    policy: Mapped[Any] = mapped_column(JSON, nullable=True)
    """The owner's disclosure policy without its budget (``tally.common.policy``); None:
    the default (aggregates only, outputs to the submitter)."""

    columns: Mapped[list[DatasetColumn]] = relationship(
        order_by="DatasetColumn.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="selectin",
    )
    tags: Mapped[list[Tag]] = relationship(
        order_by="Tag.key", cascade="all, delete-orphan", passive_deletes=True, lazy="selectin"
    )
    shares: Mapped[list[Share]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, lazy="raise"
    )
    grants: Mapped[list[Grant]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, lazy="raise"
    )
    dp_charges: Mapped[list[DpCharge]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, lazy="select"
    )
    """Loaded when read (only the metadata views read it), not with every dataset."""

    @property
    def dp_spent(self) -> float:
        """Epsilon spent on this dataset by the jobs charged so far."""
        return sum(charge.epsilon for charge in self.dp_charges)

    @property
    def dp_delta_spent(self) -> float:
        """Delta spent on this dataset by the jobs charged so far."""
        return sum(charge.delta for charge in self.dp_charges)


class DatasetColumn(Base):
    """One column's public description (kind and encoding)."""

    __tablename__ = "dataset_columns"

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    bits: Mapped[int] = mapped_column(Integer)
    frac_bits: Mapped[int] = mapped_column(Integer)


class Share(Base):
    """One stored part (a partition) of a column's shares."""

    __tablename__ = "shares"

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    column: Mapped[str] = mapped_column(String(64), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    upload_sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Tag(Base):
    """A ``key: value`` label; ``number`` holds the value when it parses as one."""

    __tablename__ = "tags"
    __table_args__ = (
        Index("ix_tags_key_value", "key", "value"),
        Index("ix_tags_key_number", "key", "number"),
    )

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    number: Mapped[float | None] = mapped_column(Float, nullable=True)


class DpCharge(Base):
    """Epsilon one differentially private job spent on a dataset (one row per job)."""

    __tablename__ = "dp_charges"

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    identity: Mapped[str] = mapped_column(String(128))
    program: Mapped[str] = mapped_column(String(128))
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    charged_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Grant(Base):
    """Permission for another identity: ``read`` its shares or ``use`` it as a job input."""

    __tablename__ = "grants"
    __table_args__ = (Index("ix_grants_grantee", "grantee"),)

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    grantee: Mapped[str] = mapped_column(String(128), primary_key=True)
    permission: Mapped[str] = mapped_column(String(8), primary_key=True)
    programs: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class InputMask(Base):
    """A reservation of input masks r_i for one masked-input upload (DESIGN §5.2)."""

    __tablename__ = "input_masks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    count: Mapped[int] = mapped_column(BigInteger)
    blob_key: Mapped[str] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    dataset_id: Mapped[str | None] = mapped_column(String(36), nullable=True)


class JobToken(Base):
    """A job-scoped credential of this party's workers (``tally.secret_store.job_tokens``).

    Only the token's SHA-256 is stored.  It reads the job's ``inputs`` on behalf of
    ``identity`` for ``program`` and writes the job's ``results`` (dataset id -> its
    readers, owned by ``identity``), until ``expires_at`` or until it is revoked.
    """

    __tablename__ = "job_tokens"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), index=True)
    issued_by: Mapped[str] = mapped_column(String(128))
    identity: Mapped[str] = mapped_column(String(128))
    program: Mapped[str] = mapped_column(String(128))
    inputs: Mapped[Any] = mapped_column(JSON)
    results: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
