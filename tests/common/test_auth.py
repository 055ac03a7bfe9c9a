"""Bearer tokens: hashing, constant-time lookup, expiry, production refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from tally.common.auth import Principal, TokenAuthenticator, TokenSpec, hash_token
from tally.common.errors import ApiError
from tally.common.settings import ConfigurationError, check_secret, is_placeholder

STRONG = "Zq4vN8xK2mP7rT1wY6bC3dF9hJ0lS5uE"


def authenticator(**kwargs: object) -> TokenAuthenticator:
    return TokenAuthenticator(
        [
            TokenSpec(identity="alice", token=STRONG),
            TokenSpec(identity="exec", sha256=hash_token("exec-secret"), service=True),
            TokenSpec(
                identity="old",
                token="old-token",
                expires_at=datetime.now(UTC) - timedelta(seconds=1),
            ),
        ],
        **kwargs,  # type: ignore[arg-type]
    )


def test_tokens_map_to_identities() -> None:
    auth = authenticator()
    assert auth.authenticate(f"Bearer {STRONG}") == Principal("alice", False)
    assert auth.authenticate("bearer exec-secret") == Principal("exec", True)


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "missing"),
        ("", "missing"),
        ("Bearer", "malformed"),
        ("Token abc", "malformed"),
        ("Bearer wrong", "invalid token"),
        (f"Bearer {STRONG}x", "invalid token"),
        ("Bearer old-token", "expired"),
    ],
)
def test_bad_credentials_are_401(header: str | None, detail: str) -> None:
    with pytest.raises(ApiError) as error:
        authenticator().authenticate(header)
    assert error.value.status_code == 401
    assert detail in str(error.value.detail)
    assert error.value.headers == {"WWW-Authenticate": "Bearer"}


def test_only_digests_are_kept() -> None:
    auth = authenticator()
    assert STRONG not in repr(vars(auth))
    assert STRONG not in repr(TokenSpec(identity="alice", token=STRONG))


def test_spec_needs_exactly_one_form() -> None:
    with pytest.raises(ValidationError):
        TokenSpec(identity="a")
    with pytest.raises(ValidationError):
        TokenSpec(identity="a", token="x", sha256="ab" * 32)
    with pytest.raises(ValidationError):
        TokenSpec(identity="a", sha256="not-hex")
    with pytest.raises(ValidationError):
        TokenSpec(identity="bad/identity", token="x")


def test_duplicate_tokens_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="identical"):
        TokenAuthenticator(
            [TokenSpec(identity="a", token="same"), TokenSpec(identity="b", token="same")]
        )


def test_production_refuses_placeholders() -> None:
    with pytest.raises(ConfigurationError, match="placeholder"):
        TokenAuthenticator([TokenSpec(identity="a", token="changeme")], env="production")
    TokenAuthenticator([TokenSpec(identity="a", token=STRONG)], env="production")
    TokenAuthenticator([TokenSpec(identity="a", token="changeme")], env="development")


def test_placeholder_detection() -> None:
    assert is_placeholder("changeme") and is_placeholder("CHANGEME") and is_placeholder("short")
    assert not is_placeholder(STRONG)
    check_secret("X", "changeme", "development")
    with pytest.raises(ConfigurationError, match="X is a placeholder"):
        check_secret("X", "changeme", "production")
