"""Request and response bodies of the secret-store API, named by role.

``…Create`` / ``…Update`` come in, ``…Public`` go out. Names are validated here so
that nothing odd reaches SQL or blob keys: column names are identifiers (they appear
in URLs and programs), dataset names are printable text without path separators,
NFC-normalized.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from tally.common.auth import IDENTITY_PATTERN
from tally.common.policy import DisclosurePolicy

ColumnKind = Literal["int", "fixed", "key", "bool"]
Permission = Literal["read", "use"]
SortKey = Literal["created", "-created", "name", "-name", "rows", "-rows"]

RESERVED_TAGS = frozenset({"owner", "created"})
"""Tags the server sets itself: who owns a dataset and when it was created."""

MAX_ROWS = 1 << 40
MAX_PARTITIONS = 1 << 16
DEFAULT_FRAC_BITS = 16
DEFAULT_KEY_BITS = 32

ColumnName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
TagKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
TagValue = Annotated[str, StringConstraints(max_length=256)]
Identity = Annotated[str, StringConstraints(pattern=IDENTITY_PATTERN)]
ProgramName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,127}$")]

_FIXED = re.compile(r"^fixed\((\d{1,2})\)$")


def check_dataset_name(name: str) -> str:
    """NFC-normalize ``name``; refuse separators, control characters and odd spacing."""
    name = unicodedata.normalize("NFC", name)
    if not 1 <= len(name) <= 200:
        raise ValueError("dataset name must be 1 to 200 characters")
    if name != name.strip():
        raise ValueError("dataset name must not start or end with whitespace")
    for char in name:
        if char in "/\\":
            raise ValueError("dataset name must not contain path separators ('/' or '\\')")
        if unicodedata.category(char)[0] in "CZ" and char != " ":
            raise ValueError("dataset name must not contain control or separator characters")
    return name


class ColumnSchema(BaseModel):
    """One column: name, kind and encoding. ``kind`` may be written ``fixed(f)``."""

    model_config = ConfigDict(extra="forbid")

    name: ColumnName
    kind: ColumnKind
    bits: int = Field(default=0, ge=0, le=63, description="key width / declared int width")
    frac_bits: int = Field(default=0, ge=0, le=62, description="fractional bits of fixed")

    @model_validator(mode="before")
    @classmethod
    def _parse_fixed(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("kind"), str):
            match = _FIXED.match(data["kind"])
            if match:
                if data.get("frac_bits") not in (None, int(match.group(1))):
                    raise ValueError("kind fixed(f) and frac_bits disagree")
                return {**data, "kind": "fixed", "frac_bits": int(match.group(1))}
        return data

    @model_validator(mode="after")
    def _defaults(self) -> ColumnSchema:
        if self.kind != "fixed" and self.frac_bits:
            raise ValueError(f"frac_bits applies to fixed columns only, not {self.kind}")
        if self.kind == "bool" and self.bits not in (0, 1):
            raise ValueError("a bool column has 1 bit")
        if self.kind == "fixed" and self.frac_bits == 0:
            self.frac_bits = DEFAULT_FRAC_BITS
        if self.kind == "key" and self.bits == 0:
            self.bits = DEFAULT_KEY_BITS
        if self.kind == "bool":
            self.bits = 1
        return self


class DatasetCreate(BaseModel):
    """A new dataset; send the same body again with the same ``id`` to retry safely."""

    model_config = ConfigDict(extra="forbid")

    random_ids_only: ClassVar[bool] = True
    """Client-chosen ids must be random (version 4) UUIDs: result datasets' ids are
    derived from their job (version 5), and nobody may take one before the job does."""

    id: uuid.UUID | None = Field(
        default=None, description="client-chosen random (version 4) id (idempotent retry)"
    )
    name: str
    columns: list[ColumnSchema] = Field(min_length=1, max_length=1024)
    rows: int = Field(ge=0, le=MAX_ROWS)
    partitions: int = Field(default=1, ge=1, le=MAX_PARTITIONS)
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=64)
    dp_budget: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="total epsilon that differentially private jobs may spend on this dataset "
        "(DESIGN 6.5); none: no cap, the spending is still recorded",
    )

    @field_validator("id")
    @classmethod
    def _random_id(cls, value: uuid.UUID | None) -> uuid.UUID | None:
        if value is not None and cls.random_ids_only and value.version != 4:
            raise ValueError(
                "choose a random (version 4) UUID: other versions are reserved for the "
                "result datasets of jobs"
            )
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_dataset_name(value)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(RESERVED_TAGS & value.keys())
        if reserved:
            raise ValueError(f"tags {reserved} are reserved; the server sets them")
        return value

    @model_validator(mode="after")
    def _shape(self) -> DatasetCreate:
        names = [column.name for column in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("column names must be unique")
        if self.rows % self.partitions:
            raise ValueError(
                f"rows ({self.rows}) must be a multiple of partitions ({self.partitions}): "
                "pad the partitions to equal size"
            )
        return self


class ResultDatasetCreate(DatasetCreate):
    """A result dataset written by the party's execution service for ``owner``."""

    random_ids_only: ClassVar[bool] = False

    owner: Identity
    readers: list[Identity] = Field(default_factory=list, max_length=256)


