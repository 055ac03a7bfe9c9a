"""ExecutionSettings: where inputs and tuples come from, and what production mode refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tally.execution.settings import ExecutionSettings

PEERS = ["10.0.0.1:7100", "10.0.0.2:7100", "10.0.0.3:7100"]
TOKEN = "Zq3v8Yb1-secret-store-service-credential"


def production(tmp_path: Path, **changes: Any) -> ExecutionSettings:
    tls = {name: tmp_path / f"{name}.pem" for name in ("tls_ca", "tls_cert", "tls_key")}
    values = {
        "env": "production",
        "peers": PEERS,
        **tls,
        "inputs": "secret-store",
        "secret_store_url": "https://secret-store:8100",
        "secret_store_token": TOKEN,
        "tuples": "service",
        "tuples_url": "https://tuples:8200",
        "tuples_token": "Kd82nQ-tuple-service-bearer-token",
        "https_cert": tmp_path / "rest.pem",
        "https_key": tmp_path / "rest.key",
    }
    return ExecutionSettings(**{**values, **changes})


def test_development_defaults_to_local_datasets_and_the_dealer() -> None:
    settings = ExecutionSettings(peers=PEERS)
    assert (settings.inputs, settings.tuples) == ("local", "dealer")


def test_the_settings_names_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "INPUTS": "secret-store",
        "SECRET_STORE_URL": "http://127.0.0.1:8100",
        "SECRET_STORE_TOKEN": TOKEN,
        "TUPLES": "service",
        "TUPLES_URL": "http://127.0.0.1:8200",
        "TUPLES_TOKEN": "t",
    }.items():
        monkeypatch.setenv(f"TALLY_EXECUTION_{name}", value)
    settings = ExecutionSettings()
    assert settings.secret_store_token.get_secret_value() == TOKEN
    assert (settings.inputs, settings.tuples, settings.tuples_url) == (
        "secret-store",
        "service",
        "http://127.0.0.1:8200",
    )


def test_the_secret_store_needs_its_url_and_the_service_credential() -> None:
    with pytest.raises(ValueError, match="SECRET_STORE_URL and SECRET_STORE_TOKEN"):
        ExecutionSettings(inputs="secret-store", secret_store_url="http://s:8100")
    with pytest.raises(ValueError, match="TUPLES_URL and TUPLES_TOKEN"):
        ExecutionSettings(tuples="service", tuples_url="http://t:8200")


def test_production_accepts_the_services(tmp_path: Path) -> None:
    assert production(tmp_path).tuples == "service"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tuples": "dealer"}, "dealer is refused in production"),
        ({"inputs": "local"}, "production needs INPUTS=secret-store"),
        ({"secret_store_token": "changeme"}, "SECRET_STORE_TOKEN is a placeholder"),
        ({"tuples_token": "token"}, "TUPLES_TOKEN is a placeholder"),
        ({"tls_ca": None, "tls_cert": None, "tls_key": None}, "mutual TLS"),
        # before, production accepted plaintext REST everywhere (regressions)
        ({"https_cert": None, "https_key": None}, "plaintext execution listener"),
        ({"secret_store_url": "http://secret-store:8100"}, "https:// SECRET_STORE_URL"),
        ({"tuples_url": "http://tuples:8200"}, "https:// TUPLES_URL"),
        ({"workers": "external", "url": "http://execution:8300"}, "https:// URL"),
        ({"s3_endpoint": "minio:9000", "s3_secret_key": "Kd82nQ-s3-secret-key-0123"}, "S3_SECURE"),
    ],
)
def test_production_refuses_development_shortcuts(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        production(tmp_path, **changes)


def test_a_certificate_for_another_party_is_refused_at_start_up(tmp_path: Path) -> None:
    from tally.common.settings import ConfigurationError
    from tally.execution.settings import load_tls
    from tally.execution.tls import write_test_pki

    pki = write_test_pki(tmp_path, 3)
    ca, cert, key = pki[1]
    peers = ["127.0.0.1:7100", "127.0.0.1:7101", "127.0.0.1:7102"]
    own = ExecutionSettings(party=1, peers=peers, tls_ca=ca, tls_cert=cert, tls_key=key)
    assert load_tls(own) is not None
    wrong = ExecutionSettings(party=2, peers=peers, tls_ca=ca, tls_cert=cert, tls_key=key)
    with pytest.raises(ConfigurationError, match="names 'party-1', but this is party 2"):
        load_tls(wrong)


def test_the_endpoint_binds_its_container_port_not_the_public_one() -> None:
    """PEERS names what the others dial (a load balancer's port); CONTROL_PORT is the pod's."""
    peers = ["lb-0.example.org:443", "lb-1.example.org:443"]
    behind = ExecutionSettings(party=1, peers=peers, control_port=7100)
    assert behind.endpoint_port == 7100
    assert ExecutionSettings(party=1, peers=peers).endpoint_port == 443


def test_three_parties_on_hm3_take_the_replicated_path_by_default() -> None:
    """Issue 18: the hm3 trust model runs its online phase without triples."""
    assert ExecutionSettings(peers=PEERS, tuple_generator="hm3").online_sharing == "replicated"
    assert ExecutionSettings(peers=PEERS, tuple_generator="ot").online_sharing == "additive"
    assert ExecutionSettings(peers=PEERS).online_sharing == "additive"
    assert ExecutionSettings(peers=PEERS[:2], tuple_generator="hm3").sharing == "additive"
    chosen = ExecutionSettings(peers=PEERS, tuple_generator="hm3", sharing="additive")
    assert chosen.online_sharing == "additive"


def test_the_replicated_path_is_refused_for_other_party_counts() -> None:
    with pytest.raises(ValueError, match="three-party honest-majority path"):
        ExecutionSettings(peers=PEERS[:2], sharing="replicated")
