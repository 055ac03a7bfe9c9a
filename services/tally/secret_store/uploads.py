"""Share uploads and downloads: the data path of the secret-store.

Upload of one column part (``PUT …/columns/{column}``), crash-safe in three steps:

1. ``prepare_upload`` (one read transaction): the dataset is pending and the caller
   created it, the column exists, the partition is in range; the expected length is
   rows/partitions × 8 bytes.
2. The body streams straight into a fresh blob (``datasets/{id}/{column}/{partition}-
   {nonce}``) from a worker thread that also hashes it; the event loop only moves
   chunk references, so an upload costs no copy beyond the socket read. Wrong length
   or checksum → 400 and the blob is deleted.
3. ``finish_upload`` (one write transaction) records the ``Share`` row. Only now is
   the part part of the dataset; a crash before this leaves an unreferenced blob that
   the next commit or the garbage collector removes.

Re-sending an identical part is answered 200 without writing; a different one is 409.
Masked-input parts (y = x − r) are read whole, combined with this party's masks and
stored as shares: party 0 stores y + r_0, every other party r_i (DESIGN §5.2).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np
from fastapi import Request, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from tally.common.auth import Principal
from tally.common.db import session_scope
from tally.common.errors import ApiError
from tally.common.limits import OCTET_STREAM
from tally.secret_store.access import find_readable, find_usable, not_found
from tally.secret_store.context import StoreContext
from tally.secret_store.datasets import blob_prefix, utcnow
from tally.secret_store.models import COMMITTED, PENDING, Dataset, DatasetColumn, InputMask, Share
from tally.secret_store.schemas import SharePublic

CHECKSUM_HEADER = "Tally-Sha256"
"""Hex SHA-256 of an uploaded body (required) and of a streamed part (in responses)."""

CRASH_EXIT_CODE = 70
_HANDOFF_BYTES = 1 << 20


@dataclass(frozen=True)
class UploadTarget:
    """Where one upload goes and what it must look like."""

    dataset_id: str
    column: str
    partition: int
    length: int
    existing_sha256: str | None
    mask_key: str | None
    mask_offset: int


def _column(dataset: Dataset, name: str) -> DatasetColumn:
    for column in dataset.columns:
        if column.name == name:
            return column
    known = ", ".join(column.name for column in dataset.columns)
    raise ApiError(404, "unknown_column", f"dataset {dataset.id} has no column {name!r} ({known})")


def _partition(dataset: Dataset, partition: int | None) -> int:
    if partition is None:
        if dataset.partitions != 1:
            raise ApiError(
                400,
                "bad_request",
                f"dataset {dataset.id} has {dataset.partitions} partitions: "
                f"give ?partition=0..{dataset.partitions - 1}",
            )
        return 0
    if not 0 <= partition < dataset.partitions:
        raise ApiError(
            400,
            "bad_request",
            f"partition {partition} out of range: dataset {dataset.id} has "
            f"{dataset.partitions} partition(s)",
        )
    return partition


def prepare_upload(
    ctx: StoreContext,
    principal: Principal,
    dataset_id: str,
    column_name: str,
    partition: int | None,
    *,
    masked: bool,
) -> UploadTarget:
    """Check that the caller may upload this part now; 404/409/400 otherwise."""
    with session_scope(ctx.sessions) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None or dataset.created_by != principal.identity:
            raise not_found(dataset_id)
        if dataset.state == COMMITTED:
            raise ApiError(409, "conflict", f"dataset {dataset_id} is committed and cannot change")
        if dataset.state != PENDING:
            raise not_found(dataset_id)
        if masked and dataset.mask_id is None:
            raise ApiError(409, "conflict", f"dataset {dataset_id} is not a masked input")
        if not masked and dataset.mask_id is not None:
            raise ApiError(
                409,
                "conflict",
                f"dataset {dataset_id} is a masked input: upload y = x - r to "
                f"/v1/masked-inputs/{dataset_id}/columns/{column_name}",
            )
        column = _column(dataset, column_name)
        part = _partition(dataset, partition)
        part_rows = dataset.rows // dataset.partitions
        existing = session.get(Share, (dataset_id, column.name, part))
        mask_key = None
        if dataset.mask_id is not None:
            mask = session.get(InputMask, dataset.mask_id)
            if mask is None:
                raise ApiError(409, "conflict", f"the masks of dataset {dataset_id} are gone")
            mask_key = mask.blob_key
        return UploadTarget(
            dataset_id=dataset_id,
            column=column.name,
            partition=part,
            length=part_rows * 8,
            existing_sha256=existing.upload_sha256 if existing is not None else None,
            mask_key=mask_key,
            mask_offset=(column.position * dataset.rows + part * part_rows) * 8,
        )


def _claimed_checksum(request: Request) -> str:
    claimed = request.headers.get(CHECKSUM_HEADER, "").strip().lower()
    if len(claimed) != 64 or any(char not in "0123456789abcdef" for char in claimed):
        raise ApiError(
            400,
            "bad_request",
            f"header {CHECKSUM_HEADER} must carry the hex SHA-256 of the body (64 digits)",
        )
    return claimed


def _check_declared_length(request: Request, target: UploadTarget) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != OCTET_STREAM:
        raise ApiError(415, "unsupported_media_type", f"send shares as {OCTET_STREAM}")
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.isdigit():
        raise ApiError(400, "bad_content_length", "Content-Length must be a byte count")
    if int(declared) != target.length:
        raise _length_error(target, int(declared))


def _length_error(target: UploadTarget, got: int) -> ApiError:
    return ApiError(
        400,
        "wrong_length",
        f"column {target.column!r} partition {target.partition} holds {target.length // 8} "
        f"rows: expected {target.length} bytes (rows × 8), got {got}",
    )


async def _body_batches(request: Request, target: UploadTarget) -> AsyncIterator[list[bytes]]:
    """The body in batches of about 1 MiB (chunk references, not copies); checks length."""
    batch: list[bytes] = []
    batch_bytes = received = 0
    async for chunk in request.stream():
        if not chunk:
            continue
        received += len(chunk)
        if received > target.length:
            raise _length_error(target, received)
        batch.append(chunk)
        batch_bytes += len(chunk)
        if batch_bytes >= _HANDOFF_BYTES:
            yield batch
            batch, batch_bytes = [], 0
    if batch:
        yield batch
    if received != target.length:
        raise _length_error(target, received)


class _Handoff:
    """Chunks from the event loop to a blocking writer thread, with back-pressure."""

    DONE = object()

    def __init__(self) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=8)
        self.hasher = hashlib.sha256()

    async def put(self, item: object, writer: asyncio.Future[None]) -> None:
        """Queue ``item`` unless the writer has stopped; waits while the queue is full."""
        while not writer.done():
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                await asyncio.sleep(0.001)

    def chunks(self) -> Iterator[bytes]:
        """Runs in the writer thread: yields chunks, hashing them (GIL released)."""
        while True:
            item = self._queue.get()
            if item is self.DONE:
                return
            if isinstance(item, BaseException):
                raise item
            for chunk in cast(list[bytes], item):
                self.hasher.update(chunk)
                yield chunk


async def _stream_to_blob(
    ctx: StoreContext, request: Request, target: UploadTarget, key: str
) -> str:
    """Write the body to ``key`` while hashing it; returns the hex SHA-256."""
    handoff = _Handoff()
    writer: asyncio.Future[None] = asyncio.ensure_future(
        run_in_threadpool(ctx.blobs.put_stream, key, handoff.chunks(), target.length)
    )
    try:
        async for batch in _body_batches(request, target):
            await handoff.put(batch, writer)
        await handoff.put(handoff.DONE, writer)
        await writer
    except BaseException:
        await handoff.put(ApiError(400, "aborted", "upload aborted"), writer)
        await asyncio.gather(writer, return_exceptions=True)
        await run_in_threadpool(ctx.blobs.delete, key)
        raise
    return handoff.hasher.hexdigest()


async def _drain(request: Request, target: UploadTarget) -> str:
    """Hash a re-sent body without storing it; hashing runs off the event loop."""
    hasher = hashlib.sha256()

    def update(batch: list[bytes]) -> None:
        for chunk in batch:
            hasher.update(chunk)

    async for batch in _body_batches(request, target):
        await run_in_threadpool(update, batch)
    return hasher.hexdigest()


async def _read_whole(request: Request, target: UploadTarget) -> bytes:
    """The whole body; the loop only collects chunks, the join runs in the thread pool."""
    chunks: list[bytes] = []
    async for batch in _body_batches(request, target):
        chunks.extend(batch)
    return await run_in_threadpool(b"".join, chunks)


def _checksum_error(claimed: str, actual: str) -> ApiError:
    return ApiError(
        400,
        "checksum_mismatch",
        f"the body's SHA-256 is {actual}, but {CHECKSUM_HEADER} says {claimed}; nothing stored",
    )


async def receive_upload(
    ctx: StoreContext, principal: Principal, request: Request, target: UploadTarget
) -> SharePublic:
    """Store the request body as the target part; idempotent for identical re-sends."""
    claimed = _claimed_checksum(request)
    _check_declared_length(request, target)
    if target.existing_sha256 is not None:
        if target.existing_sha256 != claimed:
            raise _conflict(target)
        actual = await _drain(request, target)
        if actual != claimed:
            raise _checksum_error(claimed, actual)
        return await run_in_threadpool(_existing, ctx, target, claimed)
    key = f"{blob_prefix(target.dataset_id)}{target.column}/{target.partition}-{uuid.uuid4().hex}"
    if target.mask_key is None:
        actual = await _stream_to_blob(ctx, request, target, key)
        stored_sha = actual
        if actual != claimed:
            await run_in_threadpool(ctx.blobs.delete, key)
            raise _checksum_error(claimed, actual)
    else:
        masked = await _read_whole(request, target)
        actual = await run_in_threadpool(lambda: hashlib.sha256(masked).hexdigest())
        if actual != claimed:
            raise _checksum_error(claimed, actual)
        stored_sha = await run_in_threadpool(_store_unmasked, ctx, target, key, masked)
    if ctx.settings.debug_crash_after_blob_write:  # development-only crash-safety hook
        os._exit(CRASH_EXIT_CODE)
    ctx.metrics.uploaded_bytes.inc(target.length)
    return await run_in_threadpool(finish_upload, ctx, principal, target, key, stored_sha, claimed)


async def upload_column_route(
    ctx: StoreContext,
    principal: Principal,
    request: Request,
    response: Response,
    dataset_id: str,
    column: str,
    partition: int | None,
    *,
    masked: bool,
) -> SharePublic:
    """The body of both column-upload routes: 201 for a new part, 200 for a re-send."""
    target = await run_in_threadpool(
        prepare_upload, ctx, principal, dataset_id, column, partition, masked=masked
    )
    share = await receive_upload(ctx, principal, request, target)
    if not share.created:
        response.status_code = 200
    return share


def _store_unmasked(ctx: StoreContext, target: UploadTarget, key: str, masked: bytes) -> str:
    """This party's share of x from y = x − r: y + r_0 at party 0, r_i elsewhere."""
    assert target.mask_key is not None
    mask = ctx.blobs.get_range(target.mask_key, target.mask_offset, target.length)
    if len(mask) != target.length:
        raise ApiError(409, "conflict", "the stored masks are shorter than the dataset")
    if ctx.settings.party == 0:
        shares = np.frombuffer(masked, dtype="<u8") + np.frombuffer(mask, dtype="<u8")
        data = shares.astype("<u8", copy=False).tobytes()
    else:
        data = mask
    ctx.blobs.put(key, data)
    return hashlib.sha256(data).hexdigest()


