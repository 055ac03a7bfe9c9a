"""TuplesSettings: the dealer is never a party, and production refuses a party-local dealer.

Configuration errors surface as pydantic validation errors (both are ``ValueError``s).
"""

from __future__ import annotations

import pytest

from tally.tuples.settings import TuplesSettings

PEERS = ["10.0.0.1:7100", "10.0.0.2:7100", "10.0.0.3:7100"]


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


def test_production_refuses_a_dealer_on_the_party_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_ENV", "production")
    with pytest.raises(ValueError, match="production refuses"):
        TuplesSettings(peers=PEERS, party=0, generator="dealer", dealer="10.0.0.1:7999")
    settings = TuplesSettings(peers=PEERS, party=0, generator="dealer", dealer="10.9.9.9:7000")
    assert settings.env == "production"


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
