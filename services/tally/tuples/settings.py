"""Settings of the tuple-service, read once at start-up from ``TALLY_TUPLES_*`` (and ``TALLY_ENV``).

Lists are JSON, e.g. ``TALLY_TUPLES_PEERS='["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]'``
(the TupleLink address of every party, this one included) and
``TALLY_TUPLES_POOLS='[{"kind": "triples", "low_water": 4000000, "batch": 1000000}]'``.

Generators:

* ``hm3`` (the default): the three parties generate together; needs exactly 3 peers.
* ``dealer``: chunks are pushed by a dealer process configured in ``dealer``; a
  party never generates dealer tuples itself (it would be its own dealer).  In
  production the dealer's address must differ from every party's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tally.common.settings import ConfigurationError, Environment
from tally.mpc.offline.layout import parse_kind


class PoolSettings(BaseModel):
    """One pool: keep at least ``low_water`` free tuples of ``kind``, adding ``batch`` at a time."""

    kind: str = Field(description="triples, bit_triples, dabits, edabits:<width>, input_masks")
    low_water: int = Field(default=4_000_000, ge=0, description="replenish below this many")
    batch: int = Field(default=1_000_000, gt=0, description="tuples generated per round")

    @model_validator(mode="after")
    def _check_kind(self) -> PoolSettings:
        parse_kind(self.kind)
        return self


def default_pools() -> list[PoolSettings]:
    return [
        PoolSettings(kind="triples", low_water=2_000_000, batch=1_000_000),
        PoolSettings(kind="bit_triples", low_water=1_000_000, batch=500_000),
        PoolSettings(kind="dabits", low_water=500_000, batch=250_000),
        PoolSettings(kind="edabits:64", low_water=250_000, batch=125_000),
    ]


class TuplesSettings(BaseSettings):
    """Configuration of one party's tuple-service."""

    model_config = SettingsConfigDict(env_prefix="TALLY_TUPLES_", extra="ignore")

    env: Environment = Field(
        default="development",
        validation_alias=AliasChoices("TALLY_ENV", "TALLY_TUPLES_ENV", "env"),
        description="development | production; production refuses a party-local dealer",
    )
    party: int = Field(default=0, ge=0, description="this party's index; 0 leads reservations")
    peers: list[str] = Field(
        default_factory=list, description="TupleLink host:port of every party, in party order"
    )
    grpc_listen: str = Field(default="", description="host:port to serve TupleLink on")
    http_host: str = Field(default="127.0.0.1", description="REST API bind address")
    http_port: int = Field(default=8300, ge=0, le=65535, description="REST API port")
    generator: Literal["hm3", "dealer"] = "hm3"
    dealer: str = Field(default="", description="host:port of the dealer process (dealer mode)")

    database_url: str = Field(
        default="sqlite:///./data/tuples/index.db",
        description="SQLAlchemy URL of the chunk index (SQLite file or PostgreSQL)",
    )
    blob_dir: Path = Field(default=Path("./data/tuples/chunks"), description="chunk shares")
    s3_endpoint: str = Field(default="", description="host:port of an S3 server; empty = local")
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_bucket: str = "tally-tuples"
    s3_secure: bool = False

    chunk_size: int = Field(default=1 << 20, gt=0, description="tuples per chunk")
    pools: list[PoolSettings] = Field(default_factory=default_pools)
    replenish: bool = Field(default=True, description="leader: keep pools filled in background")
    replenish_interval_s: float = Field(default=1.0, gt=0)
    rpc_timeout_s: float = Field(default=120.0, gt=0)
    prf: Literal["aes", "shake"] = Field(default="aes", description="PRF of the hm3 generator")

    @property
    def is_leader(self) -> bool:
        return self.party == 0

    @property
    def listen_address(self) -> str:
        if self.grpc_listen:
            return self.grpc_listen
        if self.party < len(self.peers):
            return self.peers[self.party]
        raise ConfigurationError("set TALLY_TUPLES_GRPC_LISTEN or list this party in PEERS")

    @model_validator(mode="after")
    def _check(self) -> TuplesSettings:
        if self.peers and self.party >= len(self.peers):
            raise ConfigurationError(
                f"party {self.party} is not in PEERS ({len(self.peers)} parties listed)"
            )
        if self.generator == "hm3" and self.peers and len(self.peers) != 3:
            raise ConfigurationError("the hm3 generator needs exactly 3 parties in PEERS")
        if self.generator == "dealer":
            check_dealer(self.dealer, self.peers, self.party, self.env)
        return self


def check_dealer(dealer: str, peers: list[str], party: int, env: Environment) -> None:
    """Refuse a dealer that is this party (or any party), and any local dealer in production."""
    if not dealer:
        raise ConfigurationError(
            "generator=dealer needs TALLY_TUPLES_DEALER, the address of a separate dealer "
            "process; a party never deals its own tuples"
        )
    if dealer in peers:
        who = peers.index(dealer)
        raise ConfigurationError(
            f"the dealer {dealer} is party {who}'s tuple-service; a computational party is "
            "never also the dealer of tuples it consumes"
        )
    host = dealer.rsplit(":", 1)[0]
    if env == "production" and party < len(peers) and host == peers[party].rsplit(":", 1)[0]:
        raise ConfigurationError(
            f"production refuses a dealer on this party's own host ({host}); run the dealer "
            "as a separate deployment with no computational role, or use generator=hm3"
        )
