"""Garbage collection: what crashes, timeouts and deletions leave behind.

Each pass (``collect_garbage``, run every ``gc_interval_s`` by the app):

1. pending datasets older than ``pending_timeout_s`` become ``deleting``;
2. ``deleting`` datasets lose their blobs, then their rows;
3. mask reservations are dropped (blob, then row) once expired and unused, or once
   the dataset that used them is committed or gone;
4. mask blobs without a row (a crash between blob write and row insert) are removed
   once older than ``mask_timeout_s``;
5. job tokens (:mod:`tally.secret_store.job_tokens`) are dropped once revoked or expired.

Every step is idempotent, so a crash during a pass is repaired by the next one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from tally.common.blobstore import BlobNotFound
from tally.common.db import session_scope
from tally.secret_store import job_tokens
from tally.secret_store.context import StoreContext
from tally.secret_store.datasets import purge_dataset, utcnow
from tally.secret_store.masks import MASK_PREFIX
from tally.secret_store.models import DELETING, PENDING, Dataset, InputMask

log = logging.getLogger(__name__)


@dataclass
class GcReport:
    """What one pass removed."""

    datasets: int = 0
    masks: int = 0
    orphan_blobs: int = 0
    job_tokens: int = 0


def collect_garbage(ctx: StoreContext, now: datetime | None = None) -> GcReport:
    """One garbage-collection pass."""
    now = now or utcnow()
    report = GcReport()
    cutoff = now - timedelta(seconds=ctx.settings.pending_timeout_s)
    with session_scope(ctx.sessions) as session:
        session.execute(
            update(Dataset)
            .where(Dataset.state == PENDING, Dataset.created_at < cutoff)
            .values(state=DELETING)
        )
    with session_scope(ctx.sessions) as session:
        doomed = list(session.scalars(select(Dataset.id).where(Dataset.state == DELETING)))
    for dataset_id in doomed:
        purge_dataset(ctx, dataset_id)
        report.datasets += 1
    report.masks = _collect_masks(ctx, now)
    report.orphan_blobs = _collect_orphan_masks(ctx, now)
    report.job_tokens = job_tokens.collect(ctx, now)
    for kind, count in (
        ("dataset", report.datasets),
        ("mask", report.masks),
        ("orphan_blob", report.orphan_blobs),
        ("job_token", report.job_tokens),
    ):
        ctx.metrics.collected.labels(kind).inc(count)
    if report.datasets or report.masks or report.orphan_blobs or report.job_tokens:
        log.info("garbage collection removed %s", report)
    return report


def _collect_masks(ctx: StoreContext, now: datetime) -> int:
    with session_scope(ctx.sessions) as session:
        pending_ids = select(Dataset.id).where(Dataset.state == PENDING)
        done = list(
            session.scalars(
                select(InputMask).where(
                    or_(
                        (InputMask.used_at.is_(None)) & (InputMask.expires_at <= now),
                        (InputMask.used_at.is_not(None))
                        & (InputMask.expires_at <= now)
                        & InputMask.dataset_id.not_in(pending_ids),
                    )
                )
            )
        )
    for mask in done:
        ctx.blobs.delete(mask.blob_key)
        with session_scope(ctx.sessions) as session:
            row = session.get(InputMask, mask.id)
            if row is not None:
                session.delete(row)
    return len(done)


def _collect_orphan_masks(ctx: StoreContext, now: datetime) -> int:
    cutoff = (now - timedelta(seconds=ctx.settings.mask_timeout_s)).timestamp()
    removed = 0
    with session_scope(ctx.sessions) as session:
        known = set(session.scalars(select(InputMask.blob_key)))
    for key in list(ctx.blobs.list(MASK_PREFIX)):
        created, _, _ = key.removeprefix(MASK_PREFIX).partition("-")
        if key not in known and created.isdigit() and int(created) < cutoff:
            try:
                ctx.blobs.delete(key)
            except BlobNotFound:
                continue
            removed += 1
    return removed
