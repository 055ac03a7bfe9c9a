"""Dataset lifecycle: create (pending) → upload shares → commit (visible) → delete.

All functions here are synchronous (SQLAlchemy sessions); the routes run them in the
thread pool. Each opens one transaction. Uploads live in ``tally.secret_store.uploads``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from tally.common.auth import Principal
from tally.common.db import session_scope
from tally.common.errors import ApiError
from tally.secret_store import quotas
from tally.secret_store.access import (
    find_owned,
    find_usable,
    find_visible,
    not_found,
    visible_clause,
)
from tally.secret_store.context import StoreContext
from tally.secret_store.models import (
    COMMITTED,
    DELETING,
    PENDING,
    Dataset,
    DatasetColumn,
    DpCharge,
    Grant,
    InputMask,
    Share,
    Tag,
)
from tally.secret_store.schemas import (
    ColumnPublic,
    DatasetCreate,
    DatasetPage,
    DatasetPublic,
    DpChargeCreate,
    DpChargePublic,
    MaskedInputCreate,
    ResultDatasetCreate,
    SortKey,
)

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?$")
_TAG_FILTER = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.-]{0,63})([:<>])(.*)$", re.DOTALL)


def utcnow() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


def tag_number(value: str) -> float | None:
    """``value`` as a finite number when it is written as one, else ``None``."""
    if _NUMBER.match(value.strip()):
        number = float(value)
        if math.isfinite(number):
            return number
    return None


def blob_prefix(dataset_id: str) -> str:
    """Where a dataset's share blobs live."""
    return f"datasets/{dataset_id}/"


def to_public(dataset: Dataset) -> DatasetPublic:
    """The API view of a dataset (columns and tags must be loaded)."""
    return DatasetPublic(
        id=dataset.id,
        name=dataset.name,
        owner=dataset.owner,
        state="committed" if dataset.state == COMMITTED else "pending",
        rows=dataset.rows,
        partitions=dataset.partitions,
        columns=[
            ColumnPublic.model_validate(
                {
                    "name": column.name,
                    "kind": column.kind,
                    "bits": column.bits,
                    "frac_bits": column.frac_bits,
                }
            )
            for column in dataset.columns
        ],
        tags={tag.key: tag.value for tag in dataset.tags},
        created_at=dataset.created_at,
        committed_at=dataset.committed_at,
        masked=dataset.mask_id is not None,
        dp_budget=dataset.dp_budget,
        dp_spent=dataset.dp_spent,
        dp_delta_spent=dataset.dp_delta_spent,
    )


def _spec_digest(body: DatasetCreate) -> str:
    canonical = body.model_dump(mode="json", exclude={"id"})
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _check_size(ctx: StoreContext, body: DatasetCreate) -> None:
    parts = len(body.columns) * body.partitions
    if parts > ctx.settings.max_parts:
        raise ApiError(
            422,
            "validation_error",
            f"{len(body.columns)} columns x {body.partitions} partitions is {parts} column "
            f"parts, above this store's limit of {ctx.settings.max_parts} (max_parts)",
        )
    part_bytes = body.rows // body.partitions * 8
    limit = ctx.settings.max_upload_bytes
    if part_bytes > limit:
        raise ApiError(
            422,
            "validation_error",
            f"one column part would be {part_bytes} bytes, above the upload limit of {limit}; "
            f"use at least {-(-body.rows * 8 // limit)} partitions",
        )


def create_dataset(
    ctx: StoreContext, principal: Principal, body: DatasetCreate
) -> tuple[DatasetPublic, bool]:
    """A new pending dataset owned by the caller; ``(dataset, created)``.

    Re-sending the same body with the same ``id`` returns the existing dataset
    (``created`` false); a different body under a used ``id`` is a 409.  A new dataset
    must fit its owner's quotas (:mod:`tally.secret_store.quotas`).
    """
    owner = principal.identity
    readers: list[str] = []
    if isinstance(body, ResultDatasetCreate):
        if not principal.service:
            raise ApiError(
                403, "forbidden", "only the party's service credential may write results"
            )
        owner, readers = body.owner, body.readers
    _check_size(ctx, body)
    dataset_id = str(body.id or uuid.uuid4())
    digest = _spec_digest(body)
    try:
        with session_scope(ctx.sessions) as session:
            existing = session.get(Dataset, dataset_id)
            if existing is not None:
                return _replay(existing, principal, digest), False
            if isinstance(body, MaskedInputCreate):
                _consume_mask(session, principal, body, dataset_id)
            quotas.check_dataset(
                session,
                ctx.settings,
                owner=owner,
                creator=None if principal.service else principal.identity,
                size=body.rows * len(body.columns) * 8,
                now=utcnow(),
            )
            dataset = _insert(session, body, dataset_id, owner, principal.identity, digest)
            for reader in sorted(set(readers) - {owner}):
                session.add(
                    Grant(
                        dataset_id=dataset_id,
                        grantee=reader,
                        permission="read",
                        programs=None,
                        created_at=dataset.created_at,
                    )
                )
            session.flush()
            return to_public(dataset), True
    except IntegrityError:  # a concurrent create with the same id won
        with session_scope(ctx.sessions) as session:
            existing = session.get(Dataset, dataset_id)
            if existing is None:
                raise
            return _replay(existing, principal, digest), False


