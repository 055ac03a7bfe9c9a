"""Job inputs and result datasets in the party's secret-store, over its REST API.

:class:`SecretStoreDatasets` is both the ``InputStore`` and the ``ResultStore`` of a
deployment.  Every call carries this party's service credential; the secret-store
checks, on every read, that the identity the job runs for owns the dataset or holds
a ``use`` grant covering the program.

* Inputs: ``GET /v1/internal/datasets/{id}?identity&program`` (metadata), then one
  ``GET …/columns/{column}`` per column, streamed straight into a numpy array and
  checked against its length and ``Tally-Sha256``.  A column named ``valid`` is the
  row weight (:data:`tally.common.result_layout.VALID_COLUMN`), not a data column.
* Results: ``POST /v1/internal/datasets`` (pending, owned by the submitter, ``read``
  grants for the recipients), the ordinary column uploads and commit with the same
  credential.  The id is derived from the job and output, so it is the same at
  every party and a retried write finds the dataset again (every step is idempotent).
  Layout tags: :mod:`tally.common.result_layout`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from tally.common.https import client_context
from tally.common.policy import DisclosurePolicy
from tally.common.result_layout import JOB_TAG, OUTPUT_TAG, VALID_COLUMN, layout_tags
from tally.execution.ports import (
    DatasetInfo,
    InputError,
    ResultTable,
    ServiceError,
    spec_from_schema,
)
from tally.mpc.ring import Shares
from tally.mpc.table import ColumnSpec

CHECKSUM_HEADER = "Tally-Sha256"
RESULT_NAMESPACE = uuid.UUID("5f0d3c64-2d7e-4c1e-9a43-6d1c8f4b7a10")
"""uuid5 namespace of result dataset ids: the same job and output give the same id."""


def result_dataset_id(job_id: str, output: str) -> str:
    """The id of a job output's result dataset (equal at every party)."""
    return str(uuid.uuid5(RESULT_NAMESPACE, f"{job_id}/{output}"))


def column_schema(name: str, spec: ColumnSpec) -> dict[str, Any]:
    """A secret-store column for an engine ``ColumnSpec``."""
    if spec.kind == "fixed":
        return {"name": name, "kind": "fixed", "frac_bits": spec.frac_bits}
    return {"name": name, "kind": spec.kind, "bits": spec.bits}


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("detail", body))
    except ValueError:
        return response.text[:500]


