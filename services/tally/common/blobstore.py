"""Blob storage for share columns, checkpoints and tuple chunks.

Two implementations behind one interface:

* ``LocalBlobStore``: files under a root directory; ``put`` writes a temporary file,
  fsyncs it and renames it into place, so a reader never sees a half-written blob.
* ``S3BlobStore``: any S3-compatible server through the ``minio`` SDK; S3 ``PUT`` is
  atomic per object.

Keys are ``/``-separated relative paths made of ``[A-Za-z0-9._-]`` segments; anything
else (``..``, absolute paths, empty segments) raises ``ValueError`` so a key can never
escape the store's root.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from pydantic import SecretStr

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")


class BlobNotFound(KeyError):
    """The key names no blob."""


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative blob key, else raise ``ValueError``."""
    segments = key.split("/")
    if not key or any(not _SEGMENT.match(segment) for segment in segments):
        raise ValueError(f"invalid blob key {key!r}: use '/'-separated [A-Za-z0-9._-] segments")
    return key


def _check_prefix(prefix: str) -> str:
    if prefix == "":
        return prefix
    check_key(prefix.rstrip("/"))
    return prefix


class BlobStore(ABC):
    """Where bytes live; metadata (what a blob means) lives in SQL."""

    @abstractmethod
    def put(self, key: str, data: bytes | memoryview) -> None:
        """Store ``data`` under ``key`` atomically, replacing any previous blob."""

    def put_stream(self, key: str, chunks: Iterable[bytes | memoryview], length: int) -> None:
        """Store ``length`` bytes arriving as ``chunks`` atomically.

        The default buffers in memory; implementations override it to stream.
        """
        buffer = bytearray()
        for chunk in chunks:
            buffer += chunk
        if len(buffer) != length:
            raise ValueError(f"expected {length} bytes, got {len(buffer)}")
        self.put(key, memoryview(buffer))

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole blob; ``BlobNotFound`` when absent."""

    @abstractmethod
    def stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The blob in chunks of at most ``chunk_size`` bytes; ``BlobNotFound`` when absent."""

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer at the end of the blob)."""
        return self.get(key)[offset : offset + length]

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the blob; deleting an absent key is not an error."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a blob is stored under ``key``."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Keys starting with ``prefix`` (recursively), in no guaranteed order."""

    @abstractmethod
    def ping(self) -> None:
        """Raise if the store is unreachable or unusable."""

    def delete_prefix(self, prefix: str) -> None:
        """Remove every blob whose key starts with ``prefix``."""
        for key in list(self.list(prefix)):
            self.delete(key)


