"""OIDC/JWT bearer tokens, verified against the issuer's JWKS, beside the static tokens.

A request's bearer token is tried as a JWT when it looks like one (three base64url
parts) and an issuer is configured; otherwise against the static token digests
(:class:`tally.common.auth.TokenAuthenticator`).  A JWT is accepted only with a valid
signature by a key of the issuer's JWKS (RS256/ES256/EdDSA; never ``none`` or HMAC),
the configured ``iss`` and ``aud``, an ``exp`` in the future and an ``nbf``/``iat``
not in the future, each within ``leeway_s`` of clock skew.  The identity is the
``identity_claim`` (default ``sub``), checked against the identity pattern; roles come
from ``roles_claim`` (a list), scopes from ``scope`` (space-separated).  The role
``service`` makes a party service credential.

The JWKS is fetched over HTTPS (plain HTTP only for a loopback test issuer) and cached
for ``jwks_refresh_s``; a token signed by an unknown key id triggers one refetch (key
rotation), at most once per ``min_refetch_s``.  Never logged: tokens, claims.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
from pydantic import BaseModel, Field

from tally.common.auth import (
    IDENTITY_PATTERN,
    ROLES,
    Principal,
    TokenAuthenticator,
    TokenSpec,
    unauthorized,
)
from tally.common.settings import ConfigurationError, Environment

log = logging.getLogger(__name__)

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]
_IDENTITY = re.compile(IDENTITY_PATTERN)


class OidcSettings(BaseModel):
    """An identity provider whose JWTs a service accepts."""

    issuer: str = Field(description="the iss claim tokens must carry")
    audience: str = Field(description="the aud claim tokens must carry (this service)")
    jwks_url: str = Field(description="where the issuer publishes its signing keys (JWKS)")
    identity_claim: str = Field(default="sub", description="the claim naming the identity")
    roles_claim: str = Field(default="roles", description="the claim listing the roles")
    leeway_s: float = Field(default=60.0, ge=0, le=600, description="allowed clock skew")
    jwks_refresh_s: float = Field(default=300.0, gt=0, description="JWKS cache lifetime")
    min_refetch_s: float = Field(default=10.0, ge=0, description="least time between fetches")


class JwtVerifier:
    """Verifies JWTs of one issuer against its (cached) JWKS."""

    def __init__(self, settings: OidcSettings, fetch: Any = None) -> None:
        if not settings.jwks_url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ConfigurationError("the JWKS URL must be https:// (http only on loopback)")
        self.settings = settings
        self._fetch = fetch or _fetch_json
        self._lock = threading.Lock()
        self._keys: dict[str, Any] = {}
        self._fetched_at = -1e18

    def _refresh(self, force: bool) -> None:
        now = time.monotonic()
        age = now - self._fetched_at
        if not force and age < self.settings.jwks_refresh_s:
            return
        if force and age < self.settings.min_refetch_s:
            return
        document = self._fetch(self.settings.jwks_url)
        keys = {}
        for entry in document.get("keys", []) if isinstance(document, Mapping) else []:
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue  # an unusable key (or an HMAC secret) is never trusted
            if key.key_id:
                keys[key.key_id] = key
        self._keys, self._fetched_at = keys, now

    def _key(self, key_id: str) -> Any:
        with self._lock:
            try:
                self._refresh(force=False)
                if key_id not in self._keys:
                    self._refresh(force=True)  # the issuer may have rotated its keys
            except (OSError, ValueError) as error:  # the reason names hosts: log it only
                log.warning("the JWKS of %s is unavailable: %s", self.settings.issuer, error)
                raise unauthorized("the identity provider's keys are unavailable") from None
            key = self._keys.get(key_id)
        if key is None:
            raise unauthorized("invalid token: signed by a key the issuer does not publish")
        return key

    def verify(self, token: str) -> Principal:
        """The principal a JWT names, else a 401 ``ApiError`` (the reason, never the claims)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthorized("invalid token: not a well-formed JWT") from None
        if header.get("alg") not in ALGORITHMS:
            raise unauthorized("invalid token: its signature algorithm is not accepted")
        key = self._key(str(header.get("kid", "")))
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=ALGORITHMS,
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_s,
                options={"require": ["exp", "iss", "aud", self.settings.identity_claim]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("token expired") from None
        except jwt.PyJWTError as error:
            raise unauthorized(f"invalid token: {_reason(error)}") from None
        return _principal(claims, self.settings)


def _principal(claims: Mapping[str, Any], settings: OidcSettings) -> Principal:
    identity = claims.get(settings.identity_claim)
    if not isinstance(identity, str) or not _IDENTITY.match(identity):
        raise unauthorized(f"invalid token: its {settings.identity_claim} is not an identity")
    raw_roles = claims.get(settings.roles_claim) or []
    roles = frozenset(r for r in raw_roles if isinstance(r, str)) & ROLES
    scope = claims.get("scope")
    scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
    return Principal(identity, "service" in roles, roles=roles, scopes=scopes)


def _reason(error: Exception) -> str:
    if isinstance(error, jwt.InvalidAudienceError):
        return "it is not meant for this service (aud)"
    if isinstance(error, jwt.InvalidIssuerError):
        return "it is from another issuer (iss)"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "it is not valid yet (nbf/iat)"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"it lacks the {error.claim} claim"
    if isinstance(error, jwt.InvalidSignatureError):
        return "its signature does not verify"
    return "it does not verify"


def _fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (checked scheme)
        return json.loads(response.read(1 << 20))


class IdentitySettings(BaseModel):
    """Where a service's identities come from: fields every service's settings share."""

    oidc: OidcSettings | None = Field(
        default=None, description="an identity provider whose JWTs are accepted (JSON)"
    )
    tokens_file: Path | None = Field(
        default=None, description="static tokens as a JSON list, re-read when it changes"
    )
    audit_file: Path | None = Field(
        default=None, description="also append the audit trail (JSON lines) to this file"
    )


def make_authenticator(
    tokens: list[TokenSpec], env: Environment, identity: IdentitySettings
) -> TokenAuthenticator:
    """Static tokens (settings and file) and, when configured, the issuer's JWTs."""
    verifier = JwtVerifier(identity.oidc) if identity.oidc is not None else None
    return TokenAuthenticator(tokens, env, verifier=verifier, tokens_file=identity.tokens_file)