def _replay(existing: Dataset, principal: Principal, digest: str) -> DatasetPublic:
    if (
        existing.created_by != principal.identity
        or existing.spec_sha256 != digest
        or existing.state == DELETING
    ):
        raise ApiError(409, "conflict", f"dataset id {existing.id} is already in use")
    return to_public(existing)


def _insert(
    session: Session, body: DatasetCreate, dataset_id: str, owner: str, creator: str, digest: str
) -> Dataset:
    now = utcnow()
    dataset = Dataset(
        id=dataset_id,
        name=body.name,
        owner=owner,
        created_by=creator,
        state=PENDING,
        rows=body.rows,
        partitions=body.partitions,
        spec_sha256=digest,
        mask_id=str(body.reservation_id) if isinstance(body, MaskedInputCreate) else None,
        created_at=now,
        committed_at=None,
        dp_budget=body.dp_budget,
    )
    dataset.columns = [
        DatasetColumn(
            name=column.name,
            position=position,
            kind=column.kind,
            bits=column.bits,
            frac_bits=column.frac_bits,
        )
        for position, column in enumerate(body.columns)
    ]
    tags = {**body.tags, "owner": owner, "created": now.isoformat()}
    dataset.tags = [
        Tag(
            key=key,
            value=value,
            number=now.timestamp() if key == "created" else tag_number(value),
        )
        for key, value in sorted(tags.items())
    ]
    session.add(dataset)
    return dataset


