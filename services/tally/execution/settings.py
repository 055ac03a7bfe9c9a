"""Settings of one party's execution service, read once at start-up from ``TALLY_EXECUTION_*``.

Lists and objects are JSON, e.g.::

    TALLY_EXECUTION_PARTY=1
    TALLY_EXECUTION_PEERS='["10.0.0.1:7100", "10.0.1.1:7100", "10.0.2.1:7100"]'
    TALLY_EXECUTION_TLS_CA=/etc/tally/ca.pem  (with TLS_CERT and TLS_KEY)
    TALLY_EXECUTION_TOKENS='[{"identity": "alice", "sha256": "9f86…"}]'
    TALLY_EXECUTION_INPUTS=secret-store
    TALLY_EXECUTION_SECRET_STORE_URL=http://127.0.0.1:8100
    TALLY_EXECUTION_SECRET_STORE_TOKEN=…   (the party's service credential there)
    TALLY_EXECUTION_TUPLES=service
    TALLY_EXECUTION_TUPLES_URL=http://127.0.0.1:8200
    TALLY_EXECUTION_TUPLES_TOKEN=…   (a bearer token the tuple-service accepts)

Development defaults are ``inputs=local`` and ``tuples=dealer``; production mode
refuses both (and plaintext PartyLink).

Job workers are separate processes started by the service; they read the same
environment, so they see the same settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tally.common.auth import TokenSpec
from tally.common.blobstore import BlobStore, make_blob_store
from tally.common.consortium import PeerDirectory, load_consortium, peers_from_file
from tally.common.https import HttpsListener, check_service_url
from tally.common.oidc import IdentitySettings
from tally.common.settings import ENV_FIELD, ConfigurationError, Environment, check_secret
from tally.execution.tls import PartyTLS, party_name


class ExecutionSettings(BaseSettings, HttpsListener, IdentitySettings):
    """Configuration of one party's execution service and its job workers."""

    model_config = SettingsConfigDict(env_prefix="TALLY_EXECUTION_", extra="ignore")

    env: Environment = ENV_FIELD
    party: int = Field(default=0, ge=0, description="this party's index")
    peers: list[str] = Field(
        default_factory=list,
        description="host:port of every party's public endpoint (PartyControl and its "
        "workers' gateway), by party index, as the other parties dial it",
    )
    consortium_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("TALLY_EXECUTION_CONSORTIUM_FILE", "TALLY_CONSORTIUM_FILE"),
        description="the consortium document the operator renders from the Consortium "
        "resource (tally.common.consortium): peers come from its partyLink endpoints and "
        "follow its edits; set it or PEERS, not both",
    )
    control_host: str = Field(
        default="127.0.0.1",
        description="address the party's public endpoint (PartyControl and the workers' "
        "gateway) binds",
    )
    control_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="container port of the public endpoint (default: the port of this "
        "party's PEERS entry, which is what peers dial, e.g. a load balancer's)",
    )
    worker_host: str = Field(
        default="127.0.0.1", description="address job workers bind and advertise to peers"
    )

    tls_ca: Path | None = Field(default=None, description="PEM of the consortium CA")
    tls_cert: Path | None = Field(default=None, description="PEM of this party's certificate")
    tls_key: Path | None = Field(default=None, description="PEM of this party's private key")

    state_dir: Path = Field(
        default=Path("./data/execution"), description="job records, worker status, results"
    )
    blob_dir: Path | None = Field(
        default=None, description="checkpoint blob directory (default: state_dir/blobs)"
    )
    s3_endpoint: str = Field(
        default="",
        description="host:port of an S3 server for checkpoints, opened results (and local "
        "datasets); empty: the blob directory.  External workers need a store every node "
        "reaches: S3 in a cluster",
    )
    s3_access_key: str = ""
    s3_secret_key: SecretStr = SecretStr("")
    s3_bucket: str = "tally-execution"
    s3_prefix: str = Field(default="", description="key prefix inside the bucket, e.g. party-0/")
    s3_secure: bool = Field(default=False, description="use HTTPS for S3")
    s3_region: str | None = None

    workers: Literal["process", "external"] = Field(
        default="process",
        description="'process': the service starts (and restarts) one worker process per "
        "partition; 'external': something else starts them (Kubernetes: the operator's "
        "Indexed Job runs `python -m tally.execution.pod`), they fetch the job from the "
        "service and report to it",
    )
    url: str = Field(
        default="",
        description="external workers: base URL of this party's execution service REST API",
    )
    worker_token: SecretStr = Field(
        default=SecretStr(""),
        description="external workers: their credential at the execution service (one of "
        "its TOKENS with service: true)",
    )
    worker_stale_s: float = Field(
        default=10.0,
        gt=0,
        description="external workers: a worker silent this long is presumed gone (peers "
        "stop dialling its address)",
    )
    worker_heartbeat_s: float = Field(
        default=2.0, gt=0, description="external workers: seconds between status reports"
    )
    worker_start_timeout_s: float = Field(
        default=900.0,
        gt=0,
        description="external workers: a running job fails when a partition has had no "
        "worker attached this long (pods unschedulable, no operator)",
    )

    inputs: Literal["local", "secret-store"] = Field(
        default="local",
        description="where inputs and result datasets live: 'secret-store' (this party's "
        "secret-store, over its intra-party REST routes) or 'local' (datasets in the blob "
        "store; development only, refused in production)",
    )
    secret_store_url: str = Field(
        default="", description="base URL of this party's secret-store, e.g. http://127.0.0.1:8100"
    )
    secret_store_token: SecretStr = Field(
        default=SecretStr(""),
        description="this party's service credential at its secret-store (a token configured "
        "there with service: true)",
    )

    sharing: Literal["additive", "replicated"] | None = Field(
        default=None,
        description="the online path: replicated (three parties, honest majority: the hm3 "
        "trust model; products and comparisons use no triples, daBits or edaBits) or "
        "additive (any number of parties).  Default: replicated when the consortium has "
        "three parties and its tuple generator is hm3 (CONSORTIUM_FILE, or TUPLE_GENERATOR), "
        "else additive.  Every party must use the same; a job fails clearly otherwise",
    )
    tuple_generator: Literal["hm3", "ot", "dealer"] | None = Field(
        default=None,
        description="the consortium's tuple generator, when no CONSORTIUM_FILE says it "
        "(it picks the default SHARING)",
    )
    tuples: Literal["dealer", "service"] = Field(
        default="dealer",
        description="where tuples come from: 'service' (reservations from this party's "
        "tuple-service; party 0 reserves for everyone) or 'dealer' (seeded development "
        "dealer with a consumption ledger; refused in production)",
    )
    tuples_url: str = Field(
        default="", description="base URL of this party's tuple-service REST API"
    )
    tuples_token: SecretStr = Field(
        default=SecretStr(""),
        description="this party's bearer token at its tuple-service (one of its TOKENS)",
    )
    tuple_lease_min: int = Field(
        default=1 << 16,
        gt=0,
        description="tuples of one kind in the first extension lease; lease n holds "
        "max(request, min · 2^n) up to tuple_lease_max",
    )
    tuple_lease_max: int = Field(
        default=1 << 24, gt=0, description="largest extension lease (unless one request is larger)"
    )
    tuple_prefetch_bytes: int = Field(
        default=2 << 30,
        ge=0,
        description="a first run reads up to this many bytes of its reserved tuples into "
        "memory before the online phase (the rest streams during it); 0: stream everything",
    )
    tuple_wait_s: float = Field(
        default=300.0,
        gt=0,
        description="how long a worker at a follower party waits for party 0's lease (party 0 "
        "may be generating the tuples)",
    )
    job_token_ttl_s: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="lifetime of a job's secret-store credential for its workers (revoked "
        "when the job ends; the secret-store caps it)",
    )
    service_timeout_s: float = Field(
        default=300.0, gt=0, description="HTTP timeout for secret-store and tuple-service calls"
    )
    dealer_secret: SecretStr = Field(
        default=SecretStr(""),
        description="development dealer: a secret shared by the consortium's parties",
    )

    tokens: list[TokenSpec] = Field(default_factory=list, description="bearer tokens")
    allowed_programs: list[str] = Field(
        default_factory=list,
        description="SHA-256 digests of custom programs this party allows (built-ins always)",
    )
    program_modules: list[str] = Field(
        default_factory=list, description="modules imported at start to register custom programs"
    )

    accept_timeout_s: float = Field(
        default=60.0, gt=0, description="how long every party has to accept the same job"
    )
    peer_timeout_s: float = Field(
        default=30.0, gt=0, description="how long a lost peer may stay away before the job fails"
    )
    io_timeout_s: float = Field(default=300.0, gt=0, description="longest wait for one round")
    max_restarts: int = Field(default=3, ge=0, description="worker restarts per job and worker")
    max_partitions: int = Field(default=64, ge=1)
    rest_ca: Path | None = Field(
        default=None,
        description="CA that verifies the party's other REST services (secret-store, "
        "tuple-service, this service for its workers); default: the system trust store",
    )
    max_output_groups: int = Field(
        default=1 << 20, ge=1, description="largest max_groups or domain a job may ask for"
    )
    max_input_datasets: int = Field(
        default=64, ge=1, description="most datasets one job may read (all inputs together)"
    )
    max_dp_trials: int = Field(
        default=1 << 17,
        ge=2,
        description="most noise coins per released value (small epsilon or delta need many)",
    )
    max_body_bytes: int = Field(
        default=4 << 20, gt=0, description="largest request body (job specs, worker reports)"
    )
    dry_run_memory_bytes: int = Field(
        default=2 << 30,
        ge=64 << 20,
        description="address space the tuple plan's dry run (party 0) may add, in a child "
        "process: a job whose plan needs more fails with a reason, the service is unharmed",
    )
    dry_run_timeout_s: float = Field(
        default=300.0, gt=0, description="longest the tuple plan's dry run may take"
    )

    @model_validator(mode="after")
    def _check(self) -> ExecutionSettings:
        if self.consortium_file is not None:
            if self.peers:
                raise ConfigurationError(
                    "set PEERS or CONSORTIUM_FILE, not both: the consortium document is where "
                    "peers come from when it is given"
                )
            given = self.party if "party" in self.model_fields_set else None
            self.peers, self.party = peers_from_file(
                self.consortium_file, "partyLink", given, service="execution service"
            )
            generator = load_consortium(self.consortium_file).tuple_generator
            if generator is not None:
                self.tuple_generator = cast(Literal["hm3", "ot", "dealer"], generator)
        if self.sharing is None:
            hm3 = self.tuple_generator == "hm3" and len(self.peers) == 3
            self.sharing = "replicated" if hm3 else "additive"
        if self.sharing == "replicated" and self.peers and len(self.peers) != 3:
            raise ConfigurationError(
                f"SHARING=replicated is the three-party honest-majority path; this "
                f"consortium has {len(self.peers)} parties (use additive)"
            )
        if self.peers and not 0 <= self.party < len(self.peers):
            raise ConfigurationError(
                f"party {self.party} has no entry in PEERS ({len(self.peers)} parties)"
            )
        tls = [self.tls_ca, self.tls_cert, self.tls_key]
        if any(tls) and not all(tls):
            raise ConfigurationError("give all of TLS_CA, TLS_CERT and TLS_KEY, or none")
        # An external worker (a pod: WORKER_TOKEN set) gets its job's own secret-store and
        # tuple-service credentials from the execution service when it attaches, never
        # the service's.
        pod = bool(self.worker_token.get_secret_value())
        if self.inputs == "secret-store" and not (
            self.secret_store_url and (pod or self.secret_store_token.get_secret_value())
        ):
            raise ConfigurationError(
                "inputs=secret-store needs SECRET_STORE_URL and SECRET_STORE_TOKEN (this "
                "party's service credential at its secret-store)"
            )
        if self.tuples == "service" and not (
            self.tuples_url and (pod or self.tuples_token.get_secret_value())
        ):
            raise ConfigurationError(
                "tuples=service needs TUPLES_URL and TUPLES_TOKEN (this party's tuple-service "
                "and a bearer token it accepts)"
            )
        if self.env == "production":
            if self.s3_endpoint:
                check_secret("S3_SECRET_KEY", self.s3_secret_key.get_secret_value(), "production")
            if not all(tls):
                raise ConfigurationError(
                    "production mode needs mutual TLS for PartyLink: set TLS_CA, TLS_CERT, TLS_KEY"
                )
            if self.tuples == "dealer":
                raise ConfigurationError(
                    "the development dealer is refused in production; set TUPLES=service and "
                    "TUPLES_URL (this party's tuple-service)"
                )
            if self.inputs == "local":
                raise ConfigurationError(
                    "local datasets are for development; production needs INPUTS=secret-store "
                    "with SECRET_STORE_URL and SECRET_STORE_TOKEN"
                )
            if not pod:
                check_secret(
                    "SECRET_STORE_TOKEN", self.secret_store_token.get_secret_value(), "production"
                )
                check_secret("TUPLES_TOKEN", self.tuples_token.get_secret_value(), "production")
            self.refuse_plaintext(
                "execution", self.env, s3_endpoint=self.s3_endpoint, s3_secure=self.s3_secure
            )
            check_service_url("SECRET_STORE_URL", self.secret_store_url, self.env)
            check_service_url("TUPLES_URL", self.tuples_url, self.env)
            if self.workers == "external":
                check_service_url("URL (the workers' route to this service)", self.url, self.env)
            for spec in self.tokens:
                if spec.token is not None:
                    check_secret(
                        f"token of {spec.identity!r}", spec.token.get_secret_value(), "production"
                    )
        return self

    @property
    def endpoint_port(self) -> int:
        """The port the public endpoint binds (``control_port``, else the PEERS entry's)."""
        if self.control_port is not None:
            return self.control_port
        return int(self.peers[self.party].rsplit(":", 1)[1])

    def peer_directory(self) -> PeerDirectory:
        """Every party's public endpoint, following the consortium document's edits."""
        return PeerDirectory(
            self.peers, path=self.consortium_file, key="partyLink", party=self.party
        )

    @property
    def online_sharing(self) -> Literal["additive", "replicated"]:
        """The resolved ``sharing`` (validation sets it)."""
        return self.sharing or "additive"

    @property
    def parties(self) -> int:
        """How many parties the consortium has."""
        return len(self.peers)

    @property
    def blobs_root(self) -> Path:
        """Where checkpoint (and, with local inputs, dataset) blobs live."""
        return self.blob_dir or self.state_dir / "blobs"


def blob_store(settings: ExecutionSettings) -> BlobStore:
    """The party's blob store: S3 when ``s3_endpoint`` is set, else the blob directory."""
    return make_blob_store(settings, settings.blobs_root)


def load_tls(settings: ExecutionSettings) -> PartyTLS | None:
    """The party's TLS material, or None (development mode: plaintext, with a warning)."""
    if settings.tls_ca and settings.tls_cert and settings.tls_key:
        tls = PartyTLS.load(settings.tls_ca, settings.tls_cert, settings.tls_key)
        if tls.name != party_name(settings.party):
            raise ConfigurationError(
                f"the PartyLink certificate names {tls.name!r}, but this is party "
                f"{settings.party}: its CN and DNS SAN must be {party_name(settings.party)!r}"
            )
        return tls
    return None
