"""Saving to ScaiDrive, the picker and ScaiDrive references (scaispeak.md §9) against the real
dev ScaiKey and dev ScaiDrive."""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scaicommon.errors import ScaiError
from scaicommon.principal import Principal
from scaicommon.scaikey import ExchangedToken, seal_token, unseal_token
from scaicommon.testing import DevServer, S3Endpoint
from scaidevstack.scaidrive.errors import NotFoundError
from scaidevstack.scaidrive.store import Actor, DriveStore
from scaidevstack.scaikey import KeyStore
from scaispeak.deps import deps_of
from scaispeak.services.drive_refs import fetch_reference, resolve_reference
from scaispeak.services.saveto import PreparedSave, SaveTo, SaveToService

from .conftest import SpeakEnv, running_speak

CLIENT_SECRET = "scaispeak-dev-secret"
USER = "usr_a"


def drive_settings(key: DevServer, drive: DevServer, **overrides: Any) -> dict[str, Any]:
    """Settings for ScaiSpeak with ScaiDrive and token exchange configured."""
    values: dict[str, Any] = {
        "scaidrive_url": drive.base_url,
        "scaikey_base_url": key.base_url,
        "scaikey_client_id": "scaispeak",
        "scaikey_client_secret": CLIENT_SECRET,
    }
    values.update(overrides)
    return values


def data_dir_of(server: DevServer) -> Path:
    """The ``--data-dir`` the dev ScaiDrive was started with."""
    args = server.process.args
    return Path(args[args.index("--data-dir") + 1])


@dataclass
class World:
    """ScaiSpeak with ScaiDrive, a fresh tenant and its share (``usr_a`` owns it)."""

    env: SpeakEnv
    keys: KeyStore
    scaikey: DevServer
    store: DriveStore
    tenant: str
    share_id: str

    def jwt(self, *, user: str = USER, scope: str = "files:read files:write", **kw: Any) -> str:
        kw.setdefault("roles", ["tenant_admin"])
        return self.keys.mint(
            tenant=self.tenant, user=user, scope=scope, issuer_base=self.scaikey.base_url, **kw
        )

    async def principal(self, token: str) -> Principal:
        return await self.env.runtime.authenticator.authenticate(token, request_id="req_test")

    @property
    def actor(self) -> Actor:
        return Actor(self.tenant, USER)

    def share(self, name: str, members: dict[str, str]) -> str:
        created = self.store.create_share(tenant_id=self.tenant, name=name, members=members)
        return str(created["id"])

    def content(self, file_id: str) -> bytes:
        _, path = self.store.open_file(self.actor, file_id)
        return path.read_bytes()

    def names(self, folder_id: str | None = None) -> dict[str, str]:
        items, _ = self.store.list_children(self.actor, self.share_id, folder_id)
        return {i["name"]: i["id"] for i in items}


def new_world(
    env: SpeakEnv, scaikey_server: tuple[DevServer, KeyStore], scaidrive_server: DevServer
) -> World:
    store = DriveStore(data_dir_of(scaidrive_server))
    tenant = "tnt_" + secrets.token_hex(5)
    share = store.create_share(
        tenant_id=tenant, name="Marketing", members={USER: "owner"}, share_type="project"
    )
    server, keys = scaikey_server
    return World(env, keys, server, store, tenant, str(share["id"]))


@pytest.fixture
async def world(
    pg_dsn: str,
    redis_url: str,
    s3_endpoint: S3Endpoint,
    scaikey_server: tuple[DevServer, KeyStore],
    scaidrive_server: DevServer,
) -> AsyncIterator[World]:
    settings = drive_settings(scaikey_server[0], scaidrive_server)
    async with running_speak(pg_dsn, redis_url, s3_endpoint, **settings) as env:
        yield new_world(env, scaikey_server, scaidrive_server)


def scai_error(caught: pytest.ExceptionInfo[ScaiError], code: str, status: int) -> ScaiError:
    assert (caught.value.code, caught.value.http_status) == (code, status), caught.value
    return caught.value


# ----- picker routes ------------------------------------------------------------------