class LocalBlobStore(BlobStore):
    """Blobs as files under ``root``; writes go to a temporary file then ``os.replace``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _write(self, key: str, write: Any) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def put(self, key: str, data: bytes | memoryview) -> None:
        self._write(key, lambda handle: handle.write(data))

    def put_stream(self, key: str, chunks: Iterable[bytes | memoryview], length: int) -> None:
        def write(handle: BinaryIO) -> None:
            written = 0
            for chunk in chunks:
                written += handle.write(chunk)
            if written != length:
                raise ValueError(f"expected {length} bytes, got {written}")

        self._write(key, write)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFound(key) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with self._path(key).open("rb") as handle:
                handle.seek(offset)
                return handle.read(length)
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFound(key) from None

    def stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFound(key) from None
        return _iter_file(handle, chunk_size)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        _check_prefix(prefix)
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith(".tmp-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def ping(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            raise OSError(f"blob directory {self.root} is missing or not writable")


def _iter_file(handle: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(chunk_size):
            yield chunk


class _ChunkReader(io.RawIOBase):
    """A file-like view of an iterator of byte chunks, for SDKs that want ``read(n)``."""

    def __init__(self, chunks: Iterable[bytes | memoryview]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks)).cast("B")
            except StopIteration:
                return 0
        size = min(len(target), len(self._pending))
        target[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        self.count += size
        return size


class S3BlobStore(BlobStore):
    """Blobs as objects in one bucket of an S3-compatible server (``minio`` SDK).

    The bucket is created on first use when missing. ``key_prefix`` (e.g. ``party-0/``)
    lets several stores share a bucket. ``part_size`` sets the multipart upload part
    size of streamed writes (S3 requires at least 5 MiB).
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        *,
        region: str | None = None,
        key_prefix: str = "",
        part_size: int = 16 << 20,
    ) -> None:
        from minio import Minio  # imported here: only S3 deployments need the SDK

        if key_prefix and not key_prefix.endswith("/"):
            raise ValueError("key_prefix must end with '/'")
        self.key_prefix = _check_prefix(key_prefix)
        self.bucket = bucket
        self.part_size = part_size
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
        )
        self._bucket_ready = False

    def _object(self, key: str) -> str:
        return self.key_prefix + check_key(key)

    def _ensure_bucket(self) -> None:
        if not self._bucket_ready:
            if not self._client.bucket_exists(self.bucket):
                from minio.error import S3Error

                try:
                    self._client.make_bucket(self.bucket)
                except S3Error as error:  # a concurrent creator won the race
                    if error.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            self._bucket_ready = True

    def put(self, key: str, data: bytes | memoryview) -> None:
        self._ensure_bucket()
        view = memoryview(data).cast("B")
        self._client.put_object(
            self.bucket,
            self._object(key),
            cast(BinaryIO, _ChunkReader([view])),
            length=len(view),
            content_type="application/octet-stream",
        )

    def put_stream(self, key: str, chunks: Iterable[bytes | memoryview], length: int) -> None:
        self._ensure_bucket()
        reader = _ChunkReader(chunks)
        try:
            self._client.put_object(
                self.bucket,
                self._object(key),
                cast(BinaryIO, reader),
                length=length,
                part_size=self.part_size if length > self.part_size else 0,
                content_type="application/octet-stream",
            )
        except OSError as error:  # the SDK's "stream having not enough data"
            if reader.count < length:
                raise ValueError(f"expected {length} bytes, got {reader.count}") from error
            raise
        if reader.read(1):  # more than announced: the stored object is wrong
            self.delete(key)
            raise ValueError(f"expected {length} bytes, got more")

    def get(self, key: str) -> bytes:
        return b"".join(self.stream(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        return b"".join(_iter_response(self._get_object(key, offset, length), 1 << 20))

    def stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        return _iter_response(self._get_object(key), chunk_size)

    def _get_object(self, key: str, offset: int = 0, length: int = 0) -> Any:
        self._ensure_bucket()
        from minio.error import S3Error

        try:
            return self._client.get_object(
                self.bucket, self._object(key), offset=offset, length=length
            )
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket"):
                raise BlobNotFound(key) from None
            raise

    def delete(self, key: str) -> None:
        self._ensure_bucket()
        self._client.remove_object(self.bucket, self._object(key))

    def exists(self, key: str) -> bool:
        self._ensure_bucket()
        from minio.error import S3Error

        try:
            self._client.stat_object(self.bucket, self._object(key))
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket", "NotFound"):
                return False
            raise
        return True

    def list(self, prefix: str) -> Iterator[str]:
        self._ensure_bucket()
        for item in self._client.list_objects(
            self.bucket, prefix=self.key_prefix + _check_prefix(prefix) or None, recursive=True
        ):
            if item.object_name is not None:
                yield item.object_name.removeprefix(self.key_prefix)

    def ping(self) -> None:
        self._bucket_ready = False
        self._ensure_bucket()


def _iter_response(response: Any, chunk_size: int) -> Iterator[bytes]:
    try:
        yield from response.stream(chunk_size)
    finally:
        response.close()
        response.release_conn()


class S3Settings(Protocol):
    """The S3 fields every service's settings share (``TALLY_<SERVICE>_S3_*``)."""

    @property
    def s3_endpoint(self) -> str: ...
    @property
    def s3_access_key(self) -> str: ...
    @property
    def s3_secret_key(self) -> SecretStr: ...
    @property
    def s3_bucket(self) -> str: ...
    @property
    def s3_secure(self) -> bool: ...
    @property
    def s3_region(self) -> str | None: ...
    @property
    def s3_prefix(self) -> str: ...


def make_blob_store(settings: S3Settings, local_root: Path) -> BlobStore:
    """S3 when ``settings.s3_endpoint`` is set, else the directory ``local_root``."""
    if settings.s3_endpoint:
        return S3BlobStore(
            settings.s3_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key.get_secret_value(),
            settings.s3_bucket,
            secure=settings.s3_secure,
            region=settings.s3_region,
            key_prefix=settings.s3_prefix,
        )
    return LocalBlobStore(local_root)
