"""The ScaiDrive client against real dev ScaiKey and dev ScaiDrive processes (platform §13.3)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from scaicommon.scaidrive import (
    DownloadTooLarge,
    DriveConflict,
    DriveForbidden,
    DriveNotFound,
    DriveQuotaExceeded,
    DriveTooLarge,
    DriveUnavailable,
    ScaiDriveClient,
    error_for,
)
from scaicommon.scaikey import SCAIDRIVE_SCOPES, PeerError, TokenExchanger
from scaicommon.testing import DevServer, free_port, start_scaidrive, start_scaikey
from scaidevstack.scaidrive.store import Actor, DriveStore
from scaidevstack.scaikey import KeyStore

MAX_FILE_BYTES = 50_000
QUOTA_BYTES = 120_000


@dataclass
class Drive:
    scaikey: DevServer
    scaidrive: DevServer
    keys: KeyStore
    store: DriveStore


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drive]:
    key_state = tmp_path_factory.mktemp("scaikey")
    data_dir: Path = tmp_path_factory.mktemp("scaidrive")
    scaikey = start_scaikey(key_state)
    try:
        scaidrive = start_scaidrive(
            data_dir, scaikey.base_url, extra_args=["--max-file-bytes", str(MAX_FILE_BYTES)]
        )
        try:
            yield Drive(scaikey, scaidrive, KeyStore(key_state), DriveStore(data_dir))
        finally:
            scaidrive.stop()
    finally:
        scaikey.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@dataclass
class Tenant:
    """A fresh tenant with one share: usr_owner owns it, usr_reader reads, usr_contrib writes."""

    id: str
    share: dict[str, Any]


@pytest.fixture
def tenant(drive: Drive) -> Tenant:
    tenant_id = "tnt_" + secrets.token_hex(4)
    share = drive.store.create_share(
        tenant_id=tenant_id,
        name="Audio",
        members={"usr_owner": "owner", "usr_reader": "reader", "usr_contrib": "contributor"},
        quota_bytes=QUOTA_BYTES,
        share_type="project",
    )
    return Tenant(tenant_id, share)


async def client_for(
    drive: Drive,
    http: httpx.AsyncClient,
    tenant: Tenant,
    user: str = "usr_owner",
    scope: str = "files:read files:write",
) -> ScaiDriveClient:
    """A client holding a token exchanged exactly as the services do it."""
    subject = drive.keys.mint(
        tenant=tenant.id, user=user, scope=scope, issuer_base=drive.scaikey.base_url
    )
    exchanger = TokenExchanger(
        token_url=f"{drive.scaikey.base_url}/api/v1/platform/oauth/token",
        client_id="scaispeak",
        client_secret="scaispeak-dev-secret",
        http=http,
    )
    token = await exchanger.exchange_token(
        subject, audience="scaidrive", scopes=scope.split() or SCAIDRIVE_SCOPES
    )
    return ScaiDriveClient(drive.scaidrive.base_url, token.access_token, http=http, timeout_s=10)


async def test_my_shares_with_roles(drive: Drive, http: httpx.AsyncClient, tenant: Tenant) -> None:
    other = drive.store.create_share(
        tenant_id=tenant.id, name="Other", members={"usr_reader": "owner"}
    )
    owner = await (await client_for(drive, http, tenant)).list_my_shares()
    assert [(s.id, s.name, s.type, s.role, s.writable) for s in owner] == [
        (tenant.share["id"], "Audio", "project", "owner", True)
    ]
    assert owner[0].quota_bytes == QUOTA_BYTES and owner[0].used_bytes == 0
    reader = await (await client_for(drive, http, tenant, "usr_reader")).list_my_shares()
    assert {(s.id, s.role, s.writable) for s in reader} == {
        (tenant.share["id"], "reader", False),
        (other["id"], "owner", True),
    }


async def test_upload_list_download_and_delete(
    drive: Drive, http: httpx.AsyncClient, tenant: Tenant
) -> None:
    client = await client_for(drive, http, tenant)
    share_id = tenant.share["id"]
    folder = drive.store.create_folder(Actor(tenant.id, "usr_owner"), share_id, None, "Podcasts")
    data = b"ID3" + secrets.token_bytes(4000)
    saved = await client.upload(share_id, folder["id"], "episode 1.mp3", data, "audio/mpeg")
    assert saved.id.startswith("fil_")
    assert (saved.share_id, saved.folder_id, saved.name) == (
        share_id,
        folder["id"],
        "episode 1.mp3",
    )
    assert saved.path == "/Podcasts/episode 1.mp3"
    assert saved.size == len(data) and saved.mime_type == "audio/mpeg"
    assert saved.checksum_sha256 == hashlib.sha256(data).hexdigest()
    assert saved.version == 1

    root = await client.list_children(share_id)
    assert [(i.name, i.type) for i in root.items] == [("Podcasts", "folder")]
    assert root.path == "/" and root.total == 1
    inside = await client.list_children(share_id, folder["id"])
    assert [(i.id, i.type, i.size) for i in inside.items] == [(saved.id, "file", len(data))]
    assert inside.path == "/Podcasts"

    assert await client.find_child(share_id, folder["id"], "episode 1.mp3") == inside.items[0]
    assert await client.find_child(share_id, folder["id"], "Episode 1.mp3") is None

    info = await client.file_info(saved.id)
    assert info.id == saved.id and info.size == len(data)
    download = await client.download(saved.id)
    assert download.data == data and download.name == "episode 1.mp3"
    assert download.content_type == "audio/mpeg"
    with pytest.raises(DownloadTooLarge):
        await client.download(saved.id, max_bytes=len(data) - 1)

    await client.delete_file(saved.id)
    with pytest.raises(DriveNotFound) as gone:
        await client.file_info(saved.id)
    assert gone.value.status == 404
    with pytest.raises(DriveNotFound):
        await client.delete_file(saved.id)
    await client.delete_file(saved.id, missing_ok=True)


async def test_root_upload_leaves_folder_id_out(
    drive: Drive, http: httpx.AsyncClient, tenant: Tenant
) -> None:
    client = await client_for(drive, http, tenant)
    share_id = tenant.share["id"]
    for folder_id in (None, "root"):
        name = f"take-{folder_id}.wav"
        saved = await client.upload(share_id, folder_id, name, b"RIFF....", "audio/wav")
        assert saved.folder_id is None and saved.path == f"/{name}"


async def test_conflict_and_overwrite(
    drive: Drive, http: httpx.AsyncClient, tenant: Tenant
) -> None:
    client = await client_for(drive, http, tenant)
    share_id = tenant.share["id"]
    first = await client.upload(share_id, None, "chapter.mp3", b"first", "audio/mpeg")
    with pytest.raises(DriveConflict) as conflict:
        await client.upload(share_id, None, "chapter.mp3", b"second", "audio/mpeg")
    assert conflict.value.status == 409 and conflict.value.code == "NAME_CONFLICT"

    replaced = await client.upload(
        share_id, None, "chapter.mp3", b"second!", "audio/mpeg", overwrite=True
    )
    assert replaced.id != first.id and replaced.size == 7
    with pytest.raises(DriveNotFound):
        await client.file_info(first.id)
    assert (await client.download(replaced.id)).data == b"second!"
    names = [i.name for i in (await client.list_children(share_id)).items]
    assert names.count("chapter.mp3") == 1

    drive.store.create_folder(Actor(tenant.id, "usr_owner"), share_id, None, "Folder.mp3")
    with pytest.raises(DriveConflict):
        await client.upload(share_id, None, "Folder.mp3", b"x", "audio/mpeg", overwrite=True)


async def test_error_mapping_against_the_dev_server(
    drive: Drive, http: httpx.AsyncClient, tenant: Tenant
) -> None:
    share_id = tenant.share["id"]
    owner = await client_for(drive, http, tenant)
    reader = await client_for(drive, http, tenant, "usr_reader")

    with pytest.raises(DriveForbidden) as forbidden:
        await reader.upload(share_id, None, "r.mp3", b"x", "audio/mpeg")
    assert forbidden.value.status == 403 and "reader" in forbidden.value.message
    with pytest.raises(DriveNotFound):
        await owner.list_children("shr_" + "0" * 20)
    with pytest.raises(DriveNotFound):
        await owner.list_children(share_id, "fld_" + "0" * 20)
    with pytest.raises(DriveNotFound):
        await owner.list_children(share_id, "..")
    with pytest.raises(DriveTooLarge) as too_large:
        await owner.upload(share_id, None, "big.mp3", b"x" * (MAX_FILE_BYTES + 1), "audio/mpeg")
    assert too_large.value.status == 413 and too_large.value.code == "PAYLOAD_TOO_LARGE"
    for n in range(2):
        await owner.upload(share_id, None, f"fill{n}.bin", b"x" * 45_000, "audio/mpeg")
    with pytest.raises(DriveQuotaExceeded) as quota:
        await owner.upload(share_id, None, "over.bin", b"x" * 45_000, "audio/mpeg")
    assert quota.value.status == 507 and quota.value.code == "QUOTA_EXCEEDED"

    # A body-less write: the dev server refuses a bad scope before reading a request body, and
    # closing with the body unread resets the connection (the 403 can be lost on an upload).
    kept = await owner.upload(share_id, None, "kept.mp3", b"x", "audio/mpeg")
    read_only = await client_for(drive, http, tenant, scope="files:read")
    assert await read_only.list_my_shares()
    with pytest.raises(DriveForbidden) as scope:
        await read_only.delete_file(kept.id)
    assert scope.value.status == 403 and "files:write" in scope.value.message

    stranger = ScaiDriveClient(drive.scaidrive.base_url, "not-a-jwt", http=http)
    with pytest.raises(DriveForbidden) as unauthenticated:
        await stranger.list_my_shares()
    assert unauthenticated.value.status == 401


async def test_listing_pages_through_every_child(
    drive: Drive, http: httpx.AsyncClient, tenant: Tenant
) -> None:
    share_id = tenant.share["id"]
    actor = Actor(tenant.id, "usr_owner")
    names = [f"f{n:03d}" for n in range(230)]
    for name in names:
        drive.store.create_folder(actor, share_id, None, name)
    client = await client_for(drive, http, tenant)
    listing = await client.list_children(share_id)
    assert [i.name for i in listing.items] == names
    assert listing.total == 230
    assert (await client.find_child(share_id, "root", "f229")) is not None


async def test_unreachable_drive(http: httpx.AsyncClient) -> None:
    client = ScaiDriveClient(f"http://127.0.0.1:{free_port()}", "t", http=http, timeout_s=2)
    with pytest.raises(DriveUnavailable) as caught:
        await client.list_my_shares()
    assert caught.value.status is None
    with pytest.raises(DriveUnavailable):
        await client.upload("shr_x", None, "a.mp3", b"x", "audio/mpeg")


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (401, None, DriveForbidden),
        (403, None, DriveForbidden),
        (404, None, DriveNotFound),
        (409, None, DriveConflict),
        (400, "NAME_CONFLICT", DriveConflict),
        (413, None, DriveTooLarge),
        (400, "PAYLOAD_TOO_LARGE", DriveTooLarge),
        (507, None, DriveQuotaExceeded),
        (400, "QUOTA_EXCEEDED", DriveQuotaExceeded),
        (500, None, DriveUnavailable),
        (422, None, DriveUnavailable),
    ],
)
def test_error_table(status: int, code: str | None, kind: type[Exception]) -> None:
    error = error_for(PeerError(status, code, "m"))
    assert type(error) is kind
    assert error.status == status and error.code == code
