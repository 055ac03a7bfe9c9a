"""Tags and grants of committed datasets (owner-managed; tags visible to grantees).

The reserved tags ``owner`` and ``created`` are set by the server at creation and can
be neither changed nor removed.
"""

from __future__ import annotations

from sqlalchemy import select

from tally.common.auth import Principal
from tally.common.db import session_scope
from tally.common.errors import ApiError
from tally.secret_store.access import find_owned, find_visible
from tally.secret_store.context import StoreContext
from tally.secret_store.datasets import tag_number, utcnow
from tally.secret_store.models import Grant, Tag
from tally.secret_store.schemas import RESERVED_TAGS, GrantPublic, GrantUpdate, Permission


def _check_unreserved(key: str) -> None:
    if key in RESERVED_TAGS:
        raise ApiError(
            400, "reserved_tag", f"tag {key!r} is set by the server and cannot be changed"
        )


def list_tags(ctx: StoreContext, principal: Principal, dataset_id: str) -> dict[str, str]:
    """All tags of a dataset the caller may see."""
    with session_scope(ctx.sessions) as session:
        dataset = find_visible(session, dataset_id, principal.identity)
        return {tag.key: tag.value for tag in dataset.tags}


def put_tag(
    ctx: StoreContext, principal: Principal, dataset_id: str, key: str, value: str
) -> dict[str, str]:
    """Set one tag (owner only); returns all tags."""
    _check_unreserved(key)
    with session_scope(ctx.sessions) as session:
        dataset = find_owned(session, dataset_id, principal.identity)
        tag = session.get(Tag, (dataset_id, key))
        if tag is None:
            session.add(Tag(dataset_id=dataset_id, key=key, value=value, number=tag_number(value)))
        else:
            tag.value, tag.number = value, tag_number(value)
        session.flush()
        session.refresh(dataset, ["tags"])
        return {tag.key: tag.value for tag in dataset.tags}


def delete_tag(ctx: StoreContext, principal: Principal, dataset_id: str, key: str) -> None:
    """Remove one tag (owner only); 404 when it is not set."""
    _check_unreserved(key)
    with session_scope(ctx.sessions) as session:
        find_owned(session, dataset_id, principal.identity)
        tag = session.get(Tag, (dataset_id, key))
        if tag is None:
            raise ApiError(404, "not_found", f"dataset {dataset_id} has no tag {key!r}")
        session.delete(tag)


def _public(grant: Grant) -> GrantPublic:
    return GrantPublic(
        grantee=grant.grantee,
        permission="read" if grant.permission == "read" else "use",
        programs=grant.programs,
        created_at=grant.created_at,
    )


def list_grants(ctx: StoreContext, principal: Principal, dataset_id: str) -> list[GrantPublic]:
    """Every grant on a dataset (owner only)."""
    with session_scope(ctx.sessions) as session:
        find_owned(session, dataset_id, principal.identity)
        grants = session.scalars(
            select(Grant)
            .where(Grant.dataset_id == dataset_id)
            .order_by(Grant.grantee, Grant.permission)
        )
        return [_public(grant) for grant in grants]


def put_grant(
    ctx: StoreContext,
    principal: Principal,
    dataset_id: str,
    grantee: str,
    permission: Permission,
    body: GrantUpdate,
) -> tuple[GrantPublic, bool]:
    """Grant ``permission`` to ``grantee`` or update its programs; ``(grant, created)``."""
    if body.programs is not None and permission != "use":
        raise ApiError(400, "bad_request", "programs restrict use grants only")
    with session_scope(ctx.sessions) as session:
        dataset = find_owned(session, dataset_id, principal.identity)
        if grantee == dataset.owner:
            raise ApiError(400, "bad_request", "the owner already holds every permission")
        programs = sorted(set(body.programs)) if body.programs is not None else None
        grant = session.get(Grant, (dataset_id, grantee, permission))
        created = grant is None
        if grant is None:
            grant = Grant(
                dataset_id=dataset_id,
                grantee=grantee,
                permission=permission,
                programs=programs,
                created_at=utcnow(),
            )
            session.add(grant)
        else:
            grant.programs = programs
        session.flush()
        return _public(grant), created


def delete_grant(
    ctx: StoreContext, principal: Principal, dataset_id: str, grantee: str, permission: Permission
) -> None:
    """Revoke a grant (owner only); 404 when there is none."""
    with session_scope(ctx.sessions) as session:
        find_owned(session, dataset_id, principal.identity)
        grant = session.get(Grant, (dataset_id, grantee, permission))
        if grant is None:
            raise ApiError(
                404, "not_found", f"{grantee} holds no {permission} grant on {dataset_id}"
            )
        session.delete(grant)