def _conflict(target: UploadTarget) -> ApiError:
    return ApiError(
        409,
        "conflict",
        f"column {target.column!r} partition {target.partition} of dataset "
        f"{target.dataset_id} is already stored with a different checksum",
    )


def _existing(ctx: StoreContext, target: UploadTarget, claimed: str) -> SharePublic:
    with session_scope(ctx.sessions) as session:
        share = session.get(Share, (target.dataset_id, target.column, target.partition))
        if share is None or share.upload_sha256 != claimed:
            raise _conflict(target)
        return _share_public(share, created=False)


def _share_public(share: Share, *, created: bool) -> SharePublic:
    return SharePublic(
        dataset_id=share.dataset_id,
        column=share.column,
        partition=share.partition,
        size=share.size,
        sha256=share.sha256,
        created=created,
    )


def finish_upload(
    ctx: StoreContext,
    principal: Principal,
    target: UploadTarget,
    key: str,
    sha256: str,
    upload_sha256: str,
) -> SharePublic:
    """Record a stored blob as the target part, in one transaction."""
    try:
        with session_scope(ctx.sessions) as session:
            dataset = session.get(Dataset, target.dataset_id)
            if dataset is None or dataset.created_by != principal.identity:
                raise not_found(target.dataset_id)
            if dataset.state != PENDING:
                raise ApiError(409, "conflict", f"dataset {target.dataset_id} is no longer pending")
            share = Share(
                dataset_id=target.dataset_id,
                column=target.column,
                partition=target.partition,
                size=target.length,
                sha256=sha256,
                upload_sha256=upload_sha256,
                blob_key=key,
                created_at=utcnow(),
            )
            session.add(share)
            session.flush()
            return _share_public(share, created=True)
    except IntegrityError:  # a concurrent upload of the same part won
        ctx.blobs.delete(key)
        return _existing(ctx, target, upload_sha256)
    except ApiError:
        ctx.blobs.delete(key)
        raise


