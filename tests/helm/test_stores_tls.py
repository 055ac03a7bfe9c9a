"""TLS to the chart's in-cluster PostgreSQL and MinIO (``stores.tls.secretName``).

The chart rendered with the stores' TLS Secret in production mode is checked with the
services' own production transport check (:meth:`HttpsListener.refuse_plaintext`,
tally.common.https), with nothing left exempt; every path the rendered configuration
names is mounted from the Secret. A real PostgreSQL then runs with the rendered server
arguments and pg_hba.conf, and the rendered DSN connects to it through
:func:`tally.common.db.make_engine` over verified TLS — and a plaintext connection, or
one to a name the certificate does not carry, is refused. The init container's CA bundle
command runs as rendered, and the minio client is shown to read that bundle.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
import sqlalchemy
from cryptography.hazmat.primitives import serialization

from tally.common.db import make_engine
from tally.common.https import HttpsListener, check_s3
from tally.common.settings import ConfigurationError
from tally.common.tls import issue_certificate, make_ca
from tests.helm.test_chart import VALUE_SETS, objects, render
from tests.servers import postgres_cluster

STORES_TLS = VALUE_SETS["stores-tls"]
SERVICES = {
    "secret-store": "TALLY_SECRET_STORE_",
    "tuple-service": "TALLY_TUPLES_",
    "execution": "TALLY_EXECUTION_",
}
PASSWORD = "Xq7pL2vRk9sT4wYz"  # the test server's own; stands for $(TALLY_DB_PASSWORD)


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render(STORES_TLS)


def pod(docs: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    return objects(docs, kind)[f"p0-tally-{component}"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def values(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def mounted(spec: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume that provides ``path`` inside ``container``."""
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    return volume  # type: ignore[no-any-return]


def production_check(container: dict[str, Any], prefix: str, service: str) -> None:
    """The production transport check of a service, on its rendered environment."""
    env = values(container)
    listener = HttpsListener(
        https_cert=Path(env[f"{prefix}HTTPS_CERT"]),
        https_key=Path(env[f"{prefix}HTTPS_KEY"]),
        in_cluster_stores=json.loads(env[f"{prefix}IN_CLUSTER_STORES"]),
    )
    listener.refuse_plaintext(
        service,
        "production",
        env.get(f"{prefix}DATABASE_URL", ""),
        env[f"{prefix}S3_ENDPOINT"],
        env[f"{prefix}S3_SECURE"] == "true",
    )


def test_the_rendered_production_configuration_passes_the_production_check(
    docs: list[dict[str, Any]],
) -> None:
    for component, prefix in SERVICES.items():
        (container,) = pod(docs, "Deployment", component)["containers"]
        env = values(container)
        # nothing is exempt: the check sees the DSN and S3_SECURE themselves
        assert json.loads(env[f"{prefix}IN_CLUSTER_STORES"]) == [], component
        production_check(container, prefix, component)
    workers = objects(docs, "ConfigMap")["p0-tally-worker-env"]["data"]
    assert json.loads(workers["TALLY_EXECUTION_IN_CLUSTER_STORES"]) == []
    check_s3(
        "S3",
        workers["TALLY_EXECUTION_S3_ENDPOINT"],
        workers["TALLY_EXECUTION_S3_SECURE"] == "true",
        "production",
    )
    assert workers["SSL_CERT_FILE"] == workers["TALLY_EXECUTION_REST_CA"]


def test_without_stores_tls_only_the_exemption_lets_production_start() -> None:
    docs = render({**STORES_TLS, "stores": {"tls": {"secretName": ""}}})
    for component, prefix in SERVICES.items():
        (container,) = pod(docs, "Deployment", component)["containers"]
        production_check(container, prefix, component)  # the release's own stores: exempt
        for entry in container["env"]:
            if entry["name"] == f"{prefix}IN_CLUSTER_STORES":
                entry["value"] = "[]"
        with pytest.raises(ConfigurationError, match="production mode needs"):
            production_check(container, prefix, component)


def test_every_path_the_services_are_given_is_mounted(docs: list[dict[str, Any]]) -> None:
    for component, prefix in SERVICES.items():
        spec = pod(docs, "Deployment", component)
        (container,) = spec["containers"]
        env = values(container)
        if component != "execution":
            url = sqlalchemy.engine.make_url(env[f"{prefix}DATABASE_URL"])
            assert url.query["sslmode"] == "verify-full"
            volume = mounted(spec, container, str(url.query["sslrootcert"]))
            assert volume["secret"]["secretName"] == "tally-stores-tls"
            assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
        bundle = env["SSL_CERT_FILE"]
        assert "emptyDir" in mounted(spec, container, bundle)
        (init,) = spec["initContainers"]
        assert init["command"][:2] == ["sh", "-c"] and bundle in init["command"][2]
        assert not any(m.get("readOnly") for m in init["volumeMounts"] if m["name"] == "trust")