class MaskedInputCreate(DatasetCreate):
    """A dataset uploaded as y = x − r against a mask reservation (DESIGN §5.2)."""

    reservation_id: uuid.UUID


JobId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


class JobResult(BaseModel):
    """A result dataset a job token may write: its id and its readers."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    readers: list[Identity] = Field(default_factory=list, max_length=256)


class JobTokenCreate(BaseModel):
    """The scope of a job's worker credential (execution service only)."""

    model_config = ConfigDict(extra="forbid")

    job_id: JobId
    identity: Identity = Field(description="who the job runs for: it owns the results")
    program: ProgramName
    inputs: list[uuid.UUID] = Field(max_length=1024, description="datasets the job may read")
    results: list[JobResult] = Field(
        default_factory=list, max_length=1 << 16, description="result datasets it may write"
    )
    ttl_s: float = Field(gt=0, description="seconds until the token expires (capped)")


class JobTokenPublic(BaseModel):
    """A new job token: shown once, stored only as its SHA-256."""

    job_id: str
    token: str
    expires_at: datetime


class ColumnPublic(BaseModel):
    """A column as stored."""

    name: str
    kind: ColumnKind
    bits: int
    frac_bits: int


class DatasetPublic(BaseModel):
    """A dataset's public metadata."""

    id: str
    name: str
    owner: str
    state: Literal["pending", "committed"]
    rows: int
    partitions: int
    columns: list[ColumnPublic]
    tags: dict[str, str]
    created_at: datetime
    committed_at: datetime | None
    masked: bool = Field(description="uploaded as masked input")
    dp_budget: float | None = Field(default=None, description="total epsilon; none: no cap")
    dp_spent: float = Field(default=0.0, description="epsilon spent by the jobs charged so far")
    dp_delta_spent: float = Field(default=0.0, description="delta spent by those jobs")


class InputPublic(DatasetPublic):
    """A job input as the party's execution service sees it: metadata, policy, readers."""

    policy: DisclosurePolicy
    readers: list[str] = Field(description="identities holding a read grant on the dataset")


class DpChargeCreate(BaseModel):
    """A differentially private job's spending on one of its inputs (execution service only)."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    identity: Identity
    program: ProgramName
    epsilon: float = Field(gt=0, le=1000)
    delta: float = Field(default=0.0, ge=0, lt=1)


class DpChargePublic(BaseModel):
    """A recorded charge, with the dataset's budget and total spending after it."""

    dataset_id: str
    job_id: str
    epsilon: float
    delta: float
    dp_budget: float | None
    dp_spent: float


class DatasetPage(BaseModel):
    """One page of a dataset listing."""

    items: list[DatasetPublic]
    total: int
    limit: int
    offset: int


class SharePublic(BaseModel):
    """One stored part of a column."""

    dataset_id: str
    column: str
    partition: int
    size: int
    sha256: str = Field(description="SHA-256 of the stored share bytes")
    created: bool = Field(description="false when an identical upload was already stored")


class TagUpdate(BaseModel):
    """A tag's new value."""

    model_config = ConfigDict(extra="forbid")

    value: TagValue


class GrantUpdate(BaseModel):
    """Options of a grant; ``programs`` restricts a ``use`` grant to named programs."""

    model_config = ConfigDict(extra="forbid")

    programs: list[ProgramName] | None = Field(default=None, max_length=256)


class GrantPublic(BaseModel):
    """A permission held by another identity."""

    grantee: str
    permission: Permission
    programs: list[str] | None
    created_at: datetime


class InputMaskCreate(BaseModel):
    """A request for ``count`` input masks."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(gt=0, description="how many values will be uploaded (rows × columns)")


class InputMaskPublic(BaseModel):
    """A mask reservation; fetch this party's shares r_i from ``shares_url``."""

    id: str
    count: int
    party: int
    created_at: datetime
    expires_at: datetime
    used: bool
    shares_url: str
