"""The hot read path: one dataset's metadata in one SQL query.

``GET /v1/datasets/{id}`` is what jobs and clients poll. The ORM path (three queries,
object loading) costs about a millisecond; this one runs a single Core query — the
dataset row, whether the caller may see it, and its tags — and takes the column list
from a per-process cache keyed by ``(id, spec digest)``, since a dataset's columns
never change once it is created.
"""

from __future__ import annotations

from sqlalchemy import and_, bindparam, exists, func, or_, select

from tally.common.auth import Principal
from tally.secret_store.access import not_found
from tally.secret_store.context import StoreContext
from tally.secret_store.models import COMMITTED, Dataset, DatasetColumn, DpCharge, Grant, Tag
from tally.secret_store.schemas import ColumnPublic, DatasetPublic

COLUMN_CACHE_SIZE = 10_000


def _columns(ctx: StoreContext, dataset_id: str, spec_sha256: str) -> list[ColumnPublic]:
    key = (dataset_id, spec_sha256)
    cached = ctx.column_cache.get(key)
    if cached is None:
        with ctx.engine.connect() as connection:
            rows = connection.execute(
                select(
                    DatasetColumn.name,
                    DatasetColumn.kind,
                    DatasetColumn.bits,
                    DatasetColumn.frac_bits,
                )
                .where(DatasetColumn.dataset_id == dataset_id)
                .order_by(DatasetColumn.position)
            ).all()
        cached = [
            ColumnPublic(name=row.name, kind=row.kind, bits=row.bits, frac_bits=row.frac_bits)
            for row in rows
        ]
        if len(ctx.column_cache) >= COLUMN_CACHE_SIZE:
            ctx.column_cache.clear()
        ctx.column_cache[key] = cached
    return cached


_GRANTED = exists().where(
    and_(Grant.dataset_id == Dataset.id, Grant.grantee == bindparam("identity"))
)
_DATASET_WITH_TAGS = (
    select(
        Dataset.name,
        Dataset.owner,
        Dataset.rows,
        Dataset.partitions,
        Dataset.spec_sha256,
        Dataset.mask_id,
        Dataset.created_at,
        Dataset.committed_at,
        Dataset.dp_budget,
        select(func.coalesce(func.sum(DpCharge.epsilon), 0.0))
        .where(DpCharge.dataset_id == Dataset.id)
        .scalar_subquery()
        .label("dp_spent"),
        select(func.coalesce(func.sum(DpCharge.delta), 0.0))
        .where(DpCharge.dataset_id == Dataset.id)
        .scalar_subquery()
        .label("dp_delta_spent"),
        Tag.key,
        Tag.value,
    )
    .outerjoin(Tag, Tag.dataset_id == Dataset.id)
    .where(
        Dataset.id == bindparam("dataset_id"),
        Dataset.state == COMMITTED,
        or_(Dataset.owner == bindparam("identity"), _GRANTED),
    )
)
"""Built once: only the parameters change between calls."""


def read_dataset(ctx: StoreContext, principal: Principal, dataset_id: str) -> DatasetPublic:
    """Metadata of a committed dataset the caller owns or holds a grant on, else 404."""
    with ctx.engine.connect() as connection:
        rows = connection.execute(
            _DATASET_WITH_TAGS, {"dataset_id": dataset_id, "identity": principal.identity}
        ).all()
    if not rows:
        raise not_found(dataset_id)
    first = rows[0]
    return DatasetPublic(
        id=dataset_id,
        name=first.name,
        owner=first.owner,
        state="committed",
        rows=first.rows,
        partitions=first.partitions,
        columns=_columns(ctx, dataset_id, first.spec_sha256),
        tags={row.key: row.value for row in sorted(rows, key=lambda row: row.key or "") if row.key},
        created_at=first.created_at,
        committed_at=first.committed_at,
        masked=first.mask_id is not None,
        dp_budget=first.dp_budget,
        dp_spent=float(first.dp_spent or 0.0),
        dp_delta_spent=float(first.dp_delta_spent or 0.0),
    )
