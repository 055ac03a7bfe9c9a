"""Bearer-token authentication shared by the services.

Tokens are configured per service as ``TokenSpec`` entries, each bound to one
identity. Only SHA-256 digests are kept in memory (a plaintext token given in the
settings is hashed at start-up and dropped); a presented token is hashed and compared
with every known digest using ``hmac.compare_digest``, so neither the comparison nor
the lookup depends on how much of a wrong token matched. Tokens may expire.

``service`` tokens are the party's own service credentials (e.g. the execution
service talking to its secret-store); services accept them on intra-party routes only.

Never log a token: ``TokenSpec.token`` is a ``SecretStr`` and digests are not logged
either.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from tally.common.errors import ApiError
from tally.common.settings import ConfigurationError, Environment, check_secret

IDENTITY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def hash_token(token: str) -> str:
    """The hex SHA-256 digest under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenSpec(BaseModel):
    """One bearer token as configured: give ``token`` or its ``sha256`` digest."""

    identity: str = Field(pattern=IDENTITY_PATTERN, description="who the token authenticates")
    token: SecretStr | None = Field(default=None, description="the plaintext token")
    sha256: str | None = Field(default=None, description="hex SHA-256 of the token instead")
    expires_at: datetime | None = Field(default=None, description="refused from then on")
    service: bool = Field(default=False, description="a party service credential")

    @field_validator("sha256")
    @classmethod
    def _check_digest(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256_HEX.match(value.lower()):
            raise ValueError("sha256 must be 64 hex digits")
        return value.lower() if value is not None else None

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _one_form(self) -> TokenSpec:
        if (self.token is None) == (self.sha256 is None):
            raise ValueError(f"token for {self.identity!r}: give exactly one of token, sha256")
        return self

    def digest(self) -> str:
        """The stored form of this token."""
        if self.sha256 is not None:
            return self.sha256
        assert self.token is not None  # guaranteed by _one_form
        return hash_token(self.token.get_secret_value())


@dataclass(frozen=True)
class Principal:
    """Who a request comes from."""

    identity: str
    service: bool = False


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    principal: Principal
    expires_at: datetime | None


class TokenAuthenticator:
    """Checks ``Authorization: Bearer <token>`` headers against configured digests."""

    def __init__(self, specs: Iterable[TokenSpec], env: Environment = "development") -> None:
        entries = []
        for spec in specs:
            if spec.token is not None:
                check_secret(f"token of {spec.identity!r}", spec.token.get_secret_value(), env)
            entries.append(
                _Entry(
                    digest=bytes.fromhex(spec.digest()),
                    principal=Principal(spec.identity, spec.service),
                    expires_at=spec.expires_at,
                )
            )
        digests = [entry.digest for entry in entries]
        if len(set(digests)) != len(digests):
            raise ConfigurationError("two configured tokens are identical; give each its own")
        self._entries = tuple(entries)

    def authenticate(self, authorization: str | None, now: datetime | None = None) -> Principal:
        """The principal for an ``Authorization`` header value, else a 401 ``ApiError``."""
        if not authorization:
            raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("malformed Authorization header: expected 'Bearer <token>'")
        presented = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: _Entry | None = None
        for entry in self._entries:  # visit every entry: time does not reveal which matched
            if hmac.compare_digest(entry.digest, presented):
                found = entry
        if found is None:
            raise _unauthorized("invalid token")
        if found.expires_at is not None and (now or datetime.now(UTC)) >= found.expires_at:
            raise _unauthorized("token expired")
        return found.principal


def _unauthorized(detail: str) -> ApiError:
    return ApiError(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})
