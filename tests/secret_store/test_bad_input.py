"""Bad input: each case is a clear 4xx in the JSON error shape, and nothing is stored."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.secret_store.conftest import Api, random_shares, sha256


def expect(response: Any, status: int, error: str | None = None, text: str = "") -> None:
    """The response is ``status`` with the shared error body (and ``text`` in the detail)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["detail"]
    if error is not None:
        assert body["error"] == error
    assert text in body["detail"]


@pytest.fixture
def pending(api: Api) -> dict[str, Any]:
    """A pending 4-row dataset with columns region and views."""
    return dict(api.create().json())


def unchanged(api: Api, action: Callable[[], Any]) -> Any:
    before = api.snapshot()
    response = action()
    assert api.snapshot() == before
    return response


@pytest.mark.parametrize("length", [0, 8, 24, 40, 4096])
def test_wrong_byte_length(api: Api, pending: dict[str, Any], length: int) -> None:
    data = b"\x01" * length
    response = unchanged(api, lambda: api.upload(pending["id"], "views", data))
    expect(response, 400, "wrong_length", "expected 32 bytes")


@pytest.mark.parametrize("length", [8, 40])
def test_wrong_byte_length_without_content_length(
    api: Api, pending: dict[str, Any], length: int
) -> None:
    data = b"\x02" * length

    def chunked() -> Iterator[bytes]:
        yield data[: length // 2]
        yield data[length // 2 :]

    response = unchanged(
        api,
        lambda: api.request(
            "PUT",
            f"/v1/datasets/{pending['id']}/columns/views",
            content=chunked(),
            headers={"Content-Type": "application/octet-stream", "Tally-Sha256": sha256(data)},
        ),
    )
    expect(response, 400, "wrong_length")


def test_chunked_upload_of_the_right_length_is_accepted(api: Api, pending: dict[str, Any]) -> None:
    data = random_shares(4).tobytes()
    response = api.request(
        "PUT",
        f"/v1/datasets/{pending['id']}/columns/views",
        content=iter([data[:5], data[5:]]),
        headers={"Content-Type": "application/octet-stream", "Tally-Sha256": sha256(data)},
    )
    assert response.status_code == 201, response.text


def test_unknown_column(api: Api, pending: dict[str, Any]) -> None:
    data = random_shares(4).tobytes()
    response = unchanged(api, lambda: api.upload(pending["id"], "clicks", data))
    expect(response, 404, "unknown_column", "no column 'clicks'")
    dataset_id, _ = api.committed()
    expect(api.request("GET", f"/v1/datasets/{dataset_id}/columns/clicks"), 404, "unknown_column")


@pytest.mark.parametrize(
    "column",
    [
        {"name": "a", "kind": "float"},
        {"name": "a", "kind": "fixed(99)"},
        {"name": "a", "kind": "int", "frac_bits": 8},
        {"name": "a", "kind": "key", "bits": 64},
        {"name": "a", "kind": "bool", "bits": 5},
        {"name": "a", "kind": "fixed(8)", "frac_bits": 9},
        {"name": "a", "kind": "int", "unit": "eur"},
        {"name": "a"},
        {"name": "a", "kind": 3},
    ],
)
def test_wrong_kind(api: Api, column: dict[str, Any]) -> None:
    response = unchanged(api, lambda: api.create(columns=[column]))
    expect(response, 422, "validation_error")


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'{"name": "x"}',
        b'{"name": "x", "columns": [], "rows": 1}',
        b'{"name": "x", "columns": [{"name": "a", "kind": "int"}], "rows": -1}',
        b'{"name": "x", "columns": [{"name": "a", "kind": "int"}], "rows": "many"}',
        b'{"name": "x", "columns": [{"name": "a", "kind": "int"}, {"name": "a", "kind": "int"}],'
        b' "rows": 1}',
        b'{"name": "x", "columns": [{"name": "a", "kind": "int"}], "rows": 5, "partitions": 2}',
        b'{"name": "x", "columns": [{"name": "a", "kind": "int"}], "rows": 1, "extra": true}',
        b'{"name": "x", "columns": [{"name": "a", "kind": "int"}], "rows": 1, "id": "nope"}',
    ],
)
def test_malformed_json(api: Api, body: bytes) -> None:
    response = unchanged(
        api,
        lambda: api.request(
            "POST", "/v1/datasets", content=body, headers={"Content-Type": "application/json"}
        ),
    )
    expect(response, 422, "validation_error")


def test_oversized_json_body(make_api: Callable[..., Api]) -> None:
    api = make_api(max_json_bytes=2048)
    body = {"name": "x", "columns": [{"name": "a", "kind": "int"}], "rows": 1}
    body["tags"] = {"pad": "y" * 250, **{f"k{i}": "v" * 200 for i in range(20)}}
    expect(unchanged(api, lambda: api.create(**body)), 413, "payload_too_large", "2048")