def test_the_stores_serve_tls_only(docs: list[dict[str, Any]]) -> None:
    spec = pod(docs, "StatefulSet", "postgresql")
    (postgres,) = spec["containers"]
    settings = dict(a.split("=", 1) for a in postgres["args"] if "=" in a)
    assert postgres["args"][0] == "postgres" and settings["ssl"] == "on"
    for key in ("ssl_cert_file", "ssl_key_file"):
        assert mounted(spec, postgres, settings[key])["secret"]["secretName"] == "tally-stores-tls"
    hba = objects(docs, "ConfigMap")["p0-tally-postgresql-init"]["data"]["pg_hba.conf"]
    network = [line for line in hba.splitlines() if line and not line.startswith("local")]
    assert network == ["hostssl all all all scram-sha-256"]
    spec = pod(docs, "StatefulSet", "minio")
    (minio,) = spec["containers"]
    certs = minio["args"][minio["args"].index("--certs-dir") + 1]
    volume = mounted(spec, minio, certs + "/public.crt")
    assert {i["path"] for i in volume["secret"]["items"]} == {
        "public.crt",
        "private.key",
        "CAs/ca.crt",
    }
    assert minio["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_stores_tls_for_the_workers_needs_the_rest_ca() -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmRenderError, match="needs rest.tls.secretName"):
        render({**STORES_TLS, "rest": {"tls": {"secretName": ""}}})


# --- the rendered configuration against real TLS -------------------------------------


@contextlib.contextmanager
def postgres_as_rendered(docs: list[dict[str, Any]], directory: Path) -> Iterator[int]:
    """A PostgreSQL cluster started with the StatefulSet's arguments and pg_hba.conf (the
    pod's paths mapped into ``directory``), with the chart's role and database; yields
    its port."""
    ca, ca_key = make_ca("tally stores test CA")
    server = issue_certificate(ca, ca_key, "p0-tally-postgresql")
    stores, hba = directory / "stores", directory / "hba"
    stores.mkdir()
    hba.mkdir()
    (stores / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (stores / "tls.crt").write_bytes(server.certificate)
    (stores / "tls.key").write_bytes(server.key)
    config = objects(docs, "ConfigMap")["p0-tally-postgresql-init"]["data"]
    (hba / "pg_hba.conf").write_text(config["pg_hba.conf"])
    if os.geteuid() == 0:  # as the kubelet leaves a Secret: root's, the group's to read
        import pwd

        account = pwd.getpwnam("postgres")
        os.chown(directory, account.pw_uid, account.pw_gid)
        for path in stores.iterdir():
            os.chown(path, 0, account.pw_gid)
            path.chmod(0o440)
    else:
        (stores / "tls.key").chmod(0o600)
    (postgres,) = pod(docs, "StatefulSet", "postgresql")["containers"]
    arguments = [
        a.replace("/etc/tally/stores/", f"{stores}/").replace("/etc/tally/postgresql/", f"{hba}/")
        for a in postgres["args"][1:]
    ]
    options = " ".join(shlex.quote(a) for a in arguments)
    with postgres_cluster(directory, options) as port:
        admin = sqlalchemy.create_engine(
            f"postgresql+psycopg://postgres@/postgres?host={directory}&port={port}",
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE ROLE tally LOGIN PASSWORD '{PASSWORD}'")
            connection.exec_driver_sql("CREATE DATABASE tally OWNER tally")
        admin.dispose()
        yield port


def test_the_rendered_dsn_connects_over_verified_tls_only(docs: list[dict[str, Any]]) -> None:
    (container,) = pod(docs, "Deployment", "secret-store")["containers"]
    rendered = values(container)["TALLY_SECRET_STORE_DATABASE_URL"]
    directory = Path(tempfile.mkdtemp(prefix="tally-pg-tls-"))
    try:
        with postgres_as_rendered(docs, directory) as port:

            def url(dsn: str, name: str = "p0-tally-postgresql") -> str:
                # the pod's name resolves to this server; the certificate is checked
                # against the name (hostaddr skips the lookup, not the check)
                return (
                    dsn.replace("$(TALLY_DB_PASSWORD)", PASSWORD)
                    .replace("/etc/tally/stores/", f"{directory}/stores/")
                    .replace("@p0-tally-postgresql:5432/", f"@{name}:{port}/")
                    + "&hostaddr=127.0.0.1"
                )

            engine = make_engine(url(rendered))
            with engine.connect() as connection:
                encrypted = connection.exec_driver_sql(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                ).scalar()
            engine.dispose()
            assert encrypted is True
            plaintext = url(rendered).replace("sslmode=verify-full", "sslmode=disable")
            with pytest.raises(sqlalchemy.exc.OperationalError, match="pg_hba.conf"):
                make_engine(plaintext).connect()
            with pytest.raises(sqlalchemy.exc.OperationalError, match="does not match host"):
                make_engine(url(rendered, "p0-tally-other")).connect()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_the_trust_bundle_holds_the_public_roots_and_the_stores_ca(
    docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    (init,) = pod(docs, "Deployment", "execution")["initContainers"]
    ca, _ = make_ca("tally stores test CA")
    (tmp_path / "stores").mkdir()
    (tmp_path / "trust").mkdir()
    (tmp_path / "stores" / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    command = init["command"][2].replace("/etc/tally/", f"{tmp_path}/")
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", command], check=True, env=environment, timeout=60)
    bundle = tmp_path / "trust" / "ca-bundle.crt"
    context = ssl.create_default_context(cafile=str(bundle))
    public = ssl.create_default_context(cafile=certifi.where())
    subjects = [dict(item[0] for item in c["subject"]) for c in context.get_ca_certs()]
    assert len(subjects) == len(public.get_ca_certs()) + 1
    assert any(s.get("commonName") == "tally stores test CA" for s in subjects)


def test_the_minio_client_verifies_s3_with_the_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    from minio import Minio

    monkeypatch.setenv("SSL_CERT_FILE", "/etc/tally/trust/ca-bundle.crt")
    client = Minio("p0-tally-minio:9000", access_key="a", secret_key="b", secure=True)
    pool = client._http.connection_pool_kw  # minio builds its urllib3 pool from SSL_CERT_FILE
    assert pool["ca_certs"] == "/etc/tally/trust/ca-bundle.crt"
    assert pool["cert_reqs"] == "CERT_REQUIRED"
