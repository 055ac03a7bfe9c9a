"""Settings of the secret-store, read once at start-up from ``TALLY_SECRET_STORE_*``.

Lists and objects are given as JSON, e.g.::

    TALLY_SECRET_STORE_TOKENS='[{"identity": "acme", "sha256": "9f86…"},
                                {"identity": "execution", "token": "…", "service": true}]'
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tally.common.auth import TokenSpec
from tally.common.https import HttpsListener
from tally.common.oidc import IdentitySettings
from tally.common.settings import ENV_FIELD, ConfigurationError, Environment, check_secret


class SecretStoreSettings(BaseSettings, HttpsListener, IdentitySettings):
    """Configuration of one party's secret-store."""

    model_config = SettingsConfigDict(env_prefix="TALLY_SECRET_STORE_", extra="ignore")

    env: Environment = ENV_FIELD
    party: int = Field(default=0, ge=0, description="this party's index (0 adds y in masked input)")

    database_url: str = Field(
        default="sqlite:///./data/secret-store/metadata.db",
        description="SQLAlchemy URL of the metadata database (SQLite file or PostgreSQL)",
    )
    migrate_on_start: bool = Field(default=True, description="run Alembic `upgrade head`")

    blob_dir: Path = Field(
        default=Path("./data/secret-store/blobs"),
        description="share blobs directory (used when s3_endpoint is empty)",
    )
    s3_endpoint: str = Field(default="", description="host:port of an S3 server; empty = local")
    s3_access_key: str = ""
    s3_secret_key: SecretStr = SecretStr("")
    s3_bucket: str = "tally-secret-store"
    s3_prefix: str = Field(default="", description="key prefix inside the bucket, e.g. party-0/")
    s3_secure: bool = Field(default=False, description="use HTTPS for S3")
    s3_region: str | None = None

    tokens: list[TokenSpec] = Field(
        default_factory=list, description="bearer tokens, each bound to an identity"
    )

    max_upload_bytes: int = Field(
        default=1 << 30, gt=0, description="largest octet-stream body (one column part)"
    )
    max_json_bytes: int = Field(default=1 << 20, gt=0, description="largest JSON request body")
    max_parts: int = Field(
        default=1 << 16, gt=0, description="most column parts (columns x partitions) a dataset has"
    )
    max_mask_count: int = Field(default=1 << 27, gt=0, description="most masks per reservation")
    max_page_size: int = Field(default=1000, gt=0)

    max_datasets_per_identity: int = Field(
        default=10_000, gt=0, description="most datasets (pending or committed) one identity owns"
    )
    max_bytes_per_identity: int = Field(
        default=1 << 40,
        gt=0,
        description="most share bytes one identity's datasets (rows x columns x 8, pending "
        "or committed) and unused input masks may take (default 1 TiB)",
    )
    max_pending_per_identity: int = Field(
        default=100,
        gt=0,
        description="most uncommitted datasets one identity may have at once (results "
        "written by the party's services do not count)",
    )
    max_mask_reservations_per_identity: int = Field(
        default=100, gt=0, description="most live (unused, unexpired) mask reservations"
    )

    max_job_token_ttl_s: float = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="longest a job's worker credential lives (it is revoked when the job ends)",
    )

    pending_timeout_s: float = Field(
        default=24 * 3600, gt=0, description="uncommitted datasets are removed after this"
    )
    mask_timeout_s: float = Field(
        default=24 * 3600, gt=0, description="unused mask reservations are removed after this"
    )
    gc_interval_s: float = Field(default=300, gt=0, description="how often garbage is collected")

    debug_crash_after_blob_write: bool = Field(
        default=False,
        description="development only: exit the process right after a share blob is "
        "written, before its metadata is committed (crash-safety tests)",
    )

    @model_validator(mode="after")
    def _check_production(self) -> SecretStoreSettings:
        if self.env == "production":
            if self.debug_crash_after_blob_write:
                raise ConfigurationError("debug_crash_after_blob_write is for development only")
            if not self.tokens:
                raise ConfigurationError("production mode needs at least one token in TOKENS")
            for spec in self.tokens:
                if spec.token is not None:
                    check_secret(
                        f"token of {spec.identity!r}", spec.token.get_secret_value(), "production"
                    )
            if self.s3_endpoint:
                check_secret("S3_SECRET_KEY", self.s3_secret_key.get_secret_value(), self.env)
            self.refuse_plaintext(
                "secret-store", self.env, self.database_url, self.s3_endpoint, self.s3_secure
            )
        return self
