"""S3 object storage through boto3, run in worker threads (platform §16, design §2).

Every object key starts with ``<module>/`` (staged job input is
``<module>/<kind>_jobs/{job_id}.{ext}``); :class:`ObjectStore` refuses any other key. One
botocore client serves the whole store; botocore clients are thread-safe, so each call
runs it in :func:`asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")

_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_NO_BUCKET_CODES = frozenset({"404", "NoSuchBucket", "NotFound"})
_MAX_KEY_BYTES = 1024


class StorageError(Exception):
    """An S3 operation failed; the message is a short reason safe to show operators."""


class ObjectNotFound(StorageError):
    """The object does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} not found")
        self.key = key


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _reason(op: str, exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return f"s3 {op} failed: {_error_code(exc) or 'error'}"
    return f"s3 {op} failed: {type(exc).__name__}"


class ObjectStore:
    """One bucket of one module: put, get, delete, presign and bucket checks."""

    def __init__(
        self,
        endpoint_url: str,
        bucket: str,
        region: str,
        access_key: str,
        secret_key: str,
        *,
        module: str,
        create_bucket: bool = False,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        max_attempts: int = 3,
    ) -> None:
        if not module or "/" in module:
            raise ValueError(f"invalid module {module!r}")
        if not bucket:
            raise ValueError("bucket must not be empty")
        self._module = module
        self._prefix = f"{module}/"
        self._bucket = bucket
        self._region = region or "us-east-1"
        self._create_bucket = create_bucket
        config = Config(
            region_name=self._region,
            signature_version="s3v4",
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            # S3-compatible servers (MinIO, moto) want path-style addressing.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            max_pool_connections=32,
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            region_name=self._region,
        )
        self._client: S3Client = session.client(
            "s3", endpoint_url=endpoint_url or None, config=config
        )
        self._transfer = TransferConfig(use_threads=True, max_concurrency=4)

    @classmethod
    def from_settings(cls, settings: Any, *, create_bucket: bool | None = None) -> ObjectStore:
        """Build from :class:`~scaicommon.settings.CommonSettings` (``s3_*`` fields).

        ``create_bucket`` defaults to ``settings.env == "development"``.
        """
        secret = settings.s3_secret_key
        return cls(
            settings.s3_endpoint_url,
            settings.bucket,
            settings.s3_region,
            settings.s3_access_key,
            secret.get() if hasattr(secret, "get") else str(secret),
            module=settings.MODULE,
            create_bucket=(settings.env == "development")
            if create_bucket is None
            else create_bucket,
        )

    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self._bucket

    @property
    def prefix(self) -> str:
        """The key prefix every object must carry: ``<module>/``."""
        return self._prefix

    def key(self, *parts: str) -> str:
        """Join ``parts`` under the module prefix: ``key("echo_jobs", "job_1.wav")``."""
        return self.check_key(self._prefix + "/".join(p.strip("/") for p in parts))

    def check_key(self, key: str) -> str:
        """Return ``key`` if it is a valid key of this module; raise ``ValueError`` otherwise."""
        rest = key[len(self._prefix) :]
        if (
            not key.startswith(self._prefix)
            or not rest
            or "\x00" in key
            or ".." in rest.split("/")
            or len(key.encode()) > _MAX_KEY_BYTES
        ):
            raise ValueError(f"object key {key!r} must start with {self._prefix!r}")
        return key

    async def _call(self, op: str, fn: Callable[[], T], *, key: str | None = None) -> T:
        try:
            return await asyncio.to_thread(fn)
        except ClientError as exc:
            if key is not None and _error_code(exc) in _MISSING_CODES:
                raise ObjectNotFound(key) from exc
            raise StorageError(_reason(op, exc)) from exc
        except BotoCoreError as exc:
            raise StorageError(_reason(op, exc)) from exc

    async def put(
        self,
        key: str,
        data: bytes | bytearray | memoryview | str | os.PathLike[str],
        content_type: str = "application/octet-stream",
    ) -> None:
        """Store ``data`` (bytes, or the path of a file to upload) under ``key``."""
        self.check_key(key)
        if isinstance(data, bytes | bytearray | memoryview):
            body = bytes(data)
            await self._call(
                "put",
                lambda: self._client.put_object(
                    Bucket=self._bucket, Key=key, Body=body, ContentType=content_type
                ),
            )
            return
        path = str(Path(data))
        await self._call(
            "put",
            lambda: self._client.upload_file(
                path,
                self._bucket,
                key,
                ExtraArgs={"ContentType": content_type},
                Config=self._transfer,
            ),
        )

    async def get(self, key: str) -> bytes:
        """The object's bytes; raises :class:`ObjectNotFound` when it does not exist."""
        self.check_key(key)

        def fetch() -> bytes:
            response = self._client.get_object(Bucket=self._bucket, Key=key)
            with response["Body"] as body:
                return body.read()

        return await self._call("get", fetch, key=key)

    async def download_to(self, key: str, path: str | os.PathLike[str]) -> None:
        """Download the object to ``path``; raises :class:`ObjectNotFound` when missing."""
        self.check_key(key)
        target = str(Path(path))
        await self._call(
            "download",
            lambda: self._client.download_file(self._bucket, key, target, Config=self._transfer),
            key=key,
        )

    async def delete(self, key: str) -> None:
        """Delete the object (no error when it is already gone)."""
        self.check_key(key)
        await self._call("delete", lambda: self._client.delete_object(Bucket=self._bucket, Key=key))

    async def list_keys(self, prefix: str) -> list[tuple[str, datetime]]:
        """Every ``(key, last_modified)`` under ``prefix`` (a key prefix of this module)."""
        self.check_key(prefix)

        def walk() -> list[tuple[str, datetime]]:
            found: list[tuple[str, datetime]] = []
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    found.append((str(item["Key"]), item["LastModified"]))
            return found

        return await self._call("list", walk)

    async def exists(self, key: str) -> bool:
        """Whether the object exists."""
        self.check_key(key)
        try:
            await self._call(
                "head", lambda: self._client.head_object(Bucket=self._bucket, Key=key), key=key
            )
        except ObjectNotFound:
            return False
        return True

    async def presign_get(self, key: str, expires_s: int = 3600) -> str:
        """A presigned GET URL for the object, valid ``expires_s`` seconds."""
        self.check_key(key)
        return await self._call(
            "presign",
            lambda: self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket, "Key": key},
                ExpiresIn=int(expires_s),
            ),
        )

    async def head_bucket(self) -> None:
        """HeadBucket on the configured bucket (readiness); raises :class:`StorageError`."""
        try:
            await asyncio.to_thread(lambda: self._client.head_bucket(Bucket=self._bucket))
        except ClientError as exc:
            code = _error_code(exc)
            if code in _NO_BUCKET_CODES:
                raise StorageError(f"bucket {self._bucket!r} does not exist") from exc
            if code in ("403", "AccessDenied"):
                raise StorageError(f"access to bucket {self._bucket!r} denied") from exc
            raise StorageError(_reason("head_bucket", exc)) from exc
        except BotoCoreError as exc:
            raise StorageError(_reason("head_bucket", exc)) from exc

    async def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (development auto-create)."""
        try:
            await self.head_bucket()
            return
        except StorageError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, ClientError) and _error_code(cause) in _NO_BUCKET_CODES):
                raise

        def create() -> None:
            try:
                if self._region == "us-east-1":
                    self._client.create_bucket(Bucket=self._bucket)
                else:
                    # Any: the stubs type the constraint as a closed list of AWS regions.
                    location: Any = {"LocationConstraint": self._region}
                    self._client.create_bucket(
                        Bucket=self._bucket, CreateBucketConfiguration=location
                    )
            except ClientError as exc:
                if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

        await self._call("create_bucket", create)

    async def start(self) -> None:
        """Service start-up hook: create the bucket when ``create_bucket`` was set."""
        if self._create_bucket:
            await self.ensure_bucket()

    def close(self) -> None:
        """Close the client's connection pool."""
        self._client.close()
