"""Dataset lifecycle through the API: create, upload, commit, list, read, delete, tags."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tests.secret_store.conftest import Api, new_id, random_shares, sha256


def test_round_trip_returns_the_uploaded_shares(api: Api) -> None:
    dataset_id, columns = api.committed(rows=1000)
    for name, values in columns.items():
        response = api.request("GET", f"/v1/datasets/{dataset_id}/columns/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["tally-sha256"] == sha256(values.tobytes())
        assert np.array_equal(np.frombuffer(response.content, dtype="<u8"), values)
    dataset = api.request("GET", f"/v1/datasets/{dataset_id}").json()
    assert dataset["state"] == "committed"
    assert dataset["rows"] == 1000
    assert dataset["owner"] == "alice"
    assert dataset["committed_at"] is not None


def test_schema_kinds_are_stored_with_their_encoding(api: Api) -> None:
    columns = [
        {"name": "k", "kind": "key", "bits": 20},
        {"name": "amount", "kind": "fixed(12)"},
        {"name": "price", "kind": "fixed"},
        {"name": "n", "kind": "int"},
        {"name": "flag", "kind": "bool"},
    ]
    dataset = api.create(columns=columns).json()
    stored = {column["name"]: column for column in dataset["columns"]}
    assert [column["name"] for column in dataset["columns"]] == [
        "k",
        "amount",
        "price",
        "n",
        "flag",
    ]
    assert stored["k"] == {"name": "k", "kind": "key", "bits": 20, "frac_bits": 0}
    assert stored["amount"]["kind"] == "fixed" and stored["amount"]["frac_bits"] == 12
    assert stored["price"]["frac_bits"] == 16
    assert stored["flag"]["bits"] == 1


def test_partitions_upload_and_read_separately_or_whole(api: Api) -> None:
    dataset_id, columns = api.committed(rows=12, partitions=3)
    values = columns["views"]
    whole = api.request("GET", f"/v1/datasets/{dataset_id}/columns/views")
    assert np.array_equal(np.frombuffer(whole.content, dtype="<u8"), values)
    assert "tally-sha256" not in whole.headers
    part = api.request("GET", f"/v1/datasets/{dataset_id}/columns/views", params={"partition": 1})
    assert np.array_equal(np.frombuffer(part.content, dtype="<u8"), values[4:8])
    assert part.headers["tally-sha256"] == sha256(values[4:8].tobytes())


def test_partitioned_upload_needs_a_partition(api: Api) -> None:
    dataset = api.create(rows=4, partitions=2).json()
    response = api.upload(dataset["id"], "views", random_shares(4).tobytes())
    assert response.status_code == 400
    assert "partition" in response.json()["detail"]


def test_pending_dataset_is_neither_listed_nor_readable(api: Api) -> None:
    dataset = api.create().json()
    assert api.upload(dataset["id"], "region", random_shares(4).tobytes()).status_code == 201
    assert api.request("GET", f"/v1/datasets/{dataset['id']}").status_code == 404
    assert api.request("GET", f"/v1/datasets/{dataset['id']}/columns/region").status_code == 404
    assert api.request("GET", f"/v1/datasets/{dataset['id']}/tags").status_code == 404
    assert api.request("GET", "/v1/datasets").json()["total"] == 0


def test_commit_with_missing_shares_is_refused_and_names_them(api: Api) -> None:
    dataset = api.create(rows=4, partitions=2).json()
    api.upload(dataset["id"], "region", random_shares(2).tobytes(), partition=0)
    response = api.commit(dataset["id"])
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "region[1]" in detail and "views[0]" in detail and "views[1]" in detail
    assert api.request("GET", "/v1/datasets").json()["total"] == 0


def test_a_wide_many_partition_dataset_is_refused_and_commit_stays_cheap(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(max_parts=4096)
    columns = [{"name": f"c{i}", "kind": "int"} for i in range(1024)]
    # before, 1,024 columns x 65,536 partitions was accepted and commit built 67 M
    # strings to name the missing parts (regression)
    huge = api.create(columns=columns, rows=1 << 16, partitions=1 << 16)
    assert huge.status_code == 422 and "max_parts" in huge.json()["detail"]
    wide = api.create(columns=columns[:64], rows=64 * 64, partitions=64).json()
    response = api.commit(wide["id"])
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "c0[0]" in detail and "(4096 parts missing)" in detail and len(detail) < 600


def test_create_with_same_id_and_body_is_idempotent(api: Api) -> None:
    dataset_id = new_id()
    first = api.create(id=dataset_id)
    again = api.create(id=dataset_id)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == dataset_id
    different = api.create(id=dataset_id, rows=8)
    assert different.status_code == 409
    by_other = api.create(id=dataset_id, identity="bob")
    assert by_other.status_code == 409


def test_resent_identical_upload_is_idempotent(api: Api) -> None:
    dataset = api.create().json()
    data = random_shares(4).tobytes()
    first = api.upload(dataset["id"], "region", data)
    before = api.snapshot()
    again = api.upload(dataset["id"], "region", data)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["created"] is False
    assert api.snapshot() == before


def test_upload_with_a_different_checksum_is_a_conflict(api: Api) -> None:
    dataset = api.create().json()
    api.upload(dataset["id"], "region", random_shares(4, seed=1).tobytes())
    before = api.snapshot()
    response = api.upload(dataset["id"], "region", random_shares(4, seed=2).tobytes())
    assert response.status_code == 409
    assert api.snapshot() == before


def test_empty_dataset(api: Api) -> None:
    dataset_id, _ = api.committed(rows=0)
    response = api.request("GET", f"/v1/datasets/{dataset_id}/columns/views")
    assert response.status_code == 200 and response.content == b""


def test_list_filters_by_tags(api: Api) -> None:
    ids = {}
    for name, tags in {
        "a": {"year": "2023", "region": "eu"},
        "b": {"year": "2024", "region": "eu"},
        "c": {"year": "2025", "region": "us"},
    }.items():
        ids[name], _ = api.committed(name=name, tags=tags)

    def names(*filters: str) -> set[str]:
        response = api.request("GET", "/v1/datasets", params={"tag": list(filters)})
        assert response.status_code == 200, response.text
        return {item["name"] for item in response.json()["items"]}

    assert names() == {"a", "b", "c"}
    assert names("region:eu") == {"a", "b"}
    assert names("year>2023") == {"b", "c"}
    assert names("year<2025", "region:eu") == {"a", "b"}
    assert names("year>2023", "region:eu") == {"b"}
    assert names("year>2023.5", "year<2024.5") == {"b"}
    assert names("owner:alice") == {"a", "b", "c"}
    assert names("region:nowhere") == set()
    assert names("missing:x") == set()


def test_list_pages_and_sorts(api: Api) -> None:
    for index, name in enumerate(["delta", "alpha", "charlie", "bravo", "echo"]):
        api.committed(name=name, rows=4 * (index + 1))
    first = api.request("GET", "/v1/datasets", params={"sort": "name", "limit": 2}).json()
    assert [item["name"] for item in first["items"]] == ["alpha", "bravo"]
    assert first["total"] == 5
    second = api.request(
        "GET", "/v1/datasets", params={"sort": "name", "limit": 2, "offset": 2}
    ).json()
    assert [item["name"] for item in second["items"]] == ["charlie", "delta"]
    by_rows = api.request("GET", "/v1/datasets", params={"sort": "-rows"}).json()
    assert [item["rows"] for item in by_rows["items"]] == [20, 16, 12, 8, 4]
    newest = api.request("GET", "/v1/datasets").json()["items"][0]
    assert newest["name"] == "echo"
    named = api.request("GET", "/v1/datasets", params={"name": "charlie"}).json()
    assert [item["name"] for item in named["items"]] == ["charlie"]


def test_bad_tag_filters_are_400(api: Api) -> None:
    for bad in ["year", "year<abc", "year>nan", "year>inf", "=x", "year<"]:
        response = api.request("GET", "/v1/datasets", params={"tag": bad})
        assert response.status_code == 400, bad
        assert response.json()["error"] == "bad_request"


def test_tags_crud_and_reserved_tags(api: Api) -> None:
    dataset_id, _ = api.committed(tags={"source": "crm"})
    tags_url = f"/v1/datasets/{dataset_id}/tags"
    tags = api.request("GET", tags_url).json()
    assert tags["source"] == "crm" and tags["owner"] == "alice" and "created" in tags
    assert api.request("PUT", f"{tags_url}/quarter", json={"value": "3"}).json()["quarter"] == "3"
    assert api.request("PUT", f"{tags_url}/source", json={"value": "erp"}).json()["source"] == "erp"
    listed = api.request("GET", "/v1/datasets", params={"tag": "quarter>2"}).json()
    assert listed["total"] == 1
    assert api.request("DELETE", f"{tags_url}/quarter").status_code == 204
    assert api.request("DELETE", f"{tags_url}/quarter").status_code == 404
    for reserved in ("owner", "created"):
        before = api.snapshot()
        put = api.request("PUT", f"{tags_url}/{reserved}", json={"value": "mallory"})
        assert put.status_code == 400 and put.json()["error"] == "reserved_tag"
        assert api.request("DELETE", f"{tags_url}/{reserved}").status_code == 400
        assert api.snapshot() == before
    created = api.create(tags={"owner": "mallory"})
    assert created.status_code == 422


def test_created_tag_filters_by_time(api: Api) -> None:
    dataset_id, _ = api.committed()
    created = api.request("GET", f"/v1/datasets/{dataset_id}").json()["created_at"]
    assert created
    assert (
        api.request("GET", "/v1/datasets", params={"tag": "created>1700000000"}).json()["total"]
        == 1
    )
    assert (
        api.request("GET", "/v1/datasets", params={"tag": "created<1700000000"}).json()["total"]
        == 0
    )


def test_delete_removes_metadata_and_blobs(api: Api) -> None:
    keep_id, _ = api.committed(name="keep")
    dataset_id, _ = api.committed(name="drop")
    assert api.request("DELETE", f"/v1/datasets/{dataset_id}").status_code == 204
    assert api.request("GET", f"/v1/datasets/{dataset_id}").status_code == 404
    assert api.request("DELETE", f"/v1/datasets/{dataset_id}").status_code == 404
    assert not list(api.store.blobs.list(f"datasets/{dataset_id}/"))
    assert list(api.store.blobs.list(f"datasets/{keep_id}/"))
    assert [item["id"] for item in api.request("GET", "/v1/datasets").json()["items"]] == [keep_id]


def test_unicode_names_are_kept_normalized(api: Api) -> None:
    decomposed = "Ums\u0061\u0308tze 東京"
    dataset = api.create(name=decomposed).json()
    assert dataset["name"] == "Ums\u00e4tze 東京"