def test_oversized_upload(make_api: Callable[..., Api]) -> None:
    api = make_api(max_upload_bytes=64)
    dataset = api.create(rows=8).json()
    big = b"\x00" * 65
    response = unchanged(api, lambda: api.upload(dataset["id"], "views", big))
    expect(response, 413, "payload_too_large", "64")
    chunked = unchanged(
        api,
        lambda: api.request(
            "PUT",
            f"/v1/datasets/{dataset['id']}/columns/views",
            content=iter([big[:40], big[40:]]),
            headers={"Content-Type": "application/octet-stream", "Tally-Sha256": sha256(big)},
        ),
    )
    assert chunked.status_code in (400, 413)
    too_big = unchanged(api, lambda: api.create(rows=9))
    expect(too_big, 422, "validation_error", "partitions")


@pytest.mark.parametrize(
    "name",
    [
        "a/b",
        "../../etc/passwd",
        "a\\b",
        "x" * 201,
        "",
        " leading",
        "trailing ",
        "nul\x00byte",
        "line\nbreak",
        "tab\there",
        "zero\u200bwidth",
        "bidi\u202eoverride",
    ],
)
def test_odd_dataset_names(api: Api, name: str) -> None:
    expect(unchanged(api, lambda: api.create(name=name)), 422, "validation_error")


@pytest.mark.parametrize("name", ["a/b", "ä", "1st", "x" * 65, "", "a-b", "a.b"])
def test_odd_column_names(api: Api, name: str) -> None:
    columns = [{"name": name, "kind": "int"}]
    expect(unchanged(api, lambda: api.create(columns=columns)), 422, "validation_error")


@pytest.mark.parametrize("key", ["a%2Fb", "%2E%2E", "x" * 65, "%E2%80%AE"])
def test_odd_tag_keys(api: Api, key: str) -> None:
    dataset_id, _ = api.committed()
    response = unchanged(
        api,
        lambda: api.request("PUT", f"/v1/datasets/{dataset_id}/tags/{key}", json={"value": "v"}),
    )
    assert response.status_code in (404, 422)
    assert set(response.json()) == {"error", "detail"}


def test_long_and_unicode_names_within_limits_are_fine(api: Api) -> None:
    for name in ["x" * 200, "données 2024", "Продажи", "売上 Q3", "emoji 📈"]:
        assert api.create(name=name).status_code == 201, name


def test_commit_twice(api: Api) -> None:
    dataset_id, _ = api.committed()
    expect(unchanged(api, lambda: api.commit(dataset_id)), 409, "conflict", "already committed")


def test_upload_after_commit(api: Api) -> None:
    dataset_id, columns = api.committed()
    same = columns["views"].tobytes()
    for data in (same, random_shares(4, seed=9).tobytes()):
        response = unchanged(api, lambda data=data: api.upload(dataset_id, "views", data))
        expect(response, 409, "conflict", "committed")


def test_checksum_header_is_required_and_checked(api: Api, pending: dict[str, Any]) -> None:
    data = random_shares(4).tobytes()
    missing = unchanged(api, lambda: api.upload(pending["id"], "views", data, checksum=""))
    expect(missing, 400, "bad_request", "Tally-Sha256")
    malformed = unchanged(api, lambda: api.upload(pending["id"], "views", data, checksum="xyz"))
    expect(malformed, 400, "bad_request")
    wrong = unchanged(api, lambda: api.upload(pending["id"], "views", data, checksum="0" * 64))
    expect(wrong, 400, "checksum_mismatch")


def test_wrong_content_type(api: Api, pending: dict[str, Any]) -> None:
    data = random_shares(4).tobytes()
    for content_type in ("application/json", "text/plain"):
        response = unchanged(
            api,
            lambda content_type=content_type: api.upload(
                pending["id"], "views", data, **{"Content-Type": content_type}
            ),
        )
        expect(response, 415, "unsupported_media_type")


def test_partition_out_of_range(api: Api, pending: dict[str, Any]) -> None:
    data = random_shares(4).tobytes()
    expect(unchanged(api, lambda: api.upload(pending["id"], "views", data, partition=1)), 400)
    expect(unchanged(api, lambda: api.upload(pending["id"], "views", data, partition=-1)), 422)


def test_malformed_dataset_id(api: Api) -> None:
    for url in ("/v1/datasets/not-a-uuid", "/v1/datasets/1/columns/x"):
        expect(api.request("GET", url), 422, "validation_error")


def test_bad_paging_parameters(api: Api) -> None:
    for params in ({"limit": 0}, {"limit": 100000}, {"offset": -1}, {"sort": "size"}):
        expect(api.request("GET", "/v1/datasets", params=params), 422, "validation_error")
