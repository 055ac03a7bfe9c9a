"""Routes for data providers: datasets, their shares, tags and grants."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from tally.common.audit import audit
from tally.common.errors import error_responses
from tally.common.policy import DisclosurePolicy
from tally.secret_store import datasets, job_tokens, lookup, policies, sharing, uploads
from tally.secret_store.api.deps import (
    OCTET_BODY,
    OCTET_RESPONSE,
    ColumnName,
    CurrentPrincipal,
    DatasetId,
    ProviderPrincipal,
    StoreDep,
)
from tally.secret_store.schemas import (
    DatasetCreate,
    DatasetPage,
    DatasetPublic,
    GrantPublic,
    GrantUpdate,
    Identity,
    Permission,
    SharePublic,
    SortKey,
    TagKey,
    TagUpdate,
)

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=error_responses(401, 404))


@router.post("", status_code=201, responses=error_responses(409, 422))
def create_dataset(
    body: DatasetCreate, store: StoreDep, principal: ProviderPrincipal, response: Response
) -> DatasetPublic:
    """Create a pending dataset; upload its columns, then commit it."""
    dataset, created = datasets.create_dataset(store, principal, body)
    audit("dataset.create", identity=principal.identity, dataset=dataset.id, created=created)
    if not created:
        response.status_code = 200
    return dataset


@router.get("", responses=error_responses(400))
def list_datasets(
    store: StoreDep,
    principal: CurrentPrincipal,
    tag: Annotated[
        list[str], Query(description="filters, ANDed: key:value, key<number, key>number")
    ] = [],  # noqa: B006 - FastAPI copies defaults
    name: Annotated[str | None, Query(max_length=200)] = None,
    sort: SortKey = "-created",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1 << 31)] = 0,
) -> DatasetPage:
    """List the committed datasets you own or hold a grant on."""
    filters = [datasets.parse_tag_filter(text) for text in tag]
    return datasets.list_datasets(
        store, principal, tag_filters=filters, name=name, sort=sort, limit=limit, offset=offset
    )


@router.get("/{dataset_id}")
async def get_dataset(
    dataset_id: DatasetId, store: StoreDep, principal: CurrentPrincipal
) -> DatasetPublic:
    """Get a committed dataset's metadata."""
    if store.inline_reads:  # SQLite runs in-process: a thread hop would only add latency
        return lookup.read_dataset(store, principal, str(dataset_id))
    return await run_in_threadpool(lookup.read_dataset, store, principal, str(dataset_id))


@router.delete("/{dataset_id}", status_code=204, responses=error_responses(403))
def delete_dataset(dataset_id: DatasetId, store: StoreDep, principal: CurrentPrincipal) -> None:
    """Delete a dataset and its shares (owner only)."""
    datasets.delete_dataset(store, principal, str(dataset_id))
    audit("dataset.delete", identity=principal.identity, dataset=str(dataset_id))


@router.put(
    "/{dataset_id}/columns/{column}",
    status_code=201,
    openapi_extra=OCTET_BODY,
    responses=error_responses(400, 409, 413, 415),
)
async def upload_column(
    dataset_id: DatasetId,
    column: ColumnName,
    request: Request,
    store: StoreDep,
    principal: CurrentPrincipal,
    response: Response,
    partition: Annotated[int | None, Query(ge=0, le=1 << 16)] = None,
) -> SharePublic:
    """Upload a column's shares (little-endian uint64; header Tally-Sha256)."""
    job_tokens.check_result(principal, str(dataset_id))
    return await uploads.upload_column_route(
        store, principal, request, response, str(dataset_id), column, partition, masked=False
    )


@router.get("/{dataset_id}/columns/{column}", responses={**OCTET_RESPONSE, **error_responses(403)})
def download_column(
    dataset_id: DatasetId,
    column: ColumnName,
    store: StoreDep,
    principal: CurrentPrincipal,
    partition: Annotated[int | None, Query(ge=0, le=1 << 16)] = None,
) -> StreamingResponse:
    """Stream a column's shares (one partition, or all in order)."""
    download = uploads.prepare_download(store, principal, str(dataset_id), column, partition)
    audit(
        "dataset.read",
        identity=principal.identity,
        dataset=str(dataset_id),
        column=column,
        partition=partition,
    )
    return stream_download(store, download)


