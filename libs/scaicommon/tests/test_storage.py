"""ObjectStore against an S3-compatible endpoint (MinIO or moto_server)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from scaicommon.storage import ObjectNotFound, ObjectStore, StorageError
from scaicommon.testing.processes import free_port
from scaicommon.testing.services import S3Endpoint

MODULE = "scaiecho"


def make_store(s3: S3Endpoint, bucket: str, *, create_bucket: bool = False) -> ObjectStore:
    return ObjectStore(
        s3.url,
        bucket,
        s3.region,
        s3.access_key,
        s3.secret_key,
        module=MODULE,
        create_bucket=create_bucket,
    )


@pytest.fixture
async def store(s3_endpoint: S3Endpoint) -> AsyncIterator[ObjectStore]:
    objects = make_store(s3_endpoint, "t-" + secrets.token_hex(6))
    await objects.ensure_bucket()
    try:
        yield objects
    finally:
        objects.close()


async def test_put_get_exists_delete(store: ObjectStore) -> None:
    key = store.key("transcribe_jobs", "job_1.wav")
    assert key == "scaiecho/transcribe_jobs/job_1.wav"
    assert not await store.exists(key)
    await store.put(key, b"RIFF-data", "audio/wav")
    assert await store.exists(key)
    assert await store.get(key) == b"RIFF-data"
    await store.put(key, b"replaced", "audio/wav")
    assert await store.get(key) == b"replaced"
    await store.delete(key)
    assert not await store.exists(key)
    await store.delete(key)  # already gone: no error


async def test_missing_object_is_object_not_found(store: ObjectStore, tmp_path: Path) -> None:
    key = "scaiecho/transcribe_jobs/missing.wav"
    with pytest.raises(ObjectNotFound) as info:
        await store.get(key)
    assert info.value.key == key
    assert isinstance(info.value, StorageError)
    with pytest.raises(ObjectNotFound):
        await store.download_to(key, tmp_path / "out.wav")
    assert not (tmp_path / "out.wav").exists()


async def test_file_upload_and_download(store: ObjectStore, tmp_path: Path) -> None:
    payload = secrets.token_bytes(256 * 1024)
    source = tmp_path / "in.bin"
    source.write_bytes(payload)
    key = "scaiecho/speakers/spkr_1/ref.bin"
    await store.put(key, source, "application/octet-stream")
    await store.put("scaiecho/speakers/spkr_1/ref2.bin", str(source))
    target = tmp_path / "out.bin"
    await store.download_to(key, target)
    assert target.read_bytes() == payload
    assert await store.get("scaiecho/speakers/spkr_1/ref2.bin") == payload


async def test_presigned_get_serves_the_object(store: ObjectStore) -> None:
    key = "scaiecho/exports/job_2.txt"
    await store.put(key, "hello ✓".encode(), "text/plain; charset=utf-8")
    url = await store.presign_get(key, expires_s=60)
    assert "X-Amz-Signature=" in url
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == "hello ✓".encode()
    assert response.headers["content-type"].startswith("text/plain")


@pytest.fixture(scope="module")
def offline_store() -> Iterator[ObjectStore]:
    """A store that is never called over the network (key checks fail first)."""
    objects = ObjectStore("http://127.0.0.1:9", "b", "us-east-1", "k", "s", module=MODULE)
    try:
        yield objects
    finally:
        objects.close()


@pytest.mark.parametrize(
    "key",
    [
        "scaispeak/voices/v.wav",
        "scaiecho",
        "scaiecho/",
        "/scaiecho/x",
        "scaiechox/y",
        "scaiecho/../scaispeak/x",
        "x/scaiecho/y",
    ],
)
async def test_keys_outside_the_module_prefix_are_refused(
    offline_store: ObjectStore, key: str
) -> None:
    store = offline_store
    with pytest.raises(ValueError):
        await store.put(key, b"x")
    for call in (store.get, store.exists, store.delete, store.presign_get):
        with pytest.raises(ValueError):
            await call(key)
    with pytest.raises(ValueError):
        await store.download_to(key, Path("never-written"))


async def test_head_bucket_and_ensure_bucket(s3_endpoint: S3Endpoint) -> None:
    bucket = "t-" + secrets.token_hex(6)
    objects = make_store(s3_endpoint, bucket)
    try:
        with pytest.raises(StorageError) as info:
            await objects.head_bucket()
        assert str(info.value) == f"bucket {bucket!r} does not exist"
        await objects.start()  # create_bucket=False: start-up creates nothing
        with pytest.raises(StorageError):
            await objects.head_bucket()
        await objects.ensure_bucket()
        await objects.head_bucket()
        await objects.ensure_bucket()  # idempotent
    finally:
        objects.close()

    dev = make_store(s3_endpoint, "t-" + secrets.token_hex(6), create_bucket=True)
    try:
        await dev.start()
        await dev.head_bucket()
    finally:
        dev.close()


async def test_unreachable_endpoint_raises_storage_error() -> None:
    objects = ObjectStore(
        f"http://127.0.0.1:{free_port()}",
        "scaiecho",
        "us-east-1",
        "k",
        "s",
        module=MODULE,
        connect_timeout_s=0.5,
        max_attempts=1,
    )
    try:
        with pytest.raises(StorageError) as info:
            await objects.head_bucket()
        assert str(info.value).startswith("s3 head_bucket failed")
        with pytest.raises(StorageError):
            await objects.get("scaiecho/a")
    finally:
        objects.close()


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        ObjectStore("", "", "us-east-1", "", "", module=MODULE)
    with pytest.raises(ValueError):
        ObjectStore("", "b", "us-east-1", "", "", module="a/b")
