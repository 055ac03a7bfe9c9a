"""Settings of the tuple-service, read once at start-up from ``TALLY_TUPLES_*`` (and ``TALLY_ENV``).

Lists are JSON, e.g. ``TALLY_TUPLES_PEERS='["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]'``
(the TupleLink address of every party, this one included) and
``TALLY_TUPLES_POOLS='[{"kind": "triples", "low_water": 4000000, "batch": 1000000}]'``.

Generators:

* ``hm3`` (the default): the three parties generate together; needs exactly 3 peers.
* ``dealer``: chunks are pushed by a separate dealer process (``python -m
  tally.tuples.dealer``, :class:`DealerSettings`) at the address ``dealer``; a party
  never generates dealer tuples itself (it would be its own dealer).  In production
  the dealer's host must differ from every party's and its certificate must not be a
  party's.

Security: the REST API (all but ``/healthz``, ``/readyz``, ``/metrics`` and the docs)
needs a bearer token from ``TOKENS`` (JSON list of ``TokenSpec``, as in the
secret-store); TupleLink runs over mutual TLS with this party's certificate
(``TLS_CA``, ``TLS_CERT``, ``TLS_KEY``; the certificate names ``party-<i>``).  Without
TLS files, development runs TupleLink in plaintext with a warning; production refuses
to start, as it refuses placeholder tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast, get_args

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tally.common.auth import TokenSpec
from tally.common.consortium import load_consortium, peers_from_file
from tally.common.https import HttpsListener
from tally.common.oidc import IdentitySettings
from tally.common.settings import ConfigurationError, Environment, check_secret
from tally.common.tls import is_party_name
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


class TuplesSettings(BaseSettings, HttpsListener, IdentitySettings):
    """Configuration of one party's tuple-service."""

    model_config = SettingsConfigDict(env_prefix="TALLY_TUPLES_", extra="ignore")

    env: Environment = Field(
        default="development",
        validation_alias=AliasChoices("TALLY_ENV", "TALLY_TUPLES_ENV", "env"),
        description="development | production; production refuses plaintext TupleLink, "
        "placeholder tokens and a dealer on a party's host",
    )
    party: int = Field(default=0, ge=0, description="this party's index; 0 leads reservations")
    peers: list[str] = Field(
        default_factory=list, description="TupleLink host:port of every party, in party order"
    )
    consortium_file: Path | None = Field(
        default=None,
        description="the consortium document the operator renders from the Consortium "
        "resource (tally.common.consortium): peers come from its tupleLink endpoints (and "
        "the generator from its tupleGenerator); set it or PEERS, not both.  The service "
        "restarts itself to apply an edit of the peers",
    )
    grpc_listen: str = Field(default="", description="host:port to serve TupleLink on")
    http_host: str = Field(default="127.0.0.1", description="REST API bind address")
    http_port: int = Field(default=8300, ge=0, le=65535, description="REST API port")
    generator: Literal["hm3", "ot", "dealer"] = "hm3"
    dealer: str = Field(default="", description="host:port of the dealer process (dealer mode)")
    dealer_name: str = Field(
        default="dealer",
        description="the name on the dealer's TLS certificate; never a party's (party-<i>)",
    )

    tokens: list[TokenSpec] = Field(
        default_factory=list,
        description="bearer tokens of the REST API (the execution service, operators)",
    )
    tls_ca: Path | None = Field(default=None, description="PEM of the consortium CA")
    tls_cert: Path | None = Field(default=None, description="PEM of this party's certificate")
    tls_key: Path | None = Field(default=None, description="PEM of this party's private key")

    database_url: str = Field(
        default="sqlite:///./data/tuples/index.db",
        description="SQLAlchemy URL of the chunk index (SQLite file or PostgreSQL)",
    )
    migrate_on_start: bool = Field(default=True, description="run Alembic `upgrade head`")
    blob_dir: Path = Field(default=Path("./data/tuples/chunks"), description="chunk shares")
    s3_endpoint: str = Field(default="", description="host:port of an S3 server; empty = local")
    s3_access_key: str = ""
    s3_secret_key: SecretStr = SecretStr("")
    s3_bucket: str = "tally-tuples"
    s3_prefix: str = Field(default="", description="key prefix inside the bucket, e.g. party-0/")
    s3_secure: bool = Field(default=False, description="use HTTPS for S3")
    s3_region: str | None = None

    chunk_size: int = Field(default=1 << 20, gt=0, description="tuples per chunk")
    pools: list[PoolSettings] = Field(default_factory=default_pools)
    replenish: bool = Field(default=True, description="leader: keep pools filled in background")
    replenish_interval_s: float = Field(default=1.0, gt=0)
    rpc_timeout_s: float = Field(default=120.0, gt=0)
    max_body_bytes: int = Field(default=1 << 20, gt=0, description="largest request body")
    max_job_token_ttl_s: float = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="longest a job's worker credential lives (it is revoked when the job ends)",
    )
    max_generate: int = Field(
        default=1 << 26,
        gt=0,
        description="most tuples one request may have generated at every party (per kind): "
        "one job cannot fill every party's disk",
    )
    prf: Literal["aes", "shake"] = Field(default="aes", description="PRF of the hm3 generator")

    def _read_consortium(self, path: Path) -> None:
        if self.peers:
            raise ConfigurationError(
                "set PEERS or CONSORTIUM_FILE, not both: the consortium document is where "
                "peers come from when it is given"
            )
        given = self.party if "party" in self.model_fields_set else None
        self.peers, self.party = peers_from_file(path, "tupleLink", given, service="tuple-service")
        generator = load_consortium(path).tuple_generator
        if generator is None or generator == self.generator:
            return
        if "generator" in self.model_fields_set:
            raise ConfigurationError(
                f"the tuple-service is configured with generator {self.generator!r}, but the "
                f"consortium document says {generator!r}"
            )
        known = get_args(TuplesSettings.model_fields["generator"].annotation)
        if generator not in known:
            raise ConfigurationError(
                f"the consortium's tuple generator {generator!r} is not one this "
                f"tuple-service runs ({', '.join(known)})"
            )
        self.generator = cast(Literal["hm3", "dealer"], generator)

    @property
    def is_leader(self) -> bool:
        return self.party == 0

    @property
    def uses_tls(self) -> bool:
        return self.tls_ca is not None

    @property
    def listen_address(self) -> str:
        if self.grpc_listen:
            return self.grpc_listen
        if self.party < len(self.peers):
            return self.peers[self.party]
        raise ConfigurationError("set TALLY_TUPLES_GRPC_LISTEN or list this party in PEERS")

    @model_validator(mode="after")
    def _check(self) -> TuplesSettings:
        if self.consortium_file is not None:
            self._read_consortium(self.consortium_file)
        if self.peers and self.party >= len(self.peers):
            raise ConfigurationError(
                f"party {self.party} is not in PEERS ({len(self.peers)} parties listed)"
            )
        if self.generator == "hm3" and self.peers and len(self.peers) != 3:
            raise ConfigurationError("the hm3 generator needs exactly 3 parties in PEERS")
        if self.generator == "ot" and self.peers and len(self.peers) < 2:
            raise ConfigurationError("the ot generator needs at least 2 parties in PEERS")
        check_tls_files(self.tls_ca, self.tls_cert, self.tls_key, self.env, "TupleLink")
        if self.generator == "dealer":
            check_dealer(self.dealer, self.dealer_name, self.peers, self.env)
        if self.env == "production":
            if not self.tokens:
                raise ConfigurationError(
                    "production mode needs at least one token in TALLY_TUPLES_TOKENS (the "
                    "execution service's credential)"
                )
            for spec in self.tokens:
                if spec.token is not None:
                    check_secret(
                        f"token of {spec.identity!r}", spec.token.get_secret_value(), "production"
                    )
            if self.s3_endpoint:
                check_secret(
                    "TALLY_TUPLES_S3_SECRET_KEY",
                    self.s3_secret_key.get_secret_value(),
                    "production",
                )
            self.refuse_plaintext(
                "tuple-service", self.env, self.database_url, self.s3_endpoint, self.s3_secure
            )
        return self


