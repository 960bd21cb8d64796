"""Issue-level paths through the public HTTP API only: clone a voice and speak with it, and
``save_to`` on ``POST /speak`` with the real dev node, dev ScaiKey and dev ScaiDrive."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from scaicommon.testing import DevServer, LocalRedis, S3Endpoint, scaidrive_settings
from scaicommon.testing.inprocess import on_fresh_database
from scaicommon.testing.wer import word_error_rate
from scaidevstack.node.testing import NodeProcess
from scaidevstack.scaidrive.store import Actor, DriveStore
from scaidevstack.scaikey import KeyStore

from .conftest import SpeakEnv, running_speak, with_node
from .test_speak import TEXT, global_voice, transcribe
from .test_voice_create import consent_flac, data_dir_of, post_clone


@pytest.fixture(scope="module")
async def env(
    pg_admin_dsn: str,
    private_redis: LocalRedis,
    s3_endpoint: S3Endpoint,
    tts_node: NodeProcess,
    scaikey_server: tuple[DevServer, KeyStore],
    scaidrive_server: DevServer,
) -> AsyncIterator[SpeakEnv]:
    """ScaiSpeak with the node (A), its relay (B), token exchange and ScaiDrive."""
    settings = {
        **with_node(tts_node),
        **scaidrive_settings(scaikey_server[0], scaidrive_server, "scaispeak"),
    }
    async with on_fresh_database(
        running_speak, pg_admin_dsn, private_redis.url, s3_endpoint, **settings
    ) as speak:
        yield speak


def code_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return str(response.json()["error"]["code"])


async def test_cloned_voice_speaks_what_it_is_told(env: SpeakEnv, tts_node: NodeProcess) -> None:
    async with env.client(await env.key(tenant="tnt_clone")) as client:
        created = await post_clone(client, consent=("consent.flac", consent_flac(), "audio/flac"))
        assert created.status_code == 201, created.text
        voice = created.json()["data"]
        assert voice["embedding_status"] == "ready"
        spoken = {}
        for backend in ("prefer_self_hosted", "prefer_relay"):
            answer = await client.post(
                "/speak",
                json={"text": TEXT, "voice_id": voice["voice_id"], "backend_preference": backend},
            )
            assert answer.status_code == 200, answer.text
            spoken[answer.json()["data"]["backend_used"]] = answer.json()["data"]
    assert set(spoken) == {"A", "B"}
    for data in spoken.values():
        heard = await transcribe(tts_node, base64.b64decode(data["audio_base64"]))
        assert word_error_rate(TEXT, heard) <= 0.10, heard


async def test_save_to_on_speak(
    env: SpeakEnv,
    tts_node: NodeProcess,
    scaikey_server: tuple[DevServer, KeyStore],
    scaidrive_server: DevServer,
) -> None:
    server, keys = scaikey_server
    store = DriveStore(data_dir_of(scaidrive_server))
    tenant = "tnt_" + secrets.token_hex(5)
    actor = Actor(tenant, "usr_a")
    share = str(
        store.create_share(tenant_id=tenant, name="Audio", members={"usr_a": "owner"})["id"]
    )
    admin = await env.key(tenant=tenant, user="usr_admin", roles=["tenant_admin"])
    async with env.client(admin) as client:
        created = await post_clone(client, consent=("consent.flac", consent_flac(), "audio/flac"))
        voice_id = created.json()["data"]["voice_id"]
        shared = await client.post(f"/voices/{voice_id}/share")
        assert shared.status_code == 200, shared.text

    def jwt(scope: str = "files:read files:write") -> str:
        return keys.mint(
            tenant=tenant, user="usr_a", scope=scope, issuer_base=server.base_url,
            roles=["tenant_admin"],
        )  # fmt: skip

    def body(name: str, **extra: Any) -> dict[str, Any]:
        return {"text": TEXT, "voice_id": voice_id,
                "save_to": {"share_id": share, "filename": name, **extra}}  # fmt: skip

    def files() -> dict[str, str]:
        items, _ = store.list_children(actor, share, None)
        return {i["name"]: i["id"] for i in items}

    async with env.client(await env.key(tenant=tenant)) as client:
        by_key = await client.post("/speak", json=body("key.mp3"))
    assert code_of(by_key, 403) == "SCAISPEAK_SAVE_TO_REQUIRES_JWT"
    async with env.client(jwt()) as client:
        first = await client.post("/speak", json=body("hello.mp3"))
        assert first.status_code == 200, first.text
        saved = first.json()["data"]["saved_to"]
        assert saved["state"] == "saved" and files() == {"hello.mp3": saved["file_id"]}
        assert saved["share_id"] == share and saved["folder_id"] is None
        _, path = store.open_file(actor, saved["file_id"])
        assert saved["size_bytes"] == path.stat().st_size > 0
        heard = await transcribe(tts_node, path.read_bytes())
        assert word_error_rate(TEXT, heard) <= 0.10, heard
        again = await client.post("/speak", json=body("hello.mp3"))
        assert code_of(again, 409) == "SCAISPEAK_SCAIDRIVE_CONFLICT"
        replaced = await client.post("/speak", json=body("hello.mp3", overwrite=True))
    assert replaced.status_code == 200, replaced.text
    new_id = replaced.json()["data"]["saved_to"]["file_id"]
    assert new_id != saved["file_id"] and files() == {"hello.mp3": new_id}
    async with env.client(jwt(scope="files:read")) as client:
        refused = await client.post("/speak", json=body("scope.mp3"))
    assert code_of(refused, 502) == "SCAISPEAK_SAVE_TO_EXCHANGE_FAILED"
    assert refused.json()["error"]["reason"] == "invalid_scope"


async def test_save_to_without_scaidrive(speak_bare: SpeakEnv) -> None:
    voice_id = await global_voice(speak_bare)
    async with speak_bare.client(await speak_bare.key()) as client:
        answer = await client.post(
            "/speak",
            json={"text": TEXT, "voice_id": voice_id,
                  "save_to": {"share_id": "shr_x", "filename": "a.mp3"}},
        )  # fmt: skip
    assert code_of(answer, 404) == "SCAISPEAK_SCAIDRIVE_NOT_AVAILABLE"