async def test_picker_lists_only_writable_shares(world: World) -> None:
    contrib = world.share("Podcasts", {"usr_boss": "owner", USER: "contributor"})
    world.share("Archive", {"usr_boss": "owner", USER: "reader"})
    world.share("Private", {"usr_boss": "owner"})
    async with world.env.client(world.jwt()) as client:
        answer = await client.get("/scaidrive/shares")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "ok"
    assert body["data"]["items"] == [
        {"share_id": world.share_id, "name": "Marketing", "type": "project", "role": "owner"},
        {"share_id": contrib, "name": "Podcasts", "type": "team", "role": "contributor"},
    ]
    assert body["pagination"] == {"has_more": False, "next_cursor": None}


async def test_picker_lists_sub_folders(world: World) -> None:
    audio = world.store.create_folder(world.actor, world.share_id, None, "Audio")
    podcasts = world.store.create_folder(world.actor, world.share_id, audio["id"], "Podcasts")
    world.store.add_file(world.actor, world.share_id, None, "notes.txt", b"x", "text/plain")
    base = f"/scaidrive/shares/{world.share_id}/folders"
    async with world.env.client(world.jwt()) as client:
        root = await client.get(base)
        inner = await client.get(base, params={"parent_id": audio["id"]})
        no_share = await client.get("/scaidrive/shares/shr_00000000000000000000/folders")
        no_folder = await client.get(base, params={"parent_id": "fld_00000000000000000000"})
        private = world.share("Private", {"usr_boss": "owner"})
        not_member = await client.get(f"/scaidrive/shares/{private}/folders")
        explicit_root = await client.get(base, params={"parent_id": "root"})
    assert root.status_code == 200, root.text
    assert root.json()["data"] == {
        "items": [{"folder_id": audio["id"], "name": "Audio"}],
        "share_id": world.share_id,
        "parent_id": None,
        "path": "/",
    }
    assert inner.json()["data"] == {
        "items": [{"folder_id": podcasts["id"], "name": "Podcasts"}],
        "share_id": world.share_id,
        "parent_id": audio["id"],
        "path": "/Audio",
    }
    assert explicit_root.json()["data"] == root.json()["data"]
    for missing in (no_share, no_folder, not_member):
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "SCAISPEAK_SCAIDRIVE_NOT_FOUND"


async def test_picker_needs_a_jwt_and_the_permission(world: World) -> None:
    key = await world.env.key(tenant=world.tenant, user=USER)
    async with world.env.client(key) as client:
        for path in ("/scaidrive/shares", f"/scaidrive/shares/{world.share_id}/folders"):
            answer = await client.get(path)
            assert answer.status_code == 403
            assert answer.json()["error"]["code"] == "SCAISPEAK_SCAIDRIVE_REQUIRES_JWT"
    reader_key = await world.env.key(permissions=["scaispeak:voice.read"])
    async with world.env.client(reader_key) as client:
        answer = await client.get("/scaidrive/shares")
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "AUTHZ_PERMISSION_DENIED"
    async with world.env.client(world.jwt(roles=["tenant_user"])) as client:
        answer = await client.get("/scaidrive/shares")
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "AUTHZ_PERMISSION_DENIED"


async def test_without_scaidrive_everything_is_not_available(speak_bare: SpeakEnv) -> None:
    key = await speak_bare.key()
    async with speak_bare.client(key) as client:
        for path in ("/scaidrive/shares", "/scaidrive/shares/shr_1/folders"):
            answer = await client.get(path)
            assert answer.status_code == 404
            assert answer.json()["error"]["code"] == "SCAISPEAK_SCAIDRIVE_NOT_AVAILABLE"
    principal = await speak_bare.runtime.authenticator.authenticate(key, request_id="req_t")
    deps = deps_of(speak_bare.runtime)
    with pytest.raises(ScaiError) as caught:
        await SaveToService(deps).prepare(principal, SaveTo("shr_1", None, "a.mp3"))
    scai_error(caught, "SCAISPEAK_SCAIDRIVE_NOT_AVAILABLE", 404)
    with pytest.raises(ScaiError) as ref:
        await fetch_reference(deps, principal, '{"file_id": "fil_1"}', "reference_scaidrive_json")
    scai_error(ref, "SCAISPEAK_SCAIDRIVE_NOT_AVAILABLE", 404)


