"""``BlobStore`` contract, checked on the local directory and on a real S3 server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tally.common.blobstore import BlobNotFound, BlobStore, LocalBlobStore, S3BlobStore, check_key


@pytest.fixture(params=["local", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    s3 = request.getfixturevalue("s3_server")
    return S3BlobStore(
        s3.endpoint, s3.access_key, s3.secret_key, s3.shared_bucket, key_prefix=s3.new_prefix()
    )


def test_put_get_exists_delete(blobs: BlobStore) -> None:
    blobs.put("a/b/c.bin", b"hello")
    blobs.put("a/b/d.bin", memoryview(b"world"))
    assert blobs.get("a/b/c.bin") == b"hello"
    assert blobs.get("a/b/d.bin") == b"world"
    assert blobs.exists("a/b/c.bin") and not blobs.exists("a/b/x")
    blobs.put("a/b/c.bin", b"replaced")
    assert blobs.get("a/b/c.bin") == b"replaced"
    blobs.delete("a/b/c.bin")
    blobs.delete("a/b/c.bin")  # idempotent
    assert not blobs.exists("a/b/c.bin")
    with pytest.raises(BlobNotFound):
        blobs.get("a/b/c.bin")
    with pytest.raises(BlobNotFound):
        blobs.stream("nothing/here")


def test_stream_and_ranges(blobs: BlobStore) -> None:
    data = os.urandom(3 * 1024 + 5)
    blobs.put("x", data)
    chunks = list(blobs.stream("x", chunk_size=1024))
    assert b"".join(chunks) == data
    assert all(len(chunk) <= 1024 for chunk in chunks)
    assert blobs.get_range("x", 1000, 100) == data[1000:1100]
    assert blobs.get_range("x", len(data) - 3, 100) == data[-3:]


def test_put_stream(blobs: BlobStore) -> None:
    data = os.urandom(100_000)

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(data), 7_777):
            yield data[start : start + 7_777]

    blobs.put_stream("s/t", pieces(), len(data))
    assert blobs.get("s/t") == data


def test_put_stream_with_the_wrong_length_stores_nothing(blobs: BlobStore) -> None:
    with pytest.raises(ValueError, match="expected"):
        blobs.put_stream("s/short", iter([b"abc"]), 10)
    assert not blobs.exists("s/short")
    assert list(blobs.list("s/")) == []


def test_list_by_prefix(blobs: BlobStore) -> None:
    for key in ("p/1", "p/2", "p/q/3", "pq/4", "z"):
        blobs.put(key, b"")
    assert sorted(blobs.list("p/")) == ["p/1", "p/2", "p/q/3"]
    assert sorted(blobs.list("p")) == ["p/1", "p/2", "p/q/3", "pq/4"]
    assert sorted(blobs.list("")) == ["p/1", "p/2", "p/q/3", "pq/4", "z"]
    blobs.delete_prefix("p/")
    assert sorted(blobs.list("")) == ["pq/4", "z"]


def test_ping(blobs: BlobStore) -> None:
    blobs.ping()


@pytest.mark.parametrize(
    "key", ["", "/abs", "a//b", "../x", "a/../b", "a/./b", "a b", "a\\b", ".hidden", "x" * 201]
)
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        check_key(key)


def test_local_store_cannot_escape_its_root(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "root")
    with pytest.raises(ValueError):
        blobs.put("../outside", b"x")
    assert not (tmp_path / "outside").exists()


def test_local_ping_fails_when_the_directory_is_gone(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "root")
    blobs.root.rmdir()
    with pytest.raises(OSError):
        blobs.ping()


def test_s3_ping_fails_with_wrong_credentials(s3_server: object) -> None:
    server = s3_server
    blobs = S3BlobStore(server.endpoint, server.access_key, "wrong-secret", server.shared_bucket)  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="SignatureDoesNotMatch|Access"):
        blobs.ping()


def test_put_stream_with_too_many_bytes_stores_nothing(blobs: BlobStore) -> None:
    with pytest.raises(ValueError, match="expected"):
        blobs.put_stream("s/long", iter([b"abc", b"def"]), 4)
    assert not blobs.exists("s/long")
