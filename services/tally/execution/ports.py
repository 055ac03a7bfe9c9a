"""What the execution service needs from the party's other services, as small interfaces.

* :class:`InputStore`: dataset metadata and this party's shares of a job's inputs,
  checked against the identity the job runs for and its program.
* :class:`ResultStore`: result datasets of shares, readable by named recipients.
* :class:`TupleProvider`: a job's tuple reservation; a ``TupleSource`` per worker
  that starts at a position nobody has consumed and records what it hands out.

Implementations:

* :mod:`tally.execution.remote`: the party's secret-store over its REST API;
* :mod:`tally.execution.leases`: the party's tuple-service (party 0 reserves, the
  reservation is the same at every party);
* :mod:`tally.execution.local`: a blob store per party, and a seeded dealer with a
  consumption ledger (development and tests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from tally.common.policy import DisclosurePolicy
from tally.mpc.ring import Shares
from tally.mpc.table import ColumnSpec
from tally.mpc.tuples import TupleSource


class ServiceError(RuntimeError):
    """A party service (secret-store, tuple-service) refused or failed a request."""


class InputError(Exception):
    """A job input cannot be used; ``code`` and ``status`` say why for the REST API."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class DatasetInfo:
    """Public metadata of one input dataset at this party."""

    id: str
    columns: dict[str, ColumnSpec]
    rows: int
    partitions: int
    has_valid: bool
    dp_budget: float | None = None
    """The total epsilon differentially private jobs may spend on it; None: no cap."""
    owner: str = ""
    policy: DisclosurePolicy = field(default_factory=DisclosurePolicy)
    """Its owner's disclosure policy (binding every job run for someone else)."""
    readers: tuple[str, ...] = ()
    """Identities holding a read grant on it (recipients a policy may allow)."""

    @property
    def rows_per_partition(self) -> int:
        """Rows of one partition (partitions are padded to equal size)."""
        return self.rows // max(self.partitions, 1)


def spec_from_schema(kind: str, bits: int, frac_bits: int) -> ColumnSpec:
    """An engine ``ColumnSpec`` for a secret-store column kind (int | fixed | key | bool)."""
    if kind == "bool":
        return ColumnSpec("int", bits=2)
    if kind == "fixed":
        return ColumnSpec("fixed", frac_bits=frac_bits)
    if kind == "key":
        return ColumnSpec("key", bits=bits)
    return ColumnSpec("int", bits=bits)


class InputStore(Protocol):
    """Reads job inputs from the party's secret-store."""

    def describe(self, dataset_id: str, identity: str, program: str) -> DatasetInfo:
        """Metadata if ``identity`` may use the dataset for ``program``; else ``InputError``."""
        ...

    def read(
        self, info: DatasetInfo, identity: str, program: str, partition: int | None
    ) -> dict[str, Shares]:
        """This party's shares of every column (and ``valid``) of one partition, or all."""
        ...

    def charge_dp(
        self,
        dataset_id: str,
        identity: str,
        program: str,
        job_id: str,
        epsilon: float,
        delta: float = 0.0,
    ) -> None:
        """Record that a job spends ``epsilon`` on the dataset; ``InputError`` when its
        privacy budget has not that much left (the same job again is no second charge)."""
        ...


@dataclass(frozen=True)
class ResultTable:
    """One output table's shares at this party, ready to store."""

    columns: dict[str, Shares]
    specs: dict[str, ColumnSpec]
    valid: Shares
    derived: dict[str, list[str]]
    order: list[str] | None


class ResultStore(Protocol):
    """Writes result datasets to the party's secret-store."""

    def write(
        self,
        job_id: str,
        output: str,
        parts: list[ResultTable],
        owner: str,
        readers: list[str],
    ) -> str:
        """Store one output (one table per partition) as a dataset; returns its id."""
        ...


class TupleProvider(Protocol):
    """A job's offline material at this party."""

    leads: bool
    """Whether this party makes the reservations (and wants :meth:`reserve`'s ``needs``)."""

    def reserve(self, job_id: str, workers: int, needs: Mapping[str, int]) -> None:
        """Reserve material for the job (the leader's reservation reaches every party).

        ``needs``: estimated tuples per kind for each worker (empty when unknown).
        """
        ...

    def release(self, job_id: str) -> None:
        """Give back the unconsumed part of the job's reservation."""
        ...

    def next_free(self, job_id: str, worker: int) -> dict[str, int]:
        """A position at or after everything this party has consumed for the worker."""
        ...

    def open(
        self,
        job_id: str,
        worker: int,
        start: Mapping[str, int],
        interrupted: Callable[[], BaseException | None] | None = None,
    ) -> TupleSource:
        """A source starting at ``start`` that records every batch before handing it out.

        ``interrupted`` returns an error once waiting for another party is pointless
        (the mesh broke); a source that waits for party 0 raises it.
        """
        ...