@pytest.mark.parametrize(
    ("client_id", "secret", "reason", "upstream"),
    [
        ("scaidrive", "scaidrive-dev-secret", "invalid_target", True),  # exchange not allowed
        ("scaispeak", "not-the-secret", "invalid_client", True),
        ("", "", "not_configured", False),
    ],
)
async def test_exchange_refusals_are_502_with_the_reason(
    pg_dsn: str,
    redis_url: str,
    s3_endpoint: S3Endpoint,
    scaikey_server: tuple[DevServer, KeyStore],
    scaidrive_server: DevServer,
    client_id: str,
    secret: str,
    reason: str,
    upstream: bool,
) -> None:
    settings = drive_settings(
        scaikey_server[0],
        scaidrive_server,
        scaikey_client_id=client_id,
        scaikey_client_secret=secret,
    )
    async with running_speak(pg_dsn, redis_url, s3_endpoint, **settings) as env:
        world = new_world(env, scaikey_server, scaidrive_server)
        token = world.jwt()
        async with env.client(token) as client:
            answer = await client.get("/scaidrive/shares")
        assert answer.status_code == 502
        error = answer.json()["error"]
        assert error["code"] == "SCAISPEAK_SCAIDRIVE_EXCHANGE_FAILED"
        assert error["reason"] == reason
        assert ("upstream_message" in error) is upstream
        assert token not in answer.text

        principal = await world.principal(token)
        with pytest.raises(ScaiError) as caught:
            await SaveToService(deps_of(env.runtime)).prepare(
                principal, SaveTo(world.share_id, None, "a.mp3")
            )
        failed = scai_error(caught, "SCAISPEAK_SAVE_TO_EXCHANGE_FAILED", 502)
        assert failed.extras["reason"] == reason


async def test_a_jwt_without_write_scope_cannot_be_exchanged_for_saving(world: World) -> None:
    token = world.jwt(scope="files:read")
    async with world.env.client(token) as client:
        answer = await client.get("/scaidrive/shares")
    assert answer.status_code == 502
    assert answer.json()["error"]["reason"] == "invalid_scope"
    with pytest.raises(ScaiError) as caught:
        await SaveToService(deps_of(world.env.runtime)).prepare(
            await world.principal(token), SaveTo(world.share_id, None, "a.mp3")
        )
    assert scai_error(caught, "SCAISPEAK_SAVE_TO_EXCHANGE_FAILED", 502).extras == {
        "reason": "invalid_scope",
        "upstream_message": caught.value.extras["upstream_message"],
    }


# ----- SaveToService ------------------------------------------------------------------


async def test_save_conflict_and_overwrite(world: World) -> None:
    service = SaveToService(deps_of(world.env.runtime))
    principal = await world.principal(world.jwt())
    target = SaveTo(world.share_id, None, "chapter-01.mp3")

    prepared = await service.prepare(principal, target)
    saved = await service.upload(prepared, b"ID3 first take", "audio/mpeg")
    file_id = world.names()["chapter-01.mp3"]
    assert saved == {
        "state": "saved",
        "share_id": world.share_id,
        "folder_id": None,
        "file_id": file_id,
        "name": "chapter-01.mp3",
        "size_bytes": len(b"ID3 first take"),
        "error": None,
    }
    assert world.content(file_id) == b"ID3 first take"
    assert world.store.get_file(world.actor, file_id)["mime_type"] == "audio/mpeg"

    with pytest.raises(ScaiError) as conflict:
        await service.prepare(principal, target)
    scai_error(conflict, "SCAISPEAK_SCAIDRIVE_CONFLICT", 409)

    replacing = await service.prepare(principal, dataclasses.replace(target, overwrite=True))
    replaced = await service.upload(replacing, b"ID3 second take!", "audio/mpeg")
    assert replaced["state"] == "saved" and replaced["file_id"] != file_id
    assert replaced["size_bytes"] == len(b"ID3 second take!")
    with pytest.raises(NotFoundError):
        world.store.get_file(world.actor, file_id)
    assert world.names() == {"chapter-01.mp3": replaced["file_id"]}
    assert world.content(replaced["file_id"]) == b"ID3 second take!"


async def test_save_into_a_folder(world: World) -> None:
    folder = world.store.create_folder(world.actor, world.share_id, None, "Audio")
    service = SaveToService(deps_of(world.env.runtime))
    principal = await world.principal(world.jwt())
    prepared = await service.prepare(principal, SaveTo(world.share_id, folder["id"], "a b.wav"))
    saved = await service.upload(prepared, b"RIFF", "audio/wav")
    assert saved["folder_id"] == folder["id"]
    assert world.names(folder["id"]) == {"a b.wav": saved["file_id"]}
    assert world.store.get_file(world.actor, saved["file_id"])["path"] == "/Audio/a b.wav"


