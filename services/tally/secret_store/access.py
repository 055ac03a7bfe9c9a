"""Who may do what with a dataset.

* The **owner** may do everything: read shares, manage tags and grants, delete.
* A ``read`` grantee may see the metadata and stream the shares (result datasets).
* A ``use`` grantee may see the metadata, and the party's execution service may load
  the shares as a job input on its behalf — for any program, or only the programs the
  grant names.
* Uploads and commits of a pending dataset belong to whoever created it (the provider,
  or the execution service for a result).

Anyone else gets 404, the same answer as for a dataset that does not exist; 403 only
goes to callers who may already see the dataset.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.orm import Session

from tally.common.errors import ApiError
from tally.secret_store.models import COMMITTED, Dataset, Grant


def not_found(dataset_id: str) -> ApiError:
    """The one answer for missing and invisible datasets alike."""
    return ApiError(404, "not_found", f"dataset {dataset_id} not found")


def visible_clause(identity: str) -> ColumnElement[bool]:
    """SQL condition: ``identity`` owns the dataset or holds any grant on it."""
    granted = exists().where(and_(Grant.dataset_id == Dataset.id, Grant.grantee == identity))
    return or_(Dataset.owner == identity, granted)


def _grant(session: Session, dataset_id: str, identity: str, permission: str) -> Grant | None:
    return session.get(Grant, (dataset_id, identity, permission))


def find_visible(session: Session, dataset_id: str, identity: str) -> Dataset:
    """The committed dataset if ``identity`` may see it, else 404."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.state != COMMITTED:
        raise not_found(dataset_id)
    if dataset.owner != identity:
        granted = session.scalar(
            select(Grant.permission)
            .where(Grant.dataset_id == dataset_id, Grant.grantee == identity)
            .limit(1)
        )
        if granted is None:
            raise not_found(dataset_id)
    return dataset


def find_owned(session: Session, dataset_id: str, identity: str) -> Dataset:
    """The committed dataset if ``identity`` owns it; 403 for grantees, else 404."""
    dataset = find_visible(session, dataset_id, identity)
    if dataset.owner != identity:
        raise ApiError(403, "forbidden", f"only the owner of dataset {dataset_id} may do this")
    return dataset


def find_readable(session: Session, dataset_id: str, identity: str) -> Dataset:
    """The committed dataset if ``identity`` may stream its shares."""
    dataset = find_visible(session, dataset_id, identity)
    if dataset.owner != identity and _grant(session, dataset_id, identity, "read") is None:
        raise ApiError(403, "forbidden", f"{identity} has no read grant on dataset {dataset_id}")
    return dataset


def find_usable(session: Session, dataset_id: str, identity: str, program: str) -> Dataset:
    """The committed dataset if ``identity`` may use it as an input of ``program``."""
    dataset = find_visible(session, dataset_id, identity)
    if dataset.owner == identity:
        return dataset
    grant = _grant(session, dataset_id, identity, "use")
    if grant is None:
        raise ApiError(403, "forbidden", f"{identity} has no use grant on dataset {dataset_id}")
    if grant.programs is not None and program not in grant.programs:
        raise ApiError(
            403,
            "forbidden",
            f"the use grant of {identity} on dataset {dataset_id} does not cover program "
            f"{program!r} (allowed: {', '.join(grant.programs) or 'none'})",
        )
    return dataset
