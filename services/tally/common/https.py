"""HTTPS on every REST listener, and verified HTTPS between a party's services.

* :func:`server_tls`: the uvicorn arguments of a listener with a certificate (and,
  optionally, a CA whose client certificates it requires: intra-party mutual TLS).
* :func:`client_context`: the ``ssl.SSLContext`` a service verifies another service
  with — the party's REST CA when given, else the system's trust store.
* :func:`check_listener`, :func:`check_service_url`, :func:`check_database_url`: what
  production mode refuses — a plaintext listener, an ``http://`` URL to another
  service, a PostgreSQL connection that does not verify its server.
"""

from __future__ import annotations

import ssl
import urllib.parse
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from tally.common.settings import ConfigurationError, Environment


class HttpsListener(BaseModel):
    """The REST listener's certificate: fields every service's settings share."""

    https_cert: Path | None = Field(
        default=None, description="PEM certificate chain of the REST listener (HTTPS)"
    )
    https_key: Path | None = Field(default=None, description="PEM private key of that certificate")
    https_client_ca: Path | None = Field(
        default=None,
        description="require client certificates from this CA (intra-party mutual TLS)",
    )

    in_cluster_stores: list[Literal["database", "s3"]] = Field(
        default_factory=list,
        description="stores run by this party's own release, reachable only from its pods "
        "(the chart's PostgreSQL and MinIO): production allows a plaintext connection to "
        "these, and refuses it to any other",
    )

    def server_tls(self) -> dict[str, Any]:
        """uvicorn's ``ssl_*`` arguments for this listener."""
        return server_tls(self.https_cert, self.https_key, self.https_client_ca)

    def refuse_plaintext(
        self,
        service: str,
        env: Environment,
        database_url: str = "",
        s3_endpoint: str = "",
        s3_secure: bool = False,
    ) -> None:
        """Production: no plaintext listener, database or S3 connection (but to the
        release's own stores, ``in_cluster_stores``)."""
        check_listener(service, self.https_cert, env)
        check_database_url("DATABASE_URL", database_url, env, "database" in self.in_cluster_stores)
        check_s3("S3", s3_endpoint, s3_secure, env, "s3" in self.in_cluster_stores)


def server_tls(
    cert: Path | None, key: Path | None, client_ca: Path | None = None
) -> dict[str, Any]:
    """uvicorn's ``ssl_*`` arguments; empty (plaintext) without a certificate."""
    if cert is None and key is None:
        if client_ca is not None:
            raise ConfigurationError("HTTPS_CLIENT_CA needs HTTPS_CERT and HTTPS_KEY")
        return {}
    if cert is None or key is None:
        raise ConfigurationError("set both HTTPS_CERT and HTTPS_KEY (or neither)")
    for path in (cert, key, client_ca):
        if path is not None and not Path(path).is_file():
            raise ConfigurationError(f"cannot read the HTTPS file {path}")
    arguments: dict[str, Any] = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    if client_ca is not None:
        arguments.update(ssl_ca_certs=str(client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return arguments


def client_context(ca: Path | None) -> ssl.SSLContext:
    """Verify servers against ``ca`` (the party's REST CA), else the system trust store."""
    context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def check_listener(service: str, cert: Path | None, env: Environment) -> None:
    """Production refuses a plaintext REST listener."""
    if env == "production" and cert is None:
        raise ConfigurationError(
            f"production mode refuses a plaintext {service} listener: set HTTPS_CERT and "
            "HTTPS_KEY (e.g. a cert-manager Secret)"
        )


def check_service_url(name: str, url: str, env: Environment) -> None:
    """Production refuses ``http://`` (or any non-HTTPS scheme) to another service."""
    if env == "production" and urllib.parse.urlsplit(url).scheme != "https":
        raise ConfigurationError(f"production mode needs an https:// {name}, not {url!r}")


def check_database_url(name: str, url: str, env: Environment, in_cluster: bool = False) -> None:
    """Production refuses a PostgreSQL connection without ``sslmode=verify-full`` (unless
    the database is the release's own, ``in_cluster``)."""
    if env != "production" or not url.startswith("postgresql") or in_cluster:
        return
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    if query.get("sslmode") != ["verify-full"]:
        raise ConfigurationError(
            f"production mode needs {name} with ?sslmode=verify-full (TLS that verifies the "
            "database server), not a plaintext or unverified connection"
        )


def check_s3(
    name: str, endpoint: str, secure: bool, env: Environment, in_cluster: bool = False
) -> None:
    """Production refuses a plaintext S3 connection (unless to the release's own store)."""
    if env == "production" and endpoint and not secure and not in_cluster:
        raise ConfigurationError(f"production mode needs {name}_SECURE=true (HTTPS to S3)")
