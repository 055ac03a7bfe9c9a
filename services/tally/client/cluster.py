"""``Cluster``: the SDK's one user-facing object, a deployment of n parties seen by one identity.

::

    cluster = tally.connect("parties.yaml")          # or tally.local()
    cluster.upload(frame, name="views-acme", keys=["region"])
    cluster.table("views-acme").group_by("region").agg(total=("views", "sum")).to_pandas()
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from tally.client.config import ClientConfig, load_config
from tally.client.errors import InputError, TallyError, UnknownDatasetError
from tally.client.http import ServiceClient, at_every_party, settle_at_every_party
from tally.client.jobs import Job, JobRecord, new_job_id
from tally.client.keys import KeyDictionary
from tally.client.table import Query, Table
from tally.client.upload import Mode, Uploader, prepare_upload
from tally.common.job_ids import scoped_job_id
from tally.common.policy import DisclosurePolicy

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class Dataset:
    """A committed dataset's public metadata (as party 0 reports it)."""

    id: str
    name: str
    owner: str
    rows: int
    partitions: int
    columns: list[dict[str, Any]]
    tags: dict[str, str]
    created_at: str
    masked: bool
    dp_budget: float | None = None
    """Total epsilon that differentially private jobs may spend on it; None: no cap."""
    dp_spent: float = 0.0
    dp_delta_spent: float = 0.0
    """Epsilon spent so far (at party 0)."""

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Dataset:
        return cls(
            id=str(body["id"]),
            name=str(body["name"]),
            owner=str(body["owner"]),
            rows=int(body["rows"]),
            partitions=int(body["partitions"]),
            columns=[
                {k: c[k] for k in ("name", "kind", "bits", "frac_bits")} for c in body["columns"]
            ],
            tags=dict(body.get("tags", {})),
            created_at=str(body.get("created_at", "")),
            masked=bool(body.get("masked", False)),
            dp_budget=None if body.get("dp_budget") is None else float(body["dp_budget"]),
            dp_spent=float(body.get("dp_spent", 0.0)),
            dp_delta_spent=float(body.get("dp_delta_spent", 0.0)),
        )