@dataclass(frozen=True)
class Download:
    """The parts to stream for one column read."""

    keys: list[str]
    size: int
    sha256: str | None


def prepare_download(
    ctx: StoreContext,
    principal: Principal,
    dataset_id: str,
    column_name: str,
    partition: int | None,
    *,
    program: str | None = None,
) -> Download:
    """The blobs of a column (one partition, or all in order) the caller may read.

    With ``program`` set, the caller is the party's execution service loading a job
    input on behalf of ``principal`` (which then needs a ``use`` grant).
    """
    with session_scope(ctx.sessions) as session:
        if program is None:
            dataset = find_readable(session, dataset_id, principal.identity)
        else:
            dataset = find_usable(session, dataset_id, principal.identity, program)
        column = _column(dataset, column_name)
        query = select(Share).where(Share.dataset_id == dataset_id, Share.column == column.name)
        if partition is not None:
            query = query.where(Share.partition == _partition(dataset, partition))
        shares = list(session.scalars(query.order_by(Share.partition)))
    single = shares[0].sha256 if len(shares) == 1 else None
    return Download([share.blob_key for share in shares], sum(s.size for s in shares), single)


def iter_download(ctx: StoreContext, download: Download) -> Iterator[bytes]:
    """The parts' bytes in order (blocking; Starlette runs it in the thread pool)."""
    for key in download.keys:
        for chunk in ctx.blobs.stream(key):
            ctx.metrics.served_bytes.inc(len(chunk))
            yield chunk
