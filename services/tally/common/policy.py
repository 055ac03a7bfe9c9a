"""A dataset's disclosure policy: what its owner lets leave, and to whom (DESIGN §6.6).

Input privacy is the protocols' job; every opened value, released key and recipient
is a disclosure, and the dataset's owner decides which ones happen.  The policy is
stored with the dataset in every party's secret-store and checked by every party's
execution service before a job reserves a tuple.  It binds every job that reads the
dataset for someone other than its owner (the owner may read its own shares, so a
rule against the owner would protect nothing).  A job reading several datasets must
satisfy each one's policy: its effective policy is their intersection
(:func:`combine` computes it for display).

Rules, with their defaults (a dataset nobody configured is aggregate-only):

* ``programs``: the programs a job may run on the dataset — built-in names, or the
  SHA-256 of a registered program.  Default: the aggregates ``groupby``, ``sum`` and
  ``count``; ``sort`` (a row-level output) only where the owner lists it.
* ``recipients``: who may receive an output — the job's submitter (default yes),
  holders of a ``read`` grant on the dataset (default no), named identities.
* ``min_group_size``: k; groups with fewer valid rows are suppressed inside MPC
  (a group-by's ``min_group_size`` must be at least k; programs that cannot honour
  it are refused).
* ``dp``: whether differential privacy is required, the epsilon and delta one job
  may spend on the dataset, the total budgets, clip bounds the job's must lie
  within, and the privacy unit (with its contribution bound) jobs must bound by.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from tally.common.auth import IDENTITY_PATTERN

AGGREGATE_PROGRAMS = ("groupby", "sum", "count")
"""The programs a dataset allows when its owner set nothing."""

MAX_MIN_GROUP_SIZE = 1_000_000

Identity = Annotated[str, StringConstraints(pattern=IDENTITY_PATTERN)]
ProgramRef = Annotated[str, StringConstraints(pattern=r"^([a-z][a-z0-9_-]{0,63}|[0-9a-f]{64})$")]
ColumnRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class RecipientRule(BaseModel):
    """Who may receive a job's outputs (any one of these suffices)."""

    model_config = ConfigDict(extra="forbid")

    submitter: bool = Field(default=True, description="the identity that submits the job")
    readers: bool = Field(default=False, description="holders of a read grant on the dataset")
    identities: list[Identity] = Field(
        default_factory=list, max_length=256, description="these identities"
    )


class DpRule(BaseModel):
    """Differential privacy the owner asks of every job on the dataset."""

    model_config = ConfigDict(extra="forbid")

    required: bool = Field(default=False, description="jobs must set dp")
    epsilon_max: float | None = Field(
        default=None, gt=0, le=100, description="epsilon one job may spend on the dataset"
    )
    delta_max: float | None = Field(
        default=None, ge=0, lt=1, description="delta one job may spend on the dataset"
    )
    budget: float | None = Field(
        default=None, gt=0, le=1e6, description="total epsilon all jobs may spend"
    )
    delta_budget: float | None = Field(
        default=None, ge=0, lt=1, description="total delta all jobs may spend"
    )
    clip: dict[ColumnRef, tuple[float, float]] = Field(
        default_factory=dict,
        max_length=1024,
        description="per column, [lo, hi]: a job's clip bounds must lie within these",
    )
    unit: ColumnRef | None = Field(
        default=None, description="the privacy unit column a job must bound contributions by"
    )
    max_contributions: int | None = Field(
        default=None, ge=1, le=1_000_000, description="at most this many rows per unit"
    )

    @model_validator(mode="after")
    def _consistent(self) -> DpRule:
        for column, (lo, hi) in self.clip.items():
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f"clip bounds of {column!r} must be finite with lo <= hi")
        if self.max_contributions is not None and self.unit is None:
            raise ValueError("max_contributions needs the privacy unit column (unit)")
        return self


class DisclosurePolicy(BaseModel):
    """Everything a dataset's owner lets leave the system, and to whom."""

    model_config = ConfigDict(extra="forbid")

    programs: list[ProgramRef] = Field(
        default_factory=lambda: list(AGGREGATE_PROGRAMS),
        max_length=64,
        description="programs a job may run: built-in names or registered SHA-256 digests",
    )
    recipients: RecipientRule = Field(default_factory=RecipientRule)
    min_group_size: int = Field(
        default=0,
        ge=0,
        le=MAX_MIN_GROUP_SIZE,
        description="groups with fewer valid rows are suppressed inside MPC (0: off)",
    )
    dp: DpRule = Field(default_factory=DpRule)

    def allows_program(self, name: str, digest: str) -> bool:
        """Whether a program (by built-in name or by digest) is listed."""
        return name in self.programs or digest in self.programs


def _least(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _clip_within(policies: Sequence[DisclosurePolicy]) -> dict[str, tuple[float, float]]:
    clip: dict[str, tuple[float, float]] = {}
    for policy in policies:
        for column, (lo, hi) in policy.dp.clip.items():
            old = clip.get(column)
            clip[column] = (lo, hi) if old is None else (max(old[0], lo), min(old[1], hi))
    return clip


def combine(policies: Sequence[DisclosurePolicy]) -> DisclosurePolicy:
    """The intersection of several datasets' policies: what a job reading all may do.

    Programs and named recipients are intersected, flags are ANDed (``readers`` then
    means a read grant on every input), minimum sizes and requirements take the
    strictest, clip bounds the narrowest.  Two different privacy units cannot both be
    honoured by one bound: the first is kept and :func:`conflicts` reports the clash.
    """
    if not policies:
        return DisclosurePolicy()
    programs = [p for p in policies[0].programs if all(p in q.programs for q in policies)]
    names = [i for i in policies[0].recipients.identities]
    identities = [i for i in names if all(i in q.recipients.identities for q in policies)]
    units = [p.dp.unit for p in policies if p.dp.unit is not None]
    bounds = [p.dp.max_contributions for p in policies if p.dp.max_contributions is not None]
    return DisclosurePolicy(
        programs=programs,
        recipients=RecipientRule(
            submitter=all(p.recipients.submitter for p in policies),
            readers=all(p.recipients.readers for p in policies),
            identities=identities,
        ),
        min_group_size=max(p.min_group_size for p in policies),
        dp=DpRule.model_construct(
            required=any(p.dp.required for p in policies),
            epsilon_max=_least([p.dp.epsilon_max for p in policies]),
            delta_max=_least([p.dp.delta_max for p in policies]),
            budget=_least([p.dp.budget for p in policies]),
            delta_budget=_least([p.dp.delta_budget for p in policies]),
            clip=_clip_within(policies),
            unit=units[0] if units else None,
            max_contributions=min(bounds) if bounds else None,
        ),
    )


def conflicts(policies: Sequence[DisclosurePolicy]) -> list[str]:
    """Rules of several policies that no single job can satisfy at once."""
    found = []
    units = sorted({p.dp.unit for p in policies if p.dp.unit is not None})
    if len(units) > 1:
        found.append(f"dp.unit: the inputs name different privacy units {units}")
    for column, (lo, hi) in _clip_within(policies).items():
        if lo > hi:
            found.append(f"dp.clip: the inputs' bounds of {column!r} do not overlap")
    return found
