"""Party certificate names parse strictly: one spelling per party."""

from __future__ import annotations

import pytest

from tally.common.tls import is_party_name, party_index, party_name


@pytest.mark.parametrize("index", [0, 1, 2, 9, 10, 4095])
def test_every_party_has_one_name(index: int) -> None:
    assert party_index(party_name(index)) == index and is_party_name(party_name(index))


@pytest.mark.parametrize(
    "name",
    # before, "party-01" and Unicode digits ("party-\u0661", Arabic-Indic one) named party 1
    [
        "party-01",
        "party-\u0661",
        "party-\uff11",
        "party-",
        "party-1 ",
        "Party-1",
        "party--1",
        "party-1x",
        "party-99999",
        "dealer",
        "xparty-1",
    ],  # fmt: skip
)
def test_any_other_spelling_names_no_party(name: str) -> None:
    assert party_index(name) is None and not is_party_name(name)