def _consume_mask(
    session: Session, principal: Principal, body: MaskedInputCreate, dataset_id: str
) -> None:
    """Mark the reservation used by this dataset, once; 404/409/422 when it cannot be."""
    reservation_id = str(body.reservation_id)
    mask = session.get(InputMask, reservation_id)
    now = utcnow()
    if mask is None or mask.owner != principal.identity:
        raise ApiError(404, "not_found", f"mask reservation {reservation_id} not found")
    if mask.used_at is not None:
        raise ApiError(409, "conflict", f"mask reservation {reservation_id} was already used")
    if mask.expires_at <= now:
        raise ApiError(409, "conflict", f"mask reservation {reservation_id} has expired")
    values = body.rows * len(body.columns)
    if values != mask.count:
        raise ApiError(
            422,
            "validation_error",
            f"reservation {reservation_id} holds {mask.count} masks but the dataset has "
            f"{values} values ({body.rows} rows × {len(body.columns)} columns)",
        )
    claimed = session.execute(
        update(InputMask)
        .where(InputMask.id == reservation_id, InputMask.used_at.is_(None))
        .values(used_at=now, dataset_id=dataset_id)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise ApiError(409, "conflict", f"mask reservation {reservation_id} was already used")


def get_dataset(ctx: StoreContext, principal: Principal, dataset_id: str) -> DatasetPublic:
    """Metadata of a committed dataset the caller may see."""
    with session_scope(ctx.sessions) as session:
        return to_public(find_visible(session, dataset_id, principal.identity))


def charge_dp(
    ctx: StoreContext, dataset_id: str, body: DpChargeCreate
) -> tuple[DpChargePublic, bool]:
    """Record a differentially private job's epsilon on an input; ``(charge, created)``.

    The dataset's row is locked (``FOR UPDATE`` on PostgreSQL) while the spending is
    summed, so two jobs cannot both take the last of a budget.  Charging the same job
    again for the same identity, program and epsilon returns the recorded charge (a
    restarted service retries); a job id charged for another identity or program, or
    another epsilon for the same job, is a 409 (a reused job id spends again), as is a
    charge above what is left of the epsilon budget or of the owner's delta budget
    (policy ``dp.delta_budget``).
    """
    with session_scope(ctx.sessions) as session:
        find_usable(session, dataset_id, body.identity, body.program)
        dataset = session.execute(
            select(Dataset).where(Dataset.id == dataset_id).with_for_update()
        ).scalar_one()
        totals = session.execute(
            select(
                func.coalesce(func.sum(DpCharge.epsilon), 0.0),
                func.coalesce(func.sum(DpCharge.delta), 0.0),
            ).where(DpCharge.dataset_id == dataset_id)
        ).one()
        spent, delta_spent = float(totals[0] or 0.0), float(totals[1] or 0.0)
        existing = session.get(DpCharge, (dataset_id, body.job_id))
        if existing is not None:
            if existing.identity != body.identity or existing.program != body.program:
                raise ApiError(
                    409,
                    "conflict",
                    f"job id {body.job_id} already spent privacy budget on dataset "
                    f"{dataset_id} for another identity or program: a job id is not reusable",
                )
            if not (
                math.isclose(existing.epsilon, body.epsilon, rel_tol=1e-12)
                and math.isclose(existing.delta, body.delta, rel_tol=1e-12)
            ):
                raise ApiError(
                    409,
                    "conflict",
                    f"job {body.job_id} already spent epsilon {existing.epsilon:g}, delta "
                    f"{existing.delta:g} on dataset {dataset_id}, not {body.epsilon:g}, "
                    f"{body.delta:g}",
                )
            return _charge_public(dataset, existing, spent), False
        delta_budget = (dataset.policy or {}).get("dp", {}).get("delta_budget")
        for what, budget, used, needed in (
            ("epsilon", dataset.dp_budget, spent, body.epsilon),
            ("delta", delta_budget, delta_spent, body.delta),
        ):
            if budget is not None and used + needed > budget * (1 + 1e-12):
                raise ApiError(
                    409,
                    "privacy_budget_exhausted",
                    f"dataset {dataset_id} has {what} {max(budget - used, 0.0):g} left of its "
                    f"{what} budget {budget:g}; job {body.job_id} needs {needed:g}",
                )
        charge = DpCharge(
            dataset_id=dataset_id,
            job_id=body.job_id,
            identity=body.identity,
            program=body.program,
            epsilon=body.epsilon,
            delta=body.delta,
            charged_at=utcnow(),
        )
        session.add(charge)
        session.flush()
        log.info(
            "dataset %s: job %s spent epsilon %g, delta %g",
            dataset_id,
            body.job_id,
            body.epsilon,
            body.delta,
        )
        return _charge_public(dataset, charge, spent + body.epsilon), True


def _charge_public(dataset: Dataset, charge: DpCharge, spent: float) -> DpChargePublic:
    return DpChargePublic(
        dataset_id=dataset.id,
        job_id=charge.job_id,
        epsilon=charge.epsilon,
        delta=charge.delta,
        dp_budget=dataset.dp_budget,
        dp_spent=spent,
    )


@dataclass(frozen=True)
class TagFilter:
    """``key:value`` (equal), ``key<number`` or ``key>number``."""

    key: str
    op: str
    value: str
    number: float | None


def parse_tag_filter(text: str) -> TagFilter:
    """Parse one ``tag=`` query value; 400 with the expected forms when malformed."""
    match = _TAG_FILTER.match(text)
    if not match:
        raise ApiError(
            400, "bad_request", f"bad tag filter {text!r}: use key:value, key<number or key>number"
        )
    key, op, value = match.groups()
    number = None
    if op != ":":
        number = tag_number(value)
        if number is None:
            raise ApiError(
                400, "bad_request", f"bad tag filter {text!r}: {value!r} is not a number"
            )
    return TagFilter(key, op, value, number)


_SORT_COLUMNS = {"created": Dataset.created_at, "name": Dataset.name, "rows": Dataset.rows}


def list_datasets(
    ctx: StoreContext,
    principal: Principal,
    *,
    tag_filters: list[TagFilter],
    name: str | None,
    sort: SortKey,
    limit: int,
    offset: int,
) -> DatasetPage:
    """Committed datasets the caller may see, filtered (AND), sorted and paged."""
    query = select(Dataset).where(Dataset.state == COMMITTED, visible_clause(principal.identity))
    if name is not None:
        query = query.where(Dataset.name == name)
    for tag_filter in tag_filters:
        if tag_filter.op == ":":
            condition = Tag.value == tag_filter.value
        elif tag_filter.op == "<":
            condition = Tag.number < tag_filter.number
        else:
            condition = Tag.number > tag_filter.number
        query = query.where(
            exists().where(and_(Tag.dataset_id == Dataset.id, Tag.key == tag_filter.key, condition))
        )
    column = _SORT_COLUMNS[sort.lstrip("-")]
    order = column.desc() if sort.startswith("-") else column.asc()
    with session_scope(ctx.sessions) as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        page = session.scalars(
            query.order_by(order, Dataset.id)
            .limit(limit)
            .offset(offset)
            .options(selectinload(Dataset.dp_charges))  # one query for the page's spending
        )
        items = [to_public(dataset) for dataset in page]
    return DatasetPage(items=items, total=total, limit=limit, offset=offset)


def _missing_parts(session: Session, dataset: Dataset, shown: int = 20) -> str:
    """The first missing column parts, counted in SQL (never one string per part)."""
    counts = dict(
        session.execute(
            select(Share.column, func.count())
            .where(Share.dataset_id == dataset.id)
            .group_by(Share.column)
        ).all()
    )
    names: list[str] = []
    total = 0
    for column in dataset.columns:
        absent = dataset.partitions - int(counts.get(column.name, 0))
        if absent <= 0:
            continue
        total += absent
        if len(names) < shown:
            have = set(
                session.scalars(
                    select(Share.partition).where(
                        Share.dataset_id == dataset.id, Share.column == column.name
                    )
                )
            )
            for partition in range(dataset.partitions):
                if partition not in have:
                    names.append(f"{column.name}[{partition}]")
                    if len(names) >= shown:
                        break
    if not total:
        return ""
    return ", ".join(names) + (f" … ({total} parts missing)" if total > len(names) else "")


def commit_dataset(ctx: StoreContext, principal: Principal, dataset_id: str) -> DatasetPublic:
    """Make a fully uploaded pending dataset visible, atomically; 409 when incomplete."""
    with session_scope(ctx.sessions) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None or dataset.created_by != principal.identity or dataset.state == DELETING:
            raise not_found(dataset_id)
        if dataset.state == COMMITTED:
            raise ApiError(409, "conflict", f"dataset {dataset_id} is already committed")
        missing = _missing_parts(session, dataset)
        if missing:
            raise ApiError(
                409, "conflict", f"cannot commit dataset {dataset_id}: missing shares {missing}"
            )
        now = utcnow()
        committed = session.execute(
            update(Dataset)
            .where(Dataset.id == dataset_id, Dataset.state == PENDING)
            .values(state=COMMITTED, committed_at=now)
        )
        if committed.rowcount != 1:  # type: ignore[attr-defined]
            raise ApiError(409, "conflict", f"dataset {dataset_id} is already committed")
        session.refresh(dataset)
        public = to_public(dataset)
        referenced = {
            key
            for key in session.scalars(select(Share.blob_key).where(Share.dataset_id == dataset_id))
        }
        mask = session.get(InputMask, dataset.mask_id) if dataset.mask_id else None
        mask_key = mask.blob_key if mask is not None else None
    ctx.metrics.commits.inc()
    _sweep_after_commit(ctx, dataset_id, referenced, mask_key)
    return public


def _sweep_after_commit(
    ctx: StoreContext, dataset_id: str, referenced: set[str], mask_key: str | None
) -> None:
    """Best effort: drop blobs of abandoned upload attempts and the consumed masks."""
    try:
        for key in list(ctx.blobs.list(blob_prefix(dataset_id))):
            if key not in referenced:
                ctx.blobs.delete(key)
        if mask_key is not None:
            ctx.blobs.delete(mask_key)
    except Exception:  # masks are retried by GC; stray parts go when the dataset is deleted
        log.warning(
            "could not sweep the blobs of dataset %s after commit", dataset_id, exc_info=True
        )


def delete_dataset(ctx: StoreContext, principal: Principal, dataset_id: str) -> None:
    """Hide the dataset at once, then remove its blobs and metadata (owner only)."""
    with session_scope(ctx.sessions) as session:
        dataset = find_owned(session, dataset_id, principal.identity)
        dataset.state = DELETING
    purge_dataset(ctx, dataset_id)


def purge_dataset(ctx: StoreContext, dataset_id: str) -> None:
    """Remove a ``deleting`` dataset's blobs, then its rows (safe to repeat)."""
    ctx.blobs.delete_prefix(blob_prefix(dataset_id))
    with session_scope(ctx.sessions) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is not None and dataset.state == DELETING:
            session.delete(dataset)