class SecretStoreDatasets:
    """``InputStore`` and ``ResultStore`` over the party's secret-store."""

    def __init__(
        self, base_url: str, token: str, timeout: float = 300.0, ca: Path | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=10.0),
            verify=client_context(ca),
            trust_env=False,
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    # -- job tokens ----------------------------------------------------------------------------

    def issue_job_token(
        self,
        job_id: str,
        identity: str,
        program: str,
        inputs: list[str],
        results: list[tuple[str, list[str]]],
        ttl_s: float,
    ) -> str:
        """A credential for the job's workers: reads ``inputs`` for ``identity`` and
        ``program``, writes the ``results`` (dataset id, readers), nothing else."""
        body = {
            "job_id": job_id,
            "identity": identity,
            "program": program,
            "inputs": sorted(set(inputs)),
            "results": [{"id": d, "readers": sorted(set(r))} for d, r in results],
            "ttl_s": ttl_s,
        }
        response = self._request("POST", "/v1/internal/job-tokens", json=body)
        if response.status_code != 201:
            raise ServiceError(
                f"secret-store refused a credential for job {job_id} ({response.status_code}): "
                f"{_detail(response)}"
            )
        token: str = response.json()["token"]
        return token

    def revoke_job_tokens(self, job_id: str) -> None:
        """Revoke the job's credentials (it has ended)."""
        response = self._request("DELETE", f"/v1/internal/job-tokens/{quote(job_id, safe='')}")
        if response.status_code != 200:
            raise ServiceError(
                f"secret-store did not revoke the credentials of job {job_id} "
                f"({response.status_code}): {_detail(response)}"
            )

    # -- plumbing ------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ServiceError(f"secret-store at {self.base_url} unreachable: {error}") from None

    def _input_error(self, response: httpx.Response, dataset_id: str) -> InputError:
        detail = _detail(response)
        if response.status_code in (404, 422):  # 422: not a dataset id at all
            return InputError(404, "unknown_dataset", f"dataset {dataset_id!r} not found")
        if response.status_code == 403:
            return InputError(403, "dataset_forbidden", detail)
        if response.status_code == 401:
            detail = "the secret-store refused this party's service credential: " + detail
        return InputError(
            503, "secret_store_error", f"secret-store answered {response.status_code}: {detail}"
        )

    # -- inputs --------------------------------------------------------------------------------

    def describe(self, dataset_id: str, identity: str, program: str) -> DatasetInfo:
        try:
            response = self._request(
                "GET",
                f"/v1/internal/datasets/{quote(dataset_id, safe='')}",
                params={"identity": identity, "program": program},
            )
        except ServiceError as error:
            raise InputError(503, "secret_store_unavailable", str(error)) from None
        if response.status_code != 200:
            raise self._input_error(response, dataset_id)
        body = response.json()
        columns = {
            c["name"]: spec_from_schema(c["kind"], c["bits"], c["frac_bits"])
            for c in body["columns"]
            if c["name"] != VALID_COLUMN
        }
        has_valid = any(c["name"] == VALID_COLUMN for c in body["columns"])
        budget = body.get("dp_budget")
        return DatasetInfo(
            body["id"],
            columns,
            int(body["rows"]),
            int(body["partitions"]),
            has_valid,
            None if budget is None else float(budget),
            owner=str(body["owner"]),
            policy=DisclosurePolicy.model_validate(body.get("policy") or {}),
            readers=tuple(body.get("readers") or ()),
        )

    def charge_dp(
        self,
        dataset_id: str,
        identity: str,
        program: str,
        job_id: str,
        epsilon: float,
        delta: float = 0.0,
    ) -> None:
        body = {
            "job_id": job_id,
            "identity": identity,
            "program": program,
            "epsilon": epsilon,
            "delta": delta,
        }
        try:
            response = self._request(
                "POST", f"/v1/internal/datasets/{quote(dataset_id, safe='')}/dp-charges", json=body
            )
        except ServiceError as error:
            raise InputError(503, "secret_store_unavailable", str(error)) from None
        if response.status_code == 409:
            raise InputError(409, "privacy_budget_exhausted", _detail(response))
        if response.status_code not in (200, 201):
            raise self._input_error(response, dataset_id)

    def read(
        self, info: DatasetInfo, identity: str, program: str, partition: int | None
    ) -> dict[str, Shares]:
        names = [*info.columns, *([VALID_COLUMN] if info.has_valid else [])]
        rows = info.rows if partition is None else info.rows_per_partition
        params: dict[str, Any] = {"identity": identity, "program": program}
        if partition is not None:
            params["partition"] = partition
        return {name: self._read_column(info.id, name, rows, params) for name in names}

    def _read_column(
        self, dataset_id: str, column: str, rows: int, params: Mapping[str, Any]
    ) -> Shares:
        values = np.empty(rows, dtype="<u8")
        view = values.data.cast("B")
        hasher, received = hashlib.sha256(), 0
        path = f"/v1/internal/datasets/{quote(dataset_id, safe='')}/columns/{quote(column)}"
        try:
            with self._client.stream("GET", path, params=params) as response:
                if response.status_code != 200:
                    response.read()
                    raise self._input_error(response, dataset_id)
                for chunk in response.iter_bytes():
                    if received + len(chunk) > len(view):
                        raise ServiceError(f"column {column!r} of {dataset_id} is too long")
                    view[received : received + len(chunk)] = chunk
                    hasher.update(chunk)
                    received += len(chunk)
                claimed = response.headers.get(CHECKSUM_HEADER)
        except httpx.HTTPError as error:
            raise ServiceError(f"secret-store at {self.base_url} unreachable: {error}") from None
        if received != len(view):
            raise ServiceError(
                f"column {column!r} of {dataset_id}: {received} bytes, expected {len(view)}"
            )
        if claimed is not None and claimed != hasher.hexdigest():
            raise ServiceError(f"column {column!r} of {dataset_id} failed its checksum")
        return values.view(np.uint64)

    # -- results -------------------------------------------------------------------------------

    def write(
        self, job_id: str, output: str, parts: list[ResultTable], owner: str, readers: list[str]
    ) -> str:
        """Store one output (one table per partition) as a committed dataset; returns its id."""
        first = parts[0]
        names = list(first.specs)
        if VALID_COLUMN in names:
            raise ServiceError(f"output {output!r} has a column named {VALID_COLUMN!r}")
        sizes = {len(part.valid) for part in parts}
        if len(sizes) != 1:
            raise ServiceError(f"the parts of output {output!r} differ in length: {sizes}")
        dataset_id = result_dataset_id(job_id, output)
        body = {
            "id": dataset_id,
            "name": f"result-{job_id}-{output}",
            "columns": [column_schema(n, first.specs[n]) for n in names]
            + [{"name": VALID_COLUMN, "kind": "bool"}],
            "rows": sizes.pop() * len(parts),
            "partitions": len(parts),
            "tags": {
                JOB_TAG: job_id,
                OUTPUT_TAG: output,
                **layout_tags(first.derived, first.order),
            },
            "owner": owner,
            "readers": sorted(set(readers)),
        }
        created = self._request("POST", "/v1/internal/datasets", json=body)
        if created.status_code not in (200, 201):
            raise ServiceError(
                f"secret-store refused result dataset {dataset_id} ({created.status_code}): "
                f"{_detail(created)}"
            )
        if created.json()["state"] == "committed":  # written before this worker restarted
            return dataset_id
        for index, part in enumerate(parts):
            for name in names:
                self._upload(dataset_id, name, index, part.columns[name], len(parts))
            self._upload(dataset_id, VALID_COLUMN, index, part.valid, len(parts))
        committed = self._request("POST", f"/v1/datasets/{dataset_id}/commit")
        if committed.status_code != 200 and "already committed" not in _detail(committed):
            raise ServiceError(
                f"secret-store could not commit result dataset {dataset_id} "
                f"({committed.status_code}): {_detail(committed)}"
            )
        return dataset_id

    def _upload(
        self, dataset_id: str, column: str, partition: int, values: Shares, partitions: int
    ) -> None:
        data = np.ascontiguousarray(values, dtype="<u8").tobytes()
        response = self._request(
            "PUT",
            f"/v1/datasets/{dataset_id}/columns/{column}",
            params={"partition": partition} if partitions > 1 else None,
            content=data,
            headers={
                "Content-Type": "application/octet-stream",
                CHECKSUM_HEADER: hashlib.sha256(data).hexdigest(),
            },
        )
        if response.status_code not in (200, 201):
            raise ServiceError(
                f"secret-store refused column {column!r} of result dataset {dataset_id} "
                f"({response.status_code}): {_detail(response)}"
            )
