"""Intra-party routes: the party's execution service reads job inputs and writes results.

Only the party's service credential is accepted. Reads name the identity the job runs
for and the program; the dataset must be that identity's, or carry a ``use`` grant
covering the program. Results are created here with an owner and readers, then
uploaded and committed through the ordinary dataset routes with the same credential.
Differentially private jobs record the epsilon they spend on each input here, and the
dataset's budget is enforced.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from tally.common.audit import audit
from tally.common.auth import Principal
from tally.common.errors import error_responses
from tally.secret_store import datasets, job_tokens, policies, uploads
from tally.secret_store.api.datasets import stream_download
from tally.secret_store.api.deps import (
    OCTET_RESPONSE,
    ColumnName,
    DatasetId,
    ServicePrincipal,
    StoreDep,
)
from tally.secret_store.schemas import (
    DatasetPublic,
    DpChargeCreate,
    DpChargePublic,
    Identity,
    InputPublic,
    JobId,
    JobTokenCreate,
    JobTokenPublic,
    ProgramName,
    ResultDatasetCreate,
)

router = APIRouter(
    prefix="/v1/internal", tags=["intra-party"], responses=error_responses(401, 403, 404)
)

OnBehalfOf = Annotated[Identity, Query(description="the identity the job runs for")]
Program = Annotated[ProgramName, Query(description="the program that will read the input")]


@router.post("/datasets", status_code=201, responses=error_responses(409, 422))
def create_result(
    body: ResultDatasetCreate, store: StoreDep, service: ServicePrincipal, response: Response
) -> DatasetPublic:
    """Create a pending result dataset owned by a job's recipient."""
    job_tokens.check_result(service, str(body.id) if body.id else None, body.owner, body.readers)
    dataset, created = datasets.create_dataset(store, service, body)
    if not created:
        response.status_code = 200
    return dataset


@router.get("/datasets/{dataset_id}")
def get_input(
    dataset_id: DatasetId,
    identity: OnBehalfOf,
    program: Program,
    store: StoreDep,
    service: ServicePrincipal,
) -> InputPublic:
    """Get an input's metadata, disclosure policy and read grantees if the identity may
    use it for the program."""
    job_tokens.check_input(service, str(dataset_id), identity, program)
    view = policies.input_view(store, Principal(identity), str(dataset_id), program)
    job = job_tokens.job_of(service)
    audit("dataset.use", identity=identity, dataset=str(dataset_id), program=program, job=job)
    return view


@router.get("/datasets/{dataset_id}/columns/{column}", responses=OCTET_RESPONSE)
def read_input(
    dataset_id: DatasetId,
    column: ColumnName,
    identity: OnBehalfOf,
    program: Program,
    store: StoreDep,
    service: ServicePrincipal,
    partition: Annotated[int | None, Query(ge=0, le=1 << 16)] = None,
) -> StreamingResponse:
    """Stream an input column's shares for a job."""
    job_tokens.check_input(service, str(dataset_id), identity, program)
    download = uploads.prepare_download(
        store, Principal(identity), str(dataset_id), column, partition, program=program
    )
    audit(
        "dataset.use.read",
        identity=identity,
        dataset=str(dataset_id),
        column=column,
        job=job_tokens.job_of(service),
    )
    return stream_download(store, download)


@router.post("/datasets/{dataset_id}/dp-charges", status_code=201, responses=error_responses(409))
def charge_dp(
    dataset_id: DatasetId,
    body: DpChargeCreate,
    store: StoreDep,
    service: ServicePrincipal,
    response: Response,
) -> DpChargePublic:
    """Record the epsilon a differentially private job spends on an input (DESIGN 6.5).

    409 ``privacy_budget_exhausted`` when the dataset's budget has not that much left;
    the same job charged again with the same epsilon gets its charge back (200).
    """
    charge, created = datasets.charge_dp(store, str(dataset_id), body)
    audit(
        "dp.charge",
        identity=body.identity,
        dataset=str(dataset_id),
        job=body.job_id,
        epsilon=body.epsilon,
        delta=body.delta,
    )
    if not created:
        response.status_code = 200
    return charge


@router.post("/job-tokens", status_code=201, responses=error_responses(422))
def issue_job_token(
    body: JobTokenCreate, store: StoreDep, service: ServicePrincipal
) -> JobTokenPublic:
    """A credential for one job's workers: reads its inputs, writes its results, nothing
    else; shown once, stored as its SHA-256 (the execution service asks as a job starts)."""
    job_tokens.check_issuer(service)
    return job_tokens.issue(store, service, body)


@router.delete("/job-tokens/{job_id}", responses=error_responses(403))
def revoke_job_tokens(job_id: JobId, store: StoreDep, service: ServicePrincipal) -> dict[str, int]:
    """Revoke every token of a job (it has ended); how many were live."""
    job_tokens.check_issuer(service)
    return {"revoked": job_tokens.revoke(store, service, job_id)}
