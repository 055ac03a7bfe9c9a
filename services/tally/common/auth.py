"""Bearer-token authentication shared by the services.

Tokens are configured per service as ``TokenSpec`` entries, each bound to one
identity. Only SHA-256 digests are kept in memory (a plaintext token given in the
settings is hashed at start-up and dropped); a presented token is hashed and compared
with every known digest using ``hmac.compare_digest``, so neither the comparison nor
the lookup depends on how much of a wrong token matched. Tokens may expire.

``service`` tokens are the party's own service credentials (e.g. the execution
service talking to its secret-store); services accept them on intra-party routes only.
A token may carry ``scopes``: a service that checks scopes (the tuple-service: only
``tuples`` may stream tuple shares, ``monitoring`` may read pools and metrics) refuses
a route the token's scopes do not cover; no scopes means every scope (backwards
compatible static tokens).

Roles say who may do what, on every service (:data:`ROLES`; :func:`require_role`):

- ``provider``: creates datasets (then uploads, commits, grants and sets the policy of
  the ones it owns), reserves input masks and sends masked inputs;
- ``analyst``: submits jobs (then follows, cancels and fetches the results of its own);
- ``party-admin``: asks the tuple-service to generate tuples;
- ``service``: the party's own services, on intra-party routes.

Ownership checks come on top: a provider only manages datasets it owns, an analyst only
sees its own jobs and the results it is a recipient of.  A JWT has the roles its
``roles`` claim lists (none: it may do none of the above); a static token has the
``roles`` it is configured with, or every role when it lists none (backwards
compatible).

Besides the settings, static tokens may come from ``tokens_file`` (a JSON list of
token specs), re-read whenever the file changes: rotation without a restart.  JWTs
from an identity provider are verified by a :class:`BearerVerifier`
(:mod:`tally.common.oidc`) when one is configured.

Never log a token: ``TokenSpec.token`` is a ``SecretStr`` and digests are not logged
either.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from tally.common.audit import current_identity
from tally.common.errors import ApiError
from tally.common.settings import ConfigurationError, Environment, check_secret

IDENTITY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
ROLES = frozenset({"provider", "analyst", "party-admin", "service"})
"""Every role a principal may hold (the table in this module's docstring)."""
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")

log = logging.getLogger(__name__)


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
    scopes: list[str] | None = Field(
        default=None, description="what the token may do (None: every scope)"
    )
    roles: list[str] | None = Field(
        default=None,
        description="provider, analyst, party-admin, service (None: every role)",
    )

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - ROLES)
        if unknown:
            raise ValueError(f"unknown roles {unknown}; known: {sorted(ROLES)}")
        return value

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
    """Who a request comes from: an identity, whether it is a party service credential,
    and (from a JWT or a scoped token) its roles and scopes."""

    identity: str
    service: bool = False
    roles: frozenset[str] | None = None
    """None: every role (a static token without roles)."""
    scopes: frozenset[str] | None = None
    """None: every scope (a static token without scopes)."""

    def allows(self, scope: str) -> bool:
        """Whether the principal's scopes cover ``scope``."""
        return self.scopes is None or scope in self.scopes

    def has_role(self, role: str) -> bool:
        """Whether the principal holds ``role`` (one of :data:`ROLES`)."""
        return self.roles is None or role in self.roles


def require_role(principal: Principal, role: str, action: str) -> None:
    """A 403 naming the role ``action`` needs, unless ``principal`` holds it."""
    if principal.has_role(role):
        return
    held = ", ".join(sorted(principal.roles or ())) or "none"
    detail = f"{action} needs the {role!r} role (this token's roles: {held})"
    raise ApiError(403, "forbidden", detail)


class BearerVerifier(Protocol):
    """Verifies bearer tokens of another kind (JWTs of an identity provider)."""

    def verify(self, token: str) -> Principal:
        """The principal, else a 401 ``ApiError``."""
        ...


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    principal: Principal
    expires_at: datetime | None


def _entries(specs: Iterable[TokenSpec], env: Environment) -> tuple[_Entry, ...]:
    entries = []
    for spec in specs:
        if spec.token is not None:
            check_secret(f"token of {spec.identity!r}", spec.token.get_secret_value(), env)
        scopes = frozenset(spec.scopes) if spec.scopes is not None else None
        roles = frozenset(spec.roles) if spec.roles is not None else None
        entries.append(
            _Entry(
                digest=bytes.fromhex(spec.digest()),
                principal=Principal(spec.identity, spec.service, roles=roles, scopes=scopes),
                expires_at=spec.expires_at,
            )
        )
    digests = [entry.digest for entry in entries]
    if len(set(digests)) != len(digests):
        raise ConfigurationError("two configured tokens are identical; give each its own")
    return tuple(entries)


class TokenAuthenticator:
    """Checks ``Authorization: Bearer <token>`` headers against configured digests,
    the tokens file (re-read when it changes) and, for JWTs, ``verifier``."""

    def __init__(
        self,
        specs: Iterable[TokenSpec],
        env: Environment = "development",
        verifier: BearerVerifier | None = None,
        tokens_file: Path | None = None,
    ) -> None:
        self._env = env
        self._fixed = _entries(specs, env)
        self._verifier = verifier
        self._file = tokens_file
        self._file_stamp: tuple[int, int] | None = None
        self._from_file: tuple[_Entry, ...] = ()
        self._lock = threading.Lock()
        if tokens_file is not None:
            self._reload(strict=True)
        self._entries = self._fixed + self._from_file

    def _reload(self, strict: bool = False) -> None:
        """Re-read the tokens file if it changed; a bad file keeps the previous tokens."""
        assert self._file is not None
        try:
            stat = self._file.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._file_stamp:
                return
            specs = [TokenSpec.model_validate(item) for item in json.loads(self._file.read_text())]
            self._from_file = _entries(specs, self._env)
        except (OSError, ValueError) as error:
            if strict:
                raise ConfigurationError(
                    f"cannot load the tokens file {self._file}: {error}"
                ) from None
            log.warning("the tokens file %s was not reloaded: %s", self._file, type(error).__name__)
            return
        self._file_stamp = stamp
        self._entries = self._fixed + self._from_file
        if not strict:
            log.info("reloaded %d tokens from %s", len(self._from_file), self._file)

    def authenticate(self, authorization: str | None, now: datetime | None = None) -> Principal:
        """The principal for an ``Authorization`` header value, else a 401 ``ApiError``."""
        if not authorization:
            raise unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("malformed Authorization header: expected 'Bearer <token>'")
        if self._verifier is not None and _JWT_SHAPE.match(token):
            verified = self._verifier.verify(token)
            current_identity.set(verified.identity)
            return verified
        if self._file is not None:
            with self._lock:
                self._reload()
        presented = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: _Entry | None = None
        for entry in self._entries:  # visit every entry: time does not reveal which matched
            if hmac.compare_digest(entry.digest, presented):
                found = entry
        if found is None:
            raise unauthorized("invalid token")
        if found.expires_at is not None and (now or datetime.now(UTC)) >= found.expires_at:
            raise unauthorized("token expired")
        current_identity.set(found.principal.identity)
        return found.principal


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})