def check_tls_files(
    ca: Path | None, cert: Path | None, key: Path | None, env: Environment, link: str
) -> None:
    """All three TLS files or none; production needs them (no plaintext between parties)."""
    given = [ca is not None, cert is not None, key is not None]
    if any(given) and not all(given):
        raise ConfigurationError("give all of TLS_CA, TLS_CERT and TLS_KEY, or none")
    if env == "production" and not all(given):
        raise ConfigurationError(
            f"production mode needs mutual TLS for {link}: set TLS_CA, TLS_CERT and TLS_KEY "
            "(plaintext is for development only)"
        )


def host_of(address: str) -> str:
    """The host part of ``host:port`` (brackets of an IPv6 literal removed)."""
    return address.rsplit(":", 1)[0].strip("[]").lower()


def check_dealer(dealer: str, dealer_name: str, peers: list[str], env: Environment) -> None:
    """Refuse a dealer that is a party, and in production one on any party's host."""
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
    if is_party_name(dealer_name):
        raise ConfigurationError(
            f"DEALER_NAME {dealer_name!r} is a party's certificate name; a computational party "
            "is never also the dealer of tuples it consumes"
        )
    host = host_of(dealer)
    hosts = [host_of(peer) for peer in peers]
    if env == "production" and host in hosts:
        raise ConfigurationError(
            f"production refuses a dealer on party {hosts.index(host)}'s host ({host}); run the "
            "dealer as a separate deployment with no computational role, or use generator=hm3"
        )


