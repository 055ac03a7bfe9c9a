"""Settings: the dealer is never a party; production refuses plaintext, placeholder tokens and
a dealer on any party's host.

Configuration errors surface as pydantic validation errors (both are ``ValueError``s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tally.tuples.settings import DealerSettings, TuplesSettings

PEERS = ["10.0.0.1:7100", "10.0.0.2:7100", "10.0.0.3:7100"]
STRONG = "kq3-9f8e7d6c5b4a3210-zz81x"
TOKENS = [{"identity": "execution", "token": STRONG}]
TLS = {"tls_ca": Path("ca.pem"), "tls_cert": Path("party.pem"), "tls_key": Path("party.key")}
HTTPS = {"https_cert": Path("rest.pem"), "https_key": Path("rest.key")}


def production(**fields: Any) -> TuplesSettings:
    """Production settings that pass, with ``fields`` changed."""
    return TuplesSettings(
        **{"env": "production", "peers": PEERS, "tokens": TOKENS, **TLS, **HTTPS, **fields}
    )


def dealer(**fields: Any) -> DealerSettings:
    return DealerSettings(**{"peers": PEERS, "listen": "10.9.9.9:7200", "secret": STRONG, **fields})


def test_hm3_is_the_default_and_needs_three_parties() -> None:
    settings = TuplesSettings(peers=PEERS, party=1)
    assert settings.generator == "hm3"
    assert settings.listen_address == PEERS[1]
    with pytest.raises(ValueError, match="exactly 3 parties"):
        TuplesSettings(peers=PEERS[:2])


def test_a_dealer_needs_a_separate_process() -> None:
    with pytest.raises(ValueError, match="never deals its own"):
        TuplesSettings(peers=PEERS, generator="dealer")


def test_a_party_is_never_its_own_dealer() -> None:
    with pytest.raises(ValueError, match="never also the dealer"):
        TuplesSettings(peers=PEERS, party=0, generator="dealer", dealer=PEERS[2])


def test_production_refuses_a_dealer_on_any_party_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_ENV", "production")
    for host in ("10.0.0.1", "10.0.0.3"):  # this party's host, or another party's
        with pytest.raises(ValueError, match="production refuses a dealer on party"):
            production(party=0, generator="dealer", dealer=f"{host}:7999")
    settings = production(party=0, generator="dealer", dealer="10.9.9.9:7000")
    assert settings.env == "production"


def test_a_dealer_with_a_party_certificate_name_is_refused() -> None:
    with pytest.raises(ValueError, match="party's certificate name"):
        TuplesSettings(peers=PEERS, generator="dealer", dealer="10.9.9.9:1", dealer_name="party-1")
    with pytest.raises(ValueError, match="never its own dealer"):
        dealer(name="party-2")
    with pytest.raises(ValueError, match="never its own dealer"):
        dealer(listen=PEERS[1])


def test_production_needs_tokens_and_refuses_placeholders() -> None:
    assert production().env == "production"
    with pytest.raises(ValueError, match="at least one token"):
        production(tokens=[])
    for token in ("changeme", "dev-token", "short"):
        with pytest.raises(ValueError, match="placeholder"):
            production(tokens=[{"identity": "execution", "token": token}])
    assert production(tokens=[{"identity": "execution", "sha256": "ab" * 32}]).tokens


def test_production_refuses_plaintext_tuplelink() -> None:
    with pytest.raises(ValueError, match="mutual TLS for TupleLink"):
        production(tls_ca=None, tls_cert=None, tls_key=None)
    with pytest.raises(ValueError, match="all of TLS_CA"):
        TuplesSettings(peers=PEERS, tls_ca=Path("ca.pem"))
    with pytest.raises(ValueError, match="placeholder"):
        production(s3_endpoint="s3:9000", s3_secret_key="minioadmin")


def test_production_refuses_plaintext_rest_database_and_s3() -> None:
    # before, production accepted a plaintext REST listener, an unverified PostgreSQL
    # connection and plaintext S3 (regressions)
    with pytest.raises(ValueError, match="plaintext tuple-service listener"):
        production(https_cert=None, https_key=None)
    with pytest.raises(ValueError, match="sslmode=verify-full"):
        production(database_url="postgresql+psycopg://t:p@db/tuples")
    verified = "postgresql+psycopg://t:p@db/tuples?sslmode=verify-full"
    assert production(database_url=verified).database_url == verified
    with pytest.raises(ValueError, match="S3_SECURE"):
        production(s3_endpoint="s3:9000", s3_secret_key="Kd82nQ-s3-secret-key-0123")


def test_the_dealer_process_settings() -> None:
    assert dealer().name == "dealer"
    with pytest.raises(ValueError, match="TALLY_DEALER_SECRET"):
        dealer(secret="")
    with pytest.raises(ValueError, match="every party"):
        dealer(peers=PEERS[:1])
    with pytest.raises(ValueError, match="mutual TLS for the dealer"):
        dealer(env="production")
    tls = {"tls_ca": Path("ca.pem"), "tls_cert": Path("d.pem"), "tls_key": Path("d.key")}
    assert dealer(env="production", **tls).env == "production"
    with pytest.raises(ValueError, match="placeholder"):
        dealer(env="production", secret="changeme", **tls)
    with pytest.raises(ValueError, match="production refuses a dealer on party 1"):
        dealer(env="production", listen="10.0.0.2:7200", **tls)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_TUPLES_PARTY", "2")
    monkeypatch.setenv("TALLY_TUPLES_PEERS", '["a:1", "b:2", "c:3"]')
    monkeypatch.setenv("TALLY_TUPLES_POOLS", '[{"kind": "edabits:32", "low_water": 5}]')
    settings = TuplesSettings()
    assert settings.party == 2 and not settings.is_leader
    assert settings.pools[0].kind == "edabits:32"


def test_unknown_pool_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown tuple kind"):
        TuplesSettings(pools=[{"kind": "quads"}])