async def test_upload_rechecks_the_name_just_before_uploading(world: World) -> None:
    """The async case: a same-named file appears between enqueue and upload."""
    service = SaveToService(deps_of(world.env.runtime))
    principal = await world.principal(world.jwt())
    plain = await service.prepare(principal, SaveTo(world.share_id, None, "late.mp3"))
    replacing = await service.prepare(principal, SaveTo(world.share_id, None, "late.mp3", True))
    world.store.add_file(world.actor, world.share_id, None, "late.mp3", b"theirs", "audio/mpeg")
    with pytest.raises(ScaiError) as conflict:
        await service.upload(plain, b"ours", "audio/mpeg")
    scai_error(conflict, "SCAISPEAK_SCAIDRIVE_CONFLICT", 409)
    assert world.content(world.names()["late.mp3"]) == b"theirs"

    saved = await service.upload(replacing, b"ours", "audio/mpeg")
    assert world.names() == {"late.mp3": saved["file_id"]}
    assert world.content(saved["file_id"]) == b"ours"


async def test_prepare_refusals(world: World) -> None:
    service = SaveToService(deps_of(world.env.runtime))
    jwt_principal = await world.principal(world.jwt())
    key_principal = await world.principal(await world.env.key(tenant=world.tenant, user=USER))

    with pytest.raises(ScaiError) as api_key:
        await service.prepare(key_principal, SaveTo(world.share_id, None, "a.mp3"))
    scai_error(api_key, "SCAISPEAK_SAVE_TO_REQUIRES_JWT", 403)

    with pytest.raises(ScaiError) as no_share:
        await service.prepare(jwt_principal, SaveTo("shr_00000000000000000000", None, "a.mp3"))
    scai_error(no_share, "SCAISPEAK_SCAIDRIVE_NOT_FOUND", 404)

    read_only = world.share("Archive", {"usr_boss": "owner", USER: "reader"})
    with pytest.raises(ScaiError) as reader:
        await service.prepare(jwt_principal, SaveTo(read_only, None, "a.mp3"))
    scai_error(reader, "SCAISPEAK_SCAIDRIVE_FORBIDDEN", 403)

    with pytest.raises(ScaiError) as no_folder:
        await service.prepare(
            jwt_principal, SaveTo(world.share_id, "fld_00000000000000000000", "a.mp3")
        )
    scai_error(no_folder, "SCAISPEAK_SCAIDRIVE_NOT_FOUND", 404)

    world.store.create_folder(world.actor, world.share_id, None, "Takes")
    with pytest.raises(ScaiError) as folder_named:
        await service.prepare(jwt_principal, SaveTo(world.share_id, None, "Takes", True))
    scai_error(folder_named, "SCAISPEAK_SCAIDRIVE_CONFLICT", 409)


async def test_upload_failures(world: World) -> None:
    service = SaveToService(deps_of(world.env.runtime))
    principal = await world.principal(world.jwt())
    small = world.store.create_share(
        tenant_id=world.tenant, name="Small", members={USER: "owner"}, quota_bytes=10
    )
    over_quota = await service.prepare(principal, SaveTo(str(small["id"]), None, "big.mp3"))
    with pytest.raises(ScaiError) as quota:
        await service.upload(over_quota, b"x" * 11, "audio/mpeg")
    scai_error(quota, "SCAISPEAK_SCAIDRIVE_QUOTA_EXCEEDED", 507)

    prepared = await service.prepare(principal, SaveTo(world.share_id, None, "old.mp3"))
    token = unseal_token(prepared.sealed_token, CLIENT_SECRET)
    stale = dataclasses.replace(
        token, expires_at=time.time() - 1
    )  # the token ran out while the job waited
    expired = dataclasses.replace(prepared, sealed_token=seal_token(stale, CLIENT_SECRET))
    with pytest.raises(ScaiError) as late:
        await service.upload(expired, b"x", "audio/mpeg")
    failure = scai_error(late, "SCAISPEAK_SCAIDRIVE_UPLOAD_FAILED", 502)
    assert prepared.failed_view(failure) == {
        "state": "failed",
        "share_id": world.share_id,
        "folder_id": None,
        "file_id": None,
        "name": "old.mp3",
        "size_bytes": None,
        "error": {"code": "SCAISPEAK_SCAIDRIVE_UPLOAD_FAILED", "message": failure.message},
    }
    assert "old.mp3" not in world.names()

    forged = dataclasses.replace(
        prepared,
        sealed_token=seal_token(ExchangedToken("x", time.time() + 60, "scaidrive", ()), "other"),
    )
    with pytest.raises(ScaiError) as unreadable:
        await service.upload(forged, b"x", "audio/mpeg")
    scai_error(unreadable, "SCAISPEAK_SCAIDRIVE_UPLOAD_FAILED", 502)