class DealerSettings(BaseSettings):
    """Configuration of the dealer process (``python -m tally.tuples.dealer``).

    The dealer holds no computational role: it samples tuples, pushes each party only
    its own shares over TupleLink, and derives shuffle correlations on request.
    """

    model_config = SettingsConfigDict(env_prefix="TALLY_DEALER_", extra="ignore")

    env: Environment = Field(
        default="development",
        validation_alias=AliasChoices("TALLY_ENV", "TALLY_DEALER_ENV", "env"),
        description="development | production; production refuses plaintext and a dealer "
        "on a party's host",
    )
    listen: str = Field(default="127.0.0.1:7200", description="host:port to serve the dealer on")
    peers: list[str] = Field(
        default_factory=list, description="TupleLink host:port of every party, in party order"
    )
    name: str = Field(
        default="dealer", description="the name on this dealer's certificate; never party-<i>"
    )
    secret: SecretStr = Field(
        default=SecretStr(""),
        description="key of the shuffle correlations (the same across restarts, so parties "
        "fetching one correlation at different times get matching shares)",
    )
    tls_ca: Path | None = Field(default=None, description="PEM of the consortium CA")
    tls_cert: Path | None = Field(default=None, description="PEM of the dealer's certificate")
    tls_key: Path | None = Field(default=None, description="PEM of the dealer's private key")
    rpc_timeout_s: float = Field(default=120.0, gt=0)

    @property
    def uses_tls(self) -> bool:
        return self.tls_ca is not None

    @model_validator(mode="after")
    def _check(self) -> DealerSettings:
        if len(self.peers) < 2:
            raise ConfigurationError("TALLY_DEALER_PEERS must list every party's TupleLink (2+)")
        if is_party_name(self.name):
            raise ConfigurationError(
                f"the dealer's name {self.name!r} is a party's; a party is never its own dealer"
            )
        if self.listen in self.peers:
            raise ConfigurationError(
                f"the dealer listens on party {self.peers.index(self.listen)}'s TupleLink "
                "address; a party is never its own dealer"
            )
        if not self.secret.get_secret_value():
            raise ConfigurationError(
                "set TALLY_DEALER_SECRET (e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`): it keys the shuffle correlations"
            )
        check_tls_files(self.tls_ca, self.tls_cert, self.tls_key, self.env, "the dealer")
        if self.env == "production":
            check_secret("TALLY_DEALER_SECRET", self.secret.get_secret_value(), "production")
            host = host_of(self.listen)
            hosts = [host_of(peer) for peer in self.peers]
            if host in hosts:
                raise ConfigurationError(
                    f"production refuses a dealer on party {hosts.index(host)}'s host ({host})"
                )
        return self
