"""Masked input (DESIGN §5.2) across three parties' secret-stores.

The provider reserves masks at every party, reconstructs r = Σ r_i, uploads
y = x − r everywhere; the parties' stored shares must sum to x, and each reservation
works once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from tests.secret_store.conftest import Api, sha256

ROWS = 6
COLUMNS = [{"name": "region", "kind": "key"}, {"name": "amount", "kind": "fixed(16)"}]


@pytest.fixture
def parties(make_api: Callable[..., Api]) -> list[Api]:
    """Three parties' secret-stores."""
    return [make_api(party=party) for party in range(3)]


def reserve(api: Api, count: int, identity: str = "alice") -> tuple[str, NDArray[np.uint64]]:
    """Reserve ``count`` masks; ``(reservation id, this party's r_i)``."""
    reservation = api.request("POST", "/v1/input-masks", identity, json={"count": count})
    assert reservation.status_code == 201, reservation.text
    body = reservation.json()
    shares = api.request("GET", body["shares_url"], identity)
    assert shares.status_code == 200
    return body["id"], np.frombuffer(shares.content, dtype="<u8").copy()


def masked_dataset(reservation_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "masked sales",
        "columns": COLUMNS,
        "rows": ROWS,
        "reservation_id": reservation_id,
        **extra,
    }


def test_parties_shares_sum_to_the_inputs(parties: list[Api]) -> None:
    rng = np.random.default_rng(7)
    x = {
        "region": rng.integers(0, 50, ROWS).astype(np.uint64),
        "amount": (rng.integers(-(10**6), 10**6, ROWS) << 16).astype(np.int64).view(np.uint64),
    }
    count = ROWS * len(COLUMNS)
    reservations = [reserve(api, count) for api in parties]
    r = np.sum([mask for _, mask in reservations], axis=0, dtype=np.uint64)
    dataset_ids = []
    for api, (reservation_id, _) in zip(parties, reservations, strict=True):
        created = api.request("POST", "/v1/masked-inputs", json=masked_dataset(reservation_id))
        assert created.status_code == 201, created.text
        assert created.json()["masked"] is True
        dataset_id = created.json()["id"]
        for position, column in enumerate(COLUMNS):
            y = x[column["name"]] - r[position * ROWS : (position + 1) * ROWS]
            response = api.upload(
                dataset_id, column["name"], y.tobytes(), prefix="/v1/masked-inputs"
            )
            assert response.status_code == 201, response.text
        assert api.commit(dataset_id).status_code == 200
        dataset_ids.append(dataset_id)
    for column in COLUMNS:
        total = np.zeros(ROWS, dtype=np.uint64)
        for api, dataset_id in zip(parties, dataset_ids, strict=True):
            response = api.request("GET", f"/v1/datasets/{dataset_id}/columns/{column['name']}")
            share = np.frombuffer(response.content, dtype="<u8")
            assert response.headers["tally-sha256"] == sha256(share.tobytes())
            total += share
        assert np.array_equal(total, x[column["name"]])


def test_party_i_stores_its_masks_and_party_0_adds_y(parties: list[Api]) -> None:
    for party, api in enumerate(parties):
        reservation_id, mask = reserve(api, ROWS)
        dataset = {**masked_dataset(reservation_id), "columns": [COLUMNS[0]]}
        dataset_id = api.request("POST", "/v1/masked-inputs", json=dataset).json()["id"]
        y = np.arange(ROWS, dtype=np.uint64) + np.uint64(2**63)
        api.upload(dataset_id, "region", y.tobytes(), prefix="/v1/masked-inputs")
        api.commit(dataset_id)
        stored = np.frombuffer(
            api.request("GET", f"/v1/datasets/{dataset_id}/columns/region").content, dtype="<u8"
        )
        assert np.array_equal(stored, y + mask if party == 0 else mask)


def test_masks_are_fresh_random_words(parties: list[Api]) -> None:
    _, first = reserve(parties[0], 4096)
    _, second = reserve(parties[0], 4096)
    assert not np.array_equal(first, second)
    assert len(np.unique(first)) == 4096  # 64-bit random words do not collide
    bits = np.unpackbits(first.view(np.uint8))
    assert 0.45 < bits.mean() < 0.55


def test_a_reservation_is_usable_once(parties: list[Api]) -> None:
    api = parties[0]
    reservation_id, _ = reserve(api, ROWS * len(COLUMNS))
    first = api.request("POST", "/v1/masked-inputs", json=masked_dataset(reservation_id))
    assert first.status_code == 201
    retry = api.request(
        "POST", "/v1/masked-inputs", json=masked_dataset(reservation_id, id=first.json()["id"])
    )
    assert retry.status_code == 200  # the same request again: idempotent, not a second use
    before = api.snapshot()
    second = api.request("POST", "/v1/masked-inputs", json=masked_dataset(reservation_id))
    assert second.status_code == 409 and "already used" in second.json()["detail"]
    assert api.snapshot() == before
    assert api.request("GET", f"/v1/input-masks/{reservation_id}").json()["used"] is True


def test_reservation_checks(parties: list[Api]) -> None:
    api = parties[0]
    reservation_id, _ = reserve(api, 5)
    before = api.snapshot()
    wrong_count = api.request("POST", "/v1/masked-inputs", json=masked_dataset(reservation_id))
    assert wrong_count.status_code == 422 and "5 masks" in wrong_count.json()["detail"]
    others = api.request(
        "POST", "/v1/masked-inputs", "bob", json=masked_dataset(reservation_id, rows=2)
    )
    assert others.status_code == 404
    assert api.request("GET", f"/v1/input-masks/{reservation_id}", "bob").status_code == 404
    assert api.request("GET", f"/v1/input-masks/{reservation_id}/shares", "bob").status_code == 404
    unknown = masked_dataset("00000000-0000-4000-8000-000000000000")
    assert api.request("POST", "/v1/masked-inputs", json=unknown).status_code == 404
    assert api.snapshot() == before
    for count in (0, -1, 1 << 40):
        assert api.request("POST", "/v1/input-masks", json={"count": count}).status_code == 422


def test_masked_and_plain_uploads_do_not_mix(parties: list[Api]) -> None:
    api = parties[0]
    reservation_id, _ = reserve(api, ROWS * len(COLUMNS))
    masked_id = api.request("POST", "/v1/masked-inputs", json=masked_dataset(reservation_id))
    plain_id = api.create(rows=ROWS).json()["id"]
    data = np.zeros(ROWS, dtype=np.uint64).tobytes()
    wrong_route = api.upload(masked_id.json()["id"], "region", data)
    assert wrong_route.status_code == 409 and "masked-inputs" in wrong_route.json()["detail"]
    assert api.upload(plain_id, "region", data, prefix="/v1/masked-inputs").status_code == 409


def test_consumed_masks_are_gone_after_commit(parties: list[Api]) -> None:
    api = parties[1]
    reservation_id, _ = reserve(api, ROWS)
    dataset = {**masked_dataset(reservation_id), "columns": [COLUMNS[0]]}
    dataset_id = api.request("POST", "/v1/masked-inputs", json=dataset).json()["id"]
    api.upload(dataset_id, "region", bytes(ROWS * 8), prefix="/v1/masked-inputs")
    assert api.commit(dataset_id).status_code == 200
    response = api.request("GET", f"/v1/input-masks/{reservation_id}/shares")
    assert response.status_code == 410