def stream_download(store: StoreDep, download: uploads.Download) -> StreamingResponse:
    """A streaming octet-stream response for ``download``."""
    headers = {"Content-Length": str(download.size)}
    if download.sha256 is not None:
        headers[uploads.CHECKSUM_HEADER] = download.sha256
    return StreamingResponse(
        uploads.iter_download(store, download),
        media_type="application/octet-stream",
        headers=headers,
    )


@router.post("/{dataset_id}/commit", responses=error_responses(409))
def commit_dataset(
    dataset_id: DatasetId, store: StoreDep, principal: CurrentPrincipal
) -> DatasetPublic:
    """Make a fully uploaded dataset visible, atomically."""
    job_tokens.check_result(principal, str(dataset_id))
    committed = datasets.commit_dataset(store, principal, str(dataset_id))
    audit("dataset.commit", identity=principal.identity, dataset=str(dataset_id))
    return committed


@router.get("/{dataset_id}/tags")
def list_tags(
    dataset_id: DatasetId, store: StoreDep, principal: CurrentPrincipal
) -> dict[str, str]:
    """Get a dataset's tags."""
    return sharing.list_tags(store, principal, str(dataset_id))


@router.put("/{dataset_id}/tags/{key}", responses=error_responses(400, 403))
def put_tag(
    dataset_id: DatasetId,
    key: TagKey,
    body: TagUpdate,
    store: StoreDep,
    principal: CurrentPrincipal,
) -> dict[str, str]:
    """Set a tag (owner only; owner and created are reserved)."""
    return sharing.put_tag(store, principal, str(dataset_id), key, body.value)


@router.delete("/{dataset_id}/tags/{key}", status_code=204, responses=error_responses(400, 403))
def delete_tag(
    dataset_id: DatasetId, key: TagKey, store: StoreDep, principal: CurrentPrincipal
) -> None:
    """Remove a tag (owner only)."""
    sharing.delete_tag(store, principal, str(dataset_id), key)


@router.get("/{dataset_id}/grants", responses=error_responses(403))
def list_grants(
    dataset_id: DatasetId, store: StoreDep, principal: CurrentPrincipal
) -> list[GrantPublic]:
    """List who may read or use a dataset (owner only)."""
    return sharing.list_grants(store, principal, str(dataset_id))


@router.put("/{dataset_id}/grants/{grantee}/{permission}", responses=error_responses(400, 403))
def put_grant(
    dataset_id: DatasetId,
    grantee: Identity,
    permission: Permission,
    store: StoreDep,
    principal: CurrentPrincipal,
    response: Response,
    body: GrantUpdate | None = None,
) -> GrantPublic:
    """Grant read (shares) or use (job input, optionally per program) to an identity."""
    grant, created = sharing.put_grant(
        store, principal, str(dataset_id), grantee, permission, body or GrantUpdate()
    )
    audit(
        "grant.put",
        identity=principal.identity,
        dataset=str(dataset_id),
        grantee=grantee,
        permission=permission,
    )
    response.status_code = 201 if created else 200
    return grant


@router.delete(
    "/{dataset_id}/grants/{grantee}/{permission}", status_code=204, responses=error_responses(403)
)
def delete_grant(
    dataset_id: DatasetId,
    grantee: Identity,
    permission: Permission,
    store: StoreDep,
    principal: CurrentPrincipal,
) -> None:
    """Revoke a grant (owner only)."""
    sharing.delete_grant(store, principal, str(dataset_id), grantee, permission)
    audit(
        "grant.delete",
        identity=principal.identity,
        dataset=str(dataset_id),
        grantee=grantee,
        permission=permission,
    )


@router.get("/{dataset_id}/policy")
def get_policy(
    dataset_id: DatasetId, store: StoreDep, principal: CurrentPrincipal
) -> DisclosurePolicy:
    """Get a dataset's disclosure policy (what jobs may release, and to whom)."""
    return policies.get_policy(store, principal, str(dataset_id))


@router.put("/{dataset_id}/policy", responses=error_responses(403, 422))
def put_policy(
    dataset_id: DatasetId,
    body: DisclosurePolicy,
    store: StoreDep,
    principal: CurrentPrincipal,
) -> DisclosurePolicy:
    """Replace a dataset's disclosure policy (owner only)."""
    policy = policies.put_policy(store, principal, str(dataset_id), body)
    audit("policy.put", identity=principal.identity, dataset=str(dataset_id))
    return policy