class Cluster:
    """The parties of one deployment, as one identity sees them."""

    def __init__(self, config: ClientConfig, show_progress: bool | None = None) -> None:
        self.config = config
        self.show_progress = show_progress
        self.stores = [ServiceClient(p, "secret-store", p.secret_store) for p in config.parties]
        self.executions = [ServiceClient(p, "execution", p.execution) for p in config.parties]
        self.dictionary = KeyDictionary(config.client_dir / "keys.json")

    def __repr__(self) -> str:
        return (
            f"Cluster({self.config.name!r}, parties={len(self.config.parties)}, "
            f"identity={self.config.identity!r})"
        )

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        for client in [*self.stores, *self.executions]:
            client.close()

    @property
    def parties(self) -> int:
        """How many parties the deployment has."""
        return len(self.config.parties)

    @property
    def identity(self) -> str:
        """Who this client acts as."""
        return self.config.identity

    def as_identity(self, identity: str) -> Cluster:
        """The same deployment, acting as another identity configured in parties.yaml."""
        return Cluster(self.config.as_identity(identity), self.show_progress)

    # ------------------------------------------------------------------ datasets

    def upload(
        self,
        frame: pd.DataFrame,
        name: str,
        *,
        tags: Mapping[str, str] | None = None,
        partitions: int = 1,
        mode: Mode = "direct",
        keys: Sequence[str] | None = None,
        domains: Mapping[str, Sequence[Any]] | None = None,
        partition_by: Sequence[str] | None = None,
        share_with: Sequence[str] = (),
        replace: bool = False,
        dp_budget: float | None = None,
    ) -> Dataset:
        """Validate, secret-share and upload ``frame`` to every party; commit everywhere or nowhere.

        ``keys``: the key (group-by) columns; by default every text column.  Text keys
        are coded with the consortium key, or by position in ``domains[col]`` (a public
        list of all values).  ``partitions``: split rows by a keyed hash of the keys so P
        workers aggregate in parallel.  ``mode="masked"``: never hold all shares at once
        (masks from the parties).  ``share_with``: identities that may use the dataset
        in jobs.  ``replace``: replace your dataset of the same name.  ``dp_budget``: the
        total epsilon that jobs may spend on the dataset; every job on it must then use
        ``dp``, and the parties refuse a job that would overspend.
        """
        if dp_budget is not None and not (
            isinstance(dp_budget, (int, float)) and 0 < dp_budget <= 1000
        ):
            raise InputError("dp_budget must be a number above 0 and at most 1000 (epsilon)")
        if mode not in ("direct", "masked"):
            raise InputError(f"mode must be 'direct' or 'masked', not {mode!r}")
        if not isinstance(name, str) or not name.strip():
            raise InputError("give the dataset a name")
        existing = [d for d in self.datasets(name=name) if d.owner == self.identity]
        if existing and not replace:
            raise InputError(
                f"you already have a dataset named {name!r}; pass replace=True "
                "(CLI: --replace) or choose another name"
            )
        table = prepare_upload(
            frame,
            keys=keys,
            domains=domains,
            partitions=partitions,
            partition_by=partition_by,
            hash_key=self.config.key_hash_secret,
            dictionary=self.dictionary,
            tags=tags,
            partition_rows=self.config.partition_rows,
        )
        uploader = Uploader(self.stores, self.show_progress)
        record = uploader.run(table, name, mode, list(share_with), dp_budget)
        for old in existing:
            uploader.delete_everywhere(old.id)
        return Dataset.from_api(record)

    def datasets(
        self, name: str | None = None, tags: Mapping[str, str] | None = None
    ) -> list[Dataset]:
        """Committed datasets you own or may use (as party 0 lists them)."""
        params: list[tuple[str, str]] = [("limit", "1000"), ("sort", "name")]
        if name is not None:
            params.append(("name", name))
        params += [("tag", f"{k}:{v}") for k, v in (tags or {}).items()]
        page = self.stores[0].request("GET", "/v1/datasets", params=params)
        return [Dataset.from_api(item) for item in page["items"]]

    def dataset(self, name_or_id: str) -> Dataset:
        """One dataset by id or unique name; checks that every party holds it."""
        if _UUID.match(name_or_id):
            found = [Dataset.from_api(self.stores[0].request("GET", f"/v1/datasets/{name_or_id}"))]
        else:
            found = self.datasets(name=name_or_id)
        if not found:
            raise UnknownDatasetError(
                f"no dataset named {name_or_id!r} is visible to {self.identity!r}; "
                "`tally datasets` lists the ones you may use"
            )
        if len(found) > 1:
            owners = ", ".join(f"{d.id} (owner {d.owner})" for d in found)
            raise InputError(f"{len(found)} datasets are named {name_or_id!r}: {owners}; use an id")
        dataset = found[0]
        outcomes = settle_at_every_party(
            [
                lambda s=s: s.request("GET", f"/v1/datasets/{dataset.id}")  # type: ignore[misc]
                for s in self.stores[1:]
            ]
        )
        for party, outcome in enumerate(outcomes, start=1):
            if isinstance(outcome, UnknownDatasetError):
                raise UnknownDatasetError(
                    f"dataset {dataset.name!r} ({dataset.id}) is missing at party {party}"
                )
            if isinstance(outcome, BaseException):
                raise outcome
        return dataset

    def delete(self, name_or_id: str) -> None:
        """Delete one of your datasets at every party."""
        dataset = self.dataset(name_or_id)
        at_every_party(
            [
                lambda s=s: s.request("DELETE", f"/v1/datasets/{dataset.id}", allow=(404,))  # type: ignore[misc]
                for s in self.stores
            ]
        )

    def policy(self, name_or_id: str) -> DisclosurePolicy:
        """A dataset's disclosure policy: what jobs on it may release, and to whom.

        Every party enforces its own copy; a policy that differs between parties is
        reported (``InputError``) rather than shown as one of them.
        """
        dataset = self.dataset(name_or_id)
        bodies = at_every_party(
            [
                lambda s=s: s.request("GET", f"/v1/datasets/{dataset.id}/policy")  # type: ignore[misc]
                for s in self.stores
            ]
        )
        policies = [DisclosurePolicy.model_validate(body) for body in bodies]
        differing = [party for party, p in enumerate(policies) if p != policies[0]]
        if differing:
            raise InputError(
                f"dataset {dataset.name!r} has another policy at party "
                f"{', '.join(map(str, differing))} than at party 0; set it again with "
                "`tally policy set` (as its owner)"
            )
        return policies[0]

    def set_policy(
        self,
        name_or_id: str,
        policy: DisclosurePolicy | Mapping[str, Any] | None = None,
        **changes: Any,
    ) -> DisclosurePolicy:
        """Set the disclosure policy of one of your datasets at every party.

        ``policy`` replaces the whole policy; without it, ``changes`` (top-level rules:
        ``programs``, ``recipients``, ``min_group_size``, ``dp``) replace those rules of
        the current one::

            cluster.set_policy("views", min_group_size=10, dp={"required": True, "budget": 5})
        """
        dataset = self.dataset(name_or_id)
        if policy is None:
            base = self.policy(dataset.id).model_dump(mode="json")
        elif isinstance(policy, DisclosurePolicy):
            base = policy.model_dump(mode="json")
        else:
            base = dict(policy)
        try:
            chosen = DisclosurePolicy.model_validate({**base, **changes})
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'policy'}: {e['msg']}" for e in error.errors()
            )
            raise InputError(f"not a valid disclosure policy: {problems}") from None
        body = chosen.model_dump(mode="json")
        at_every_party(
            [
                lambda s=s: s.request("PUT", f"/v1/datasets/{dataset.id}/policy", json=body)  # type: ignore[misc]
                for s in self.stores
            ]
        )
        return chosen

    def table(self, *names: str) -> Table:
        """A handle on one or more datasets of one schema (rows concatenated)."""
        if not names:
            raise InputError("name at least one dataset")
        flat = [n for name in names for n in ([name] if isinstance(name, str) else name)]
        return Table(self, [self.dataset(name) for name in flat])

    def sql(self, statement: str) -> Query:
        """A query from one SQL statement: ``cluster.sql("SELECT campaign, SUM(amount)
        FROM views JOIN purchases USING (user_id) WHERE amount > 0 GROUP BY campaign")``.

        Tables are dataset names; the table after ``JOIN`` is the one whose key is unique.
        ``.to_pandas()`` runs it; unsupported SQL is refused by name before anything is
        submitted (:mod:`tally.common.sql`).  Every dataset's owner must allow the
        ``query`` program in its policy.
        """
        from tally.client.relation import plan_query, schemas_of
        from tally.common.sql import SqlError, compile_sql
        from tally.mpc.relational.plan import PlanError, check

        try:
            tables = {name: self.table(name) for name in compile_sql(statement).tables}
            schemas = schemas_of(tables)
            kinds = {n: {c: spec.kind for c, spec in v.items()} for n, v in schemas.items()}
            compiled = compile_sql(statement, kinds)
            check(compiled.plan, schemas)
        except (SqlError, PlanError) as error:
            raise InputError(str(error)) from None
        description = f"sql: {' '.join(statement.split())}"
        return plan_query(compiled.plan, tables, compiled.keys, description)

    # ------------------------------------------------------------------ jobs

    def submit(self, query: Query) -> Job:
        """Submit to every party (same id and spec); cancel everywhere if one refuses."""
        job_id = new_job_id()
        named = query.inputs or {"table": [d.id for d in query.table.datasets]}
        spec: dict[str, Any] = {
            "id": job_id,
            "program": query.program,
            "inputs": {name: ids if len(ids) > 1 else ids[0] for name, ids in named.items()},
            "params": query.params,
            "outputs": {"result": {"kind": "open", "recipients": [self.identity]}},
            "partitions": query.table.partitions,
        }
        if query.dp:
            spec["dp"] = dict(query.dp)
        record = JobRecord(
            job_id,
            spec,
            query.description,
            query.decode,
            query.post,
            service_id=scoped_job_id(self.identity, job_id),
        )
        record.save(self.jobs_dir)
        job = self._job(record)
        outcomes = settle_at_every_party(
            [lambda e=e: e.request("POST", "/v1/jobs", json=spec) for e in self.executions]  # type: ignore[misc]
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            job.cancel()
            error = errors[0]
            if isinstance(error, TallyError):
                raise error
            raise TallyError(f"submitting job {job_id} failed: {error}") from error
        return job

    @property
    def jobs_dir(self) -> Path:
        """Where this client keeps its job records."""
        return self.config.client_dir / "jobs"

    def _job(self, record: JobRecord) -> Job:
        return Job(
            record,
            self.executions,
            self.dictionary,
            self.config.key_hash_secret,
            self.show_progress,
        )

    def job(self, job_id: str) -> Job:
        """A job submitted from this client, by id."""
        return self._job(JobRecord.load(self.jobs_dir, job_id))

    def jobs(self) -> list[Job]:
        """Jobs submitted from this client, oldest first."""
        if not self.jobs_dir.exists():
            return []
        return [self._job(record) for record in JobRecord.all(self.jobs_dir)]

    # ------------------------------------------------------------------ health

    def health(self) -> list[dict[str, str]]:
        """Per party and service: ``ready`` or why not."""

        def probe(client: ServiceClient) -> str:
            try:
                client.request("GET", "/readyz")
                return "ready"
            except TallyError as error:
                return str(error)

        clients = [c for pair in zip(self.stores, self.executions, strict=True) for c in pair]
        states = settle_at_every_party([lambda c=c: probe(c) for c in clients])  # type: ignore[misc]
        return [
            {"party": str(c.party.index), "service": c.service, "url": c.base_url, "state": str(s)}
            for c, s in zip(clients, states, strict=True)
        ]


def connect(
    config: str | os.PathLike[str] | None = None,
    identity: str | None = None,
    show_progress: bool | None = None,
    insecure: bool = False,
) -> Cluster:
    """A :class:`Cluster` from a ``parties.yaml`` (default: ``TALLY_CONFIG``, then the
    current deployment recorded by ``tally local up``).  ``insecure`` allows plaintext
    ``http://`` to other machines, which the client otherwise refuses."""
    return Cluster(load_config(config, identity, insecure), show_progress)
