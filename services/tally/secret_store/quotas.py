"""Quotas per identity: how much of this party's secret-store one identity may take.

Checked in the transaction that would take more — a dataset's create (after an
identical retry has been answered, which takes nothing), a mask reservation — so a
refused request stores nothing:

* ``max_datasets_per_identity``: datasets the identity owns, pending or committed
  (results of its jobs included) → 429;
* ``max_pending_per_identity``: datasets it created and has not committed yet
  (results the party's own services write do not count) → 429;
* ``max_bytes_per_identity``: the declared size of the datasets it owns (rows ×
  columns × 8) plus its live input masks (count × 8) → 413;
* ``max_mask_reservations_per_identity``: its unused, unexpired mask reservations
  → 429.

The error code is ``quota_exceeded`` and the detail names the setting.  On PostgreSQL
a transaction-scoped advisory lock per identity serialises the check and the insert
of one identity's concurrent requests, so a burst cannot overshoot.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, text
from sqlalchemy.orm import Session

from tally.common.errors import ApiError
from tally.secret_store.models import DELETING, PENDING, Dataset, DatasetColumn, InputMask
from tally.secret_store.settings import SecretStoreSettings


def lock_identity(session: Session, identity: str) -> None:
    """Hold ``identity``'s quota lock until the transaction ends (PostgreSQL only)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    key = int.from_bytes(hashlib.sha256(identity.encode()).digest()[:8], "big", signed=True)
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _below(
    session: Session,
    settings: SecretStoreSettings,
    setting: str,
    what: str,
    advice: str,
    *where: ColumnElement[bool],
) -> None:
    """429 unless fewer rows than ``settings.<setting>`` match ``where`` (one table's)."""
    limit = int(getattr(settings, setting))
    found = session.scalar(select(func.count()).where(*where))
    if int(found or 0) >= limit:
        raise ApiError(
            429,
            "quota_exceeded",
            f"quota exceeded: {what} {limit}, the most this store allows per identity "
            f"({setting}); {advice}. Nothing was stored",
        )


def stored_bytes(session: Session, identity: str, now: datetime) -> int:
    """Declared bytes of the datasets ``identity`` owns, plus its live input masks."""
    columns = (
        select(func.count())
        .where(DatasetColumn.dataset_id == Dataset.id)
        .correlate(Dataset)
        .scalar_subquery()
    )
    datasets = session.scalar(
        select(func.coalesce(func.sum(Dataset.rows * columns), 0)).where(
            Dataset.owner == identity, Dataset.state != DELETING
        )
    )
    masks = session.scalar(
        select(func.coalesce(func.sum(InputMask.count), 0)).where(*_live_masks(identity, now))
    )
    return (int(datasets or 0) + int(masks or 0)) * 8


def _live_masks(identity: str, now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (InputMask.owner == identity, InputMask.used_at.is_(None), InputMask.expires_at > now)


def check_bytes(
    session: Session, settings: SecretStoreSettings, identity: str, adding: int, now: datetime
) -> None:
    """413 when ``adding`` more bytes would take ``identity`` past its byte quota."""
    used = stored_bytes(session, identity, now)
    limit = settings.max_bytes_per_identity
    if used + adding > limit:
        raise ApiError(
            413,
            "quota_exceeded",
            f"quota exceeded: {adding} more bytes would bring the datasets and input masks "
            f"of {identity} to {used + adding} bytes, above the {limit} bytes this store "
            "allows per identity (max_bytes_per_identity); delete datasets you no longer "
            "need. Nothing was stored",
        )


def check_dataset(
    session: Session,
    settings: SecretStoreSettings,
    *,
    owner: str,
    creator: str | None,
    size: int,
    now: datetime,
) -> None:
    """Quotas of one more dataset of ``size`` bytes owned by ``owner``.

    ``creator``: who uploads it, charged a pending dataset; None for the party's services.
    """
    lock_identity(session, owner)
    _below(
        session,
        settings,
        "max_datasets_per_identity",
        f"{owner} owns datasets:",
        "delete datasets you no longer need",
        Dataset.owner == owner,
        Dataset.state != DELETING,
    )
    if creator is not None:
        if creator != owner:
            lock_identity(session, creator)
        _below(
            session,
            settings,
            "max_pending_per_identity",
            f"{creator} has uncommitted datasets:",
            "commit or delete them first",
            Dataset.created_by == creator,
            Dataset.state == PENDING,
        )
    check_bytes(session, settings, owner, size, now)


def check_masks(
    session: Session, settings: SecretStoreSettings, identity: str, count: int, now: datetime
) -> None:
    """Quotas of one more reservation of ``count`` masks for ``identity``."""
    lock_identity(session, identity)
    _below(
        session,
        settings,
        "max_mask_reservations_per_identity",
        f"{identity} holds unused mask reservations:",
        "use them, or wait until they expire",
        *_live_masks(identity, now),
    )
    check_bytes(session, settings, identity, count * 8, now)
