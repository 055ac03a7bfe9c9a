"""Base pieces for each service's pydantic-settings class.

Every service defines its own ``BaseSettings`` subclass with a ``TALLY_<SERVICE>_`` env
prefix and reads it once at start-up (``Settings()``), then passes it down. This module
holds what they share: the deployment mode (``TALLY_ENV``-style ``env`` field), the
placeholder-secret check that production mode enforces, and ``ConfigurationError``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

Environment = Literal["development", "production"]
"""``development`` allows placeholder secrets and debug hooks; ``production`` refuses them."""

ENV_FIELD: Any = Field(
    default="development",
    description="development | production; production refuses placeholder secrets",
)

PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "changethis",
        "secret",
        "password",
        "token",
        "dev",
        "dev-token",
        "test",
        "test-token",
        "example",
        "admin",
        "minioadmin",
        "tally",
    }
)
"""Values that mark a secret as not set for real."""

MIN_PRODUCTION_SECRET_LENGTH = 24


class ConfigurationError(ValueError):
    """The service cannot start with these settings; the message says what to change."""


def is_placeholder(secret: str) -> bool:
    """Whether ``secret`` is a well-known placeholder (case-insensitive) or too short."""
    return (
        secret.strip().lower() in PLACEHOLDER_SECRETS or len(secret) < MIN_PRODUCTION_SECRET_LENGTH
    )


def check_secret(name: str, secret: str, env: Environment) -> None:
    """Refuse a placeholder ``secret`` in production mode; development accepts anything."""
    if env == "production" and is_placeholder(secret):
        raise ConfigurationError(
            f"{name} is a placeholder or shorter than {MIN_PRODUCTION_SECRET_LENGTH} "
            "characters; set a random value (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`) or run with env=development"
        )
