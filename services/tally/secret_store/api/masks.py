"""Routes for masked input (DESIGN §5.2): mask reservations and y = x − r uploads."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from tally.common.errors import error_responses
from tally.secret_store import datasets, masks, uploads
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
    DatasetPublic,
    InputMaskCreate,
    InputMaskPublic,
    MaskedInputCreate,
    SharePublic,
)

router = APIRouter(tags=["masked input"], responses=error_responses(401, 404))

ReservationId = Annotated[uuid.UUID, Path(description="mask reservation id")]


@router.post("/v1/input-masks", status_code=201, responses=error_responses(422))
def reserve_masks(
    body: InputMaskCreate, store: StoreDep, principal: ProviderPrincipal
) -> InputMaskPublic:
    """Reserve input masks; this party draws its shares r_i from the OS CSPRNG."""
    return masks.reserve_masks(store, principal, body.count)


@router.get("/v1/input-masks/{reservation_id}")
def get_reservation(
    reservation_id: ReservationId, store: StoreDep, principal: CurrentPrincipal
) -> InputMaskPublic:
    """Get a mask reservation."""
    return masks.get_reservation(store, principal, str(reservation_id))


@router.get(
    "/v1/input-masks/{reservation_id}/shares", responses={**OCTET_RESPONSE, **error_responses(410)}
)
def get_mask_shares(
    reservation_id: ReservationId, store: StoreDep, principal: CurrentPrincipal
) -> StreamingResponse:
    """Stream this party's mask shares r_i (little-endian uint64)."""
    size, chunks = masks.open_mask_shares(store, principal, str(reservation_id))
    return StreamingResponse(
        chunks, media_type="application/octet-stream", headers={"Content-Length": str(size)}
    )


@router.post("/v1/masked-inputs", status_code=201, responses=error_responses(409, 422))
def create_masked_input(
    body: MaskedInputCreate, store: StoreDep, principal: ProviderPrincipal, response: Response
) -> DatasetPublic:
    """Create a pending dataset for y = x − r, consuming the mask reservation once."""
    dataset, created = datasets.create_dataset(store, principal, body)
    if not created:
        response.status_code = 200
    return dataset


@router.put(
    "/v1/masked-inputs/{dataset_id}/columns/{column}",
    status_code=201,
    openapi_extra=OCTET_BODY,
    responses=error_responses(400, 409, 413, 415),
)
async def upload_masked_column(
    dataset_id: DatasetId,
    column: ColumnName,
    request: Request,
    store: StoreDep,
    principal: CurrentPrincipal,
    response: Response,
    partition: Annotated[int | None, Query(ge=0, le=1 << 16)] = None,
) -> SharePublic:
    """Upload a column's masked values y = x − r (little-endian uint64; Tally-Sha256)."""
    return await uploads.upload_column_route(
        store, principal, request, response, str(dataset_id), column, partition, masked=True
    )