async def test_prepared_save_payload_round_trip(world: World) -> None:
    folder = world.store.create_folder(world.actor, world.share_id, None, "Audio")
    service = SaveToService(deps_of(world.env.runtime))
    prepared = await service.prepare(
        await world.principal(world.jwt()), SaveTo(world.share_id, folder["id"], "x.opus", True)
    )
    payload = json.loads(json.dumps(prepared.to_payload()))
    assert PreparedSave.from_payload(payload) == prepared
    exchanged = unseal_token(prepared.sealed_token, CLIENT_SECRET)
    assert exchanged.audience == "scaidrive"
    assert exchanged.access_token not in json.dumps(payload)
    assert exchanged.access_token not in repr(prepared)
    assert prepared.pending_view() == {
        "state": "pending",
        "share_id": world.share_id,
        "folder_id": folder["id"],
        "file_id": None,
        "name": "x.opus",
        "size_bytes": None,
        "error": None,
    }
    with pytest.raises(ValueError):
        PreparedSave.from_payload({"share_id": "shr_1"})
    saved = await service.upload(
        PreparedSave.from_payload(payload), b"OggS", "audio/ogg; codecs=opus"
    )
    assert saved["state"] == "saved" and saved["folder_id"] == folder["id"]


def test_save_to_parse() -> None:
    assert SaveTo.parse({"share_id": "shr_1", "filename": "a.mp3"}) == SaveTo(
        "shr_1", None, "a.mp3", False
    )
    assert SaveTo.parse(
        {"share_id": "shr_1", "folder_id": "root", "filename": " é.mp3 ", "overwrite": True}
    ) == SaveTo("shr_1", None, " é.mp3 ", True)
    assert SaveTo.parse({"share_id": "s", "folder_id": "fld_1", "filename": "x" * 255}).folder_id
    cases: list[tuple[object, list[str]]] = [
        ("shr_1", ["save_to"]),
        ({"filename": "a.mp3"}, ["save_to.share_id"]),
        ({"share_id": "s", "filename": ""}, ["save_to.filename"]),
        ({"share_id": "s", "filename": "x" * 256}, ["save_to.filename"]),
        ({"share_id": "s", "filename": "a/b.mp3"}, ["save_to.filename"]),
        ({"share_id": "s", "filename": "a\\b.mp3"}, ["save_to.filename"]),
        ({"share_id": "s", "filename": "a\nb.mp3"}, ["save_to.filename"]),
        ({"share_id": "s", "filename": "a\x7fb.mp3"}, ["save_to.filename"]),
        ({"share_id": "s", "filename": 5}, ["save_to.filename"]),
        ({"share_id": "s", "filename": "a", "overwrite": "yes"}, ["save_to.overwrite"]),
        ({"share_id": "s", "filename": "a", "folder_id": 3}, ["save_to.folder_id"]),
        ({"share_id": "", "filename": "a", "path": "/x"}, ["save_to.path", "save_to.share_id"]),
    ]
    for value, fields in cases:
        with pytest.raises(ScaiError) as caught:
            SaveTo.parse(value)
        assert caught.value.code == "VALIDATION_ERROR" and caught.value.http_status == 422
        assert sorted(d["field"] for d in caught.value.details or []) == fields, value


# ----- ScaiDrive references -----------------------------------------------------------


async def test_fetch_reference_by_id_uri_and_link(world: World) -> None:
    record = world.store.add_file(
        world.actor, world.share_id, None, "me.wav", b"RIFF-reference", "audio/wav"
    )
    file_id = record["id"]
    deps = deps_of(world.env.runtime)
    principal = await world.principal(world.jwt(scope="files:read"))  # reading is enough
    field = "reference_scaidrive_json"
    for raw in (
        {"file_id": file_id},
        {"mcp_uri": f"scaidrive://shares/{world.share_id}/files/{file_id}"},
        {"share_url": f"https://drive.example.test/s/{world.share_id}/f/{file_id}?dl=1"},
        {"share_url": f"https://drive.example.test/open?file_id={file_id}"},
    ):
        data, name = await fetch_reference(deps, principal, json.dumps(raw), field)
        assert (data, name) == (b"RIFF-reference", "me.wav"), raw


