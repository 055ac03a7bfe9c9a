"""Input-mask reservations for masked input (DESIGN §5.2).

A provider that must never hold all shares of its data at once asks every party for
``count`` masks. This party draws its shares r_i itself — uniformly random 64-bit words
from the OS CSPRNG (``os.urandom``), no tuple-service involved, since masks need no
correlation between parties — stores them as a blob and returns a reservation. The
provider fetches r_i from every party, reconstructs r = Σ r_i, and uploads
y = x − r to every party with ``POST /v1/masked-inputs`` (which consumes the
reservation, once) and the column routes under it. Party 0 stores y + r_0 as its
share, party i > 0 stores r_i; the shares sum to x.

Mask layout: value j of column c (position in the schema) uses mask c·rows + j.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta

from tally.common.auth import Principal
from tally.common.db import session_scope
from tally.common.errors import ApiError
from tally.secret_store import quotas
from tally.secret_store.context import StoreContext
from tally.secret_store.datasets import utcnow
from tally.secret_store.models import InputMask
from tally.secret_store.schemas import InputMaskPublic

MASK_PREFIX = "masks/"
_CHUNK_WORDS = 1 << 17


def mask_blob_key(reservation_id: str, created_epoch: int) -> str:
    """Blob key of a reservation; the creation time lets GC date orphaned blobs."""
    return f"{MASK_PREFIX}{created_epoch}-{reservation_id}"


def _random_words(count: int) -> Iterator[bytes]:
    remaining = count
    while remaining:
        words = min(remaining, _CHUNK_WORDS)
        yield os.urandom(words * 8)
        remaining -= words


def _public(ctx: StoreContext, mask: InputMask) -> InputMaskPublic:
    return InputMaskPublic(
        id=mask.id,
        count=mask.count,
        party=ctx.settings.party,
        created_at=mask.created_at,
        expires_at=mask.expires_at,
        used=mask.used_at is not None,
        shares_url=f"/v1/input-masks/{mask.id}/shares",
    )


def reserve_masks(ctx: StoreContext, principal: Principal, count: int) -> InputMaskPublic:
    """Draw and store ``count`` fresh masks for the caller (blob first, then the row)."""
    limit = ctx.settings.max_mask_count
    if count > limit:
        raise ApiError(
            422,
            "validation_error",
            f"count {count} exceeds the limit of {limit} masks per reservation",
        )
    now = utcnow()
    with session_scope(ctx.sessions) as session:  # refuse before writing the blob
        quotas.check_masks(session, ctx.settings, principal.identity, count, now)
    reservation_id = str(uuid.uuid4())
    key = mask_blob_key(reservation_id, int(now.timestamp()))
    ctx.blobs.put_stream(key, _random_words(count), count * 8)
    try:
        with session_scope(ctx.sessions) as session:
            # again under the identity's lock: a concurrent reservation may have won
            quotas.check_masks(session, ctx.settings, principal.identity, count, now)
            mask = InputMask(
                id=reservation_id,
                owner=principal.identity,
                count=count,
                blob_key=key,
                created_at=now,
                expires_at=now + timedelta(seconds=ctx.settings.mask_timeout_s),
                used_at=None,
                dataset_id=None,
            )
            session.add(mask)
    except BaseException:
        ctx.blobs.delete(key)
        raise
    return _public(ctx, mask)


def _find(ctx: StoreContext, principal: Principal, reservation_id: str) -> InputMask:
    with session_scope(ctx.sessions) as session:
        mask = session.get(InputMask, reservation_id)
        if mask is None or mask.owner != principal.identity:
            raise ApiError(404, "not_found", f"mask reservation {reservation_id} not found")
        return mask


def get_reservation(
    ctx: StoreContext, principal: Principal, reservation_id: str
) -> InputMaskPublic:
    """A reservation of the caller."""
    return _public(ctx, _find(ctx, principal, reservation_id))


def open_mask_shares(
    ctx: StoreContext, principal: Principal, reservation_id: str
) -> tuple[int, Iterator[bytes]]:
    """This party's mask shares r_i of a live reservation: ``(size, chunks)``."""
    from tally.common.blobstore import BlobNotFound

    mask = _find(ctx, principal, reservation_id)
    if mask.expires_at <= utcnow() and mask.used_at is None:
        raise ApiError(410, "gone", f"mask reservation {reservation_id} has expired")
    try:
        return mask.count * 8, ctx.blobs.stream(mask.blob_key)
    except BlobNotFound:
        raise ApiError(
            410, "gone", f"the masks of reservation {reservation_id} were consumed"
        ) from None