async def test_fetch_reference_refusals(world: World) -> None:
    deps = deps_of(world.env.runtime)
    principal = await world.principal(world.jwt())
    field = "consent_scaidrive_json"
    with pytest.raises(ScaiError) as missing:
        await fetch_reference(deps, principal, '{"file_id": "fil_00000000000000000000"}', field)
    scai_error(missing, "SCAISPEAK_SCAIDRIVE_NOT_FOUND", 404)

    elsewhere = world.share("Private", {"usr_boss": "owner"})
    record = world.store.add_file(
        Actor(world.tenant, "usr_boss"), elsewhere, None, "theirs.wav", b"x", "audio/wav"
    )
    with pytest.raises(ScaiError) as forbidden:
        await fetch_reference(deps, principal, json.dumps({"file_id": record["id"]}), field)
    scai_error(forbidden, "SCAISPEAK_SCAIDRIVE_FORBIDDEN", 403)

    key = await world.principal(await world.env.key(tenant=world.tenant, user=USER))
    with pytest.raises(ScaiError) as api_key:
        await fetch_reference(deps, key, json.dumps({"file_id": record["id"]}), field)
    scai_error(api_key, "SCAISPEAK_SCAIDRIVE_REQUIRES_JWT", 403)

    expired = await world.principal(world.jwt(ttl=60))
    expired_principal = dataclasses.replace(
        expired, token=world.jwt(expired=True)
    )  # the JWT ran out after authentication
    with pytest.raises(ScaiError) as refused:
        await fetch_reference(deps, expired_principal, json.dumps({"file_id": "fil_1"}), field)
    assert (
        scai_error(refused, "SCAISPEAK_SCAIDRIVE_EXCHANGE_FAILED", 502).extras["reason"]
        == "invalid_grant"
    )


async def test_fetch_reference_size_limit(
    pg_dsn: str,
    redis_url: str,
    s3_endpoint: S3Endpoint,
    scaikey_server: tuple[DevServer, KeyStore],
    scaidrive_server: DevServer,
) -> None:
    settings = drive_settings(scaikey_server[0], scaidrive_server, max_upload_bytes=100)
    async with running_speak(pg_dsn, redis_url, s3_endpoint, **settings) as env:
        world = new_world(env, scaikey_server, scaidrive_server)
        record = world.store.add_file(
            world.actor, world.share_id, None, "long.wav", b"x" * 101, "audio/wav"
        )
        with pytest.raises(ScaiError) as caught:
            await fetch_reference(
                deps_of(env.runtime),
                await world.principal(world.jwt()),
                json.dumps({"file_id": record["id"]}),
                "reference_scaidrive_json",
            )
        error = scai_error(caught, "PAYLOAD_TOO_LARGE", 413)
        assert error.details == [
            {"field": "reference_scaidrive_json", "message": "larger than 100 bytes"}
        ]


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        '["fil_1"]',
        "{}",
        '{"file_id": "fil_1", "mcp_uri": "scaidrive://x/fil_1"}',
        '{"file_id": ""}',
        '{"file_id": "a/b"}',
        '{"file_id": 5}',
        '{"path": "/x"}',
        '{"mcp_uri": "https://drive/fil_1"}',
        '{"mcp_uri": "scaidrive://shares/shr_1"}',
        '{"share_url": "ftp://drive/fil_1"}',
        '{"share_url": "https://drive.example.test/s/shr_1"}',
    ],
)
def test_unresolvable_references_are_validation_errors(raw: str) -> None:
    with pytest.raises(ScaiError) as caught:
        resolve_reference(raw, "reference_scaidrive_json")
    assert caught.value.code == "VALIDATION_ERROR" and caught.value.http_status == 422
    assert [d["field"] for d in caught.value.details or []] == ["reference_scaidrive_json"]


def test_references_resolve_to_file_ids() -> None:
    field = "f"
    assert resolve_reference('{"file_id": "fil_ABC"}', field) == "fil_ABC"
    assert resolve_reference('{"mcp_uri": "scaidrive://fil_ABC"}', field) == "fil_ABC"
    assert resolve_reference('{"mcp_uri": "scaidrive:///x/fil_ABC/"}', field) == "fil_ABC"
    link = '{"share_url": "https://d.example/#/files/fil_ABC"}'
    assert resolve_reference(link, field) == "fil_ABC"
