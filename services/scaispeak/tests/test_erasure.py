"""Voice erasure end to end (scaispeak.md §7.8, §7.9, §12.3, §12.4; platform §6.7, §10.2):
real Postgres, Redis and S3, the real dev node that caches the voice, and a second real node
that is down during the erasure and comes back for the erasure-reconciler."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import redis
from psycopg.rows import dict_row

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaicommon.audio import Pcm, wav_bytes
from scaicommon.ids import new_id
from scaicommon.testing import S3Endpoint, fresh_database
from scaidevstack.node.testing import NodeProcess, error_code, start_node
from scaidevstack.speechgen import piper_speech, silence
from scaispeak.deps import deps_of
from scaispeak.services.erasure import reconcile_erasures
from scaispeak.services.voices import VoiceService
from scaispeak.store.voices import NewVoice, Voice

from .conftest import ALL_KEYS, SpeakEnv, running_speak, with_node

RATE = 24000
TTS_NODE = "devstack-node-01"
SECOND_NODE = "devstack-node-evict"
ADMIN = "scaispeak:admin"
REFERENCE_TEXT = (
    "The morning train left the station a little after seven, carrying commuters, students and "
    "a few tired travellers toward the city. Outside the windows, fields of wheat rolled past "
    "under a pale sky."
)
CONSENT_TEXT = "I agree that my voice may be cloned for narrating our training videos."


@dataclass
class SecondNode:
    """The second node; the erasure test stops it and starts it again on the same ports."""

    node: NodeProcess

    @property
    def ports(self) -> tuple[int, int]:
        """``(grpc_port, http_port)``."""
        return int(self.node.grpc_target.rsplit(":", 1)[1]), int(
            self.node.http_url.rsplit(":", 1)[1]
        )


@pytest.fixture(scope="module")
def second_node() -> Iterator[SecondNode]:
    """A second real text-to-speech node with its own node id."""
    holder = SecondNode(start_node(engines=("tts",), node_id=SECOND_NODE))
    try:
        yield holder
    finally:
        holder.node.stop()


@pytest.fixture(scope="module")
async def speak(
    pg_admin_dsn: str,
    redis_server_url: str,
    s3_endpoint: S3Endpoint,
    tts_node: NodeProcess,
    second_node: SecondNode,
) -> AsyncIterator[SpeakEnv]:
    """ScaiSpeak with both nodes registered (own database, flushed Redis)."""
    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    client.close()
    settings = {
        **with_node(tts_node),
        "nodes": [tts_node.grpc_target, second_node.node.grpc_target],
    }
    with fresh_database(pg_admin_dsn) as dsn:
        async with running_speak(dsn, redis_server_url, s3_endpoint, **settings) as env:
            await wait_for_nodes(env, {TTS_NODE, SECOND_NODE})
            yield env


# ----- helpers ---------------------------------------------------------------------------


async def wait_for_nodes(
    env: SpeakEnv, node_ids: set[str], *, newer_than: int = 0, timeout_s: float = 30.0
) -> None:
    """Until every node in ``node_ids`` is healthy (and started after ``newer_than`` ms)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        nodes = {n.node_id: n for n in await env.runtime.nodes.read()}
        if all(
            n in nodes and nodes[n].health == "healthy" and nodes[n].started_at > newer_than
            for n in node_ids
        ):
            return
        if loop.time() > deadline:
            raise AssertionError(f"nodes {sorted(node_ids)} not healthy: {sorted(nodes)}")
        await asyncio.sleep(0.2)


@functools.cache
def reference_pcm() -> bytes:
    """8 s of spoken reference audio: 24 kHz mono PCM16 at -6 dBFS, with silent edges."""
    audio = piper_speech(REFERENCE_TEXT, RATE).astype(np.float64)
    speech = (audio / np.abs(audio).max() * 32767 * 10 ** (-6 / 20)).astype(np.int16)
    body = np.zeros(int(7.4 * RATE), dtype=np.int16)
    cut = speech[: len(body)]
    body[: len(cut)] = cut
    return np.concatenate([silence(0.3, RATE), body, silence(0.3, RATE)]).astype(np.int16).tobytes()


async def cloned_voice(
    env: SpeakEnv, *, owner: str = "usr_a", scope: str = "user", with_consent: bool = True
) -> tuple[Voice, str | None]:
    """A ready voice with its reference (and consent audio and record) stored as intake would;
    returns the voice and the consent record id."""
    voice_id = new_id("voice")
    objects = env.runtime.objects
    reference = wav_bytes(Pcm(reference_pcm(), RATE))
    reference_key = f"scaispeak/voices/{voice_id}/reference.wav"
    await objects.put(reference_key, reference, "audio/wav")
    consent_id = None
    if with_consent:
        consent_id = new_id("cons")
        consent_key = f"scaispeak/voices/{voice_id}/consent.wav"
        consent_audio = wav_bytes(Pcm(reference_pcm()[: RATE * 2 * 4], RATE))
        await objects.put(consent_key, consent_audio, "audio/wav")
        audio_sha = hashlib.sha256(consent_audio).hexdigest()
        text_sha = hashlib.sha256(CONSENT_TEXT.encode()).hexdigest()
        async with env.runtime.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO consent_records (id, voice_id, tenant_id, created_by,"
                " consent_user_full_name, consent_text, consent_stated_purpose,"
                " consent_audio_key, consent_audio_sha256, consent_text_sha256, combined_sha256,"
                " request_id) VALUES (%s, %s, 'tnt_a', %s, 'Zoe Example', %s, 'training videos',"
                " %s, %s, %s, %s, 'req_test')",
                (
                    consent_id,
                    voice_id,
                    owner,
                    CONSENT_TEXT,
                    consent_key,
                    audio_sha,
                    text_sha,
                    hashlib.sha256((audio_sha + text_sha).encode()).hexdigest(),
                ),
            )
    voice = await deps_of(env.runtime).voices.insert(
        NewVoice(
            id=voice_id,
            scope=scope,
            kind="cloned",
            tenant_id="tnt_a",
            owner_user_id=owner,
            display_name=f"Voice of {owner}",
            language_primary="en",
            request_id="req_test",
            reference_key=reference_key,
            reference_sha256=hashlib.sha256(reference).hexdigest(),
            consent_id=consent_id,
        )
    )
    return voice, consent_id


def synthesize(node: NodeProcess, voice_id: str, *, with_audio: bool) -> bool:
    """One ``Synthesize`` on ``node`` with the reference (or only its hash); the cache-hit flag."""
    pcm = reference_pcm()
    audio = pb.AudioInput(
        data=pcm if with_audio else b"",
        pcm=pb.PcmSpec(sample_rate_hz=RATE, channels=1, sample_format=pb.SAMPLE_FORMAT_S16LE),
    )
    request = pb.SynthesizeRequest(
        tenant_id="tnt_a",
        text="Hello there.",
        voice=pb.VoiceSpec(
            voice_id=voice_id,
            reference=pb.ReferenceVoice(
                audio=audio, content_sha256=hashlib.sha256(pcm).hexdigest()
            ),
        ),
    )
    with node.channel() as channel:
        responses = list(node.stub(channel).Synthesize(request, timeout=60))
    audio_bytes = sum(len(r.chunk.pcm) for r in responses if r.HasField("chunk"))
    assert audio_bytes > 0
    [stats] = [r.stats for r in responses if r.HasField("stats")]
    return bool(stats.voice_cache_hit)


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    """The ``data`` of a success envelope."""
    assert response.status_code == status, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The ``error`` object of an error envelope with this status and code."""
    assert response.status_code == status, response.text
    err: dict[str, Any] = response.json()["error"]
    assert err["code"] == code, err
    return err


async def rows(env: SpeakEnv, query: str, *params: Any) -> list[dict[str, Any]]:
    """Rows of a query on the service's database."""
    async with env.runtime.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return list(await cur.fetchall())


async def events(env: SpeakEnv, voice_id: str) -> list[tuple[str, str | None, str]]:
    """``(event, node_id, actor_id)`` of a voice's erasure events, oldest first."""
    found = await rows(
        env,
        "SELECT * FROM erasure_audit WHERE subject_id = %s ORDER BY created_at, id",
        voice_id,
    )
    return [(r["event"], r["node_id"], r["actor_id"]) for r in found]


async def pending_set(env: SpeakEnv) -> set[str]:
    """Members of the warm registry's evict-pending set."""
    members = await env.runtime.redis.smembers("scai:scaispeak:evict_pending")  # type: ignore[misc]
    return {m.decode() for m in members}


# ----- the erasure, a node that was away, and the reconciler ------------------------------


async def test_erasure_with_a_node_down_then_reconciled(
    speak: SpeakEnv, tts_node: NodeProcess, second_node: SecondNode
) -> None:
    env = speak
    objects = env.runtime.objects
    voice, consent_id = await cloned_voice(env)
    assert voice.reference_key is not None
    [consent] = await rows(env, "SELECT * FROM consent_records WHERE id = %s", consent_id)

    # The real node caches the voice; a later call with only the hash is served from the cache.
    assert await asyncio.to_thread(synthesize, tts_node, voice.id, with_audio=True) is False
    assert await asyncio.to_thread(synthesize, tts_node, voice.id, with_audio=False) is True
    await VoiceService(deps_of(env.runtime)).note_warm(voice, TTS_NODE)
    warm_key = f"scai:scaispeak:warm:voice:tnt_a:{voice.id}"
    owner = env.client(await env.key(user="usr_a"))
    other = env.client(await env.key(user="usr_b"))
    admin = env.client(await env.key(user="usr_adm", permissions=[*ALL_KEYS, ADMIN]))
    try:
        assert ok(await owner.get(f"/voices/{voice.id}/warm"))["warm_node_ids"] == [TTS_NODE]

        before = await env.runtime.nodes.get(SECOND_NODE)
        assert before is not None
        second_node.node.stop()
        deleted = ok(await owner.delete(f"/voices/{voice.id}"))
        assert deleted["voice_id"] == voice.id
        assert deleted["deleted"] is True
        assert deleted["erasure_id"].startswith("era_")
        assert deleted["warm_replicas_evicted"] == 1
        assert list(deleted["error_summary"]) == [SECOND_NODE]
        assert deleted["error_summary"][SECOND_NODE].startswith(("UNAVAILABLE", "DEADLINE"))

        # The node dropped what it derived from the reference.
        with pytest.raises(grpc.RpcError) as raised:
            await asyncio.to_thread(synthesize, tts_node, voice.id, with_audio=False)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_code(raised.value) == "VOICE_NOT_CACHED"
        # Audio purged, consent redacted (hashes kept), warm registry cleared, voice gone.
        assert not await objects.exists(voice.reference_key)
        assert not await objects.exists(consent["consent_audio_key"])
        [redacted] = await rows(env, "SELECT * FROM consent_records WHERE id = %s", consent_id)
        assert redacted["redacted_at"] is not None
        for name in ("consent_user_full_name", "consent_text", "consent_stated_purpose"):
            assert redacted[name] is None
        assert redacted["consent_audio_key"] is None
        for name in ("consent_audio_sha256", "consent_text_sha256", "combined_sha256"):
            assert redacted[name] == consent[name]
        assert await env.runtime.redis.exists(warm_key) == 0
        assert await pending_set(env) == {f"voice:tnt_a:{voice.id}:{SECOND_NODE}"}
        error(await owner.get(f"/voices/{voice.id}"), 404, "SCAISPEAK_VOICE_NOT_FOUND")
        error(await owner.delete(f"/voices/{voice.id}"), 404, "SCAISPEAK_VOICE_NOT_FOUND")
        [row] = await rows(env, "SELECT deleted_at, deleted_by FROM voices WHERE id = %s", voice.id)
        assert row["deleted_at"] is not None and row["deleted_by"] == "usr_a"

        assert await events(env, voice.id) == [
            ("requested", None, "usr_a"),
            ("artifact_deleted", None, "usr_a"),
            ("artifact_deleted", None, "usr_a"),
            ("node_evicted", TTS_NODE, "usr_a"),
            ("node_evict_failed", SECOND_NODE, "usr_a"),
        ]
        [item] = ok(await admin.get("/admin/erasure/audit"))["items"]
        assert item == {
            "erasure_id": deleted["erasure_id"],
            "voice_id": voice.id,
            "tenant_id": "tnt_a",
            "scope": "user",
            "kind": "cloned",
            "actor_user_id": "usr_a",
            "reason": "user_request",
            "artifacts_deleted": ["reference", "consent"],
            "consent_hash": consent["combined_sha256"],
            "warm_replicas_evicted": 1,
            "pending_node_ids": [SECOND_NODE],
            "error_summary": deleted["error_summary"],
            "requested_at": item["requested_at"],
            "completed_at": None,
        }
        assert (
            len(ok(await admin.get("/admin/erasure/audit", params={"pending": "true"}))["items"])
            == 1
        )
        assert (
            ok(await admin.get("/admin/erasure/audit", params={"pending": "false"}))["items"] == []
        )

        # /evict still takes the tombstoned voice, for its former owner only.
        error(await other.post(f"/voices/{voice.id}/evict"), 404, "SCAISPEAK_VOICE_NOT_FOUND")
        again = ok(await owner.post(f"/voices/{voice.id}/evict"))
        assert again["pending_node_ids"] == [SECOND_NODE]
        assert list(again["error_summary"]) == [SECOND_NODE]

        # The node comes back on the same ports; the reconciler completes the erasure.
        grpc_port, http_port = second_node.ports
        second_node.node = start_node(
            engines=("tts",), node_id=SECOND_NODE, grpc_port=grpc_port, http_port=http_port
        )
        await wait_for_nodes(env, {SECOND_NODE}, newer_than=before.started_at)
        report = await reconcile_erasures({"runtime": env.runtime})
        assert report["nodes_evicted"] == 1
        assert report["erasures_completed"] == 1
        [done] = ok(await admin.get("/admin/erasure/audit", params={"voice_id": voice.id}))["items"]
        assert done["pending_node_ids"] == []
        assert done["error_summary"] == {}
        assert done["warm_replicas_evicted"] == 2
        assert done["completed_at"] is not None
        assert (await events(env, voice.id))[-2:] == [
            ("node_evicted", SECOND_NODE, "system:reconciler"),
            ("completed", None, "system:reconciler"),
        ]
        assert (
            ok(await admin.get("/admin/erasure/audit", params={"pending": "true"}))["items"] == []
        )
        assert await pending_set(env) == set()
        # A second run finds nothing left to do.
        assert (await reconcile_erasures({"runtime": env.runtime}))["nodes_evicted"] == 0
    finally:
        for client in (owner, other, admin):
            await client.aclose()
    deletes = await rows(
        env,
        "SELECT status, http_status FROM audit_log WHERE action = 'scaispeak.voice.delete'"
        " AND resource_id = %s ORDER BY created_at, id",
        voice.id,
    )
    assert [(r["status"], r["http_status"]) for r in deletes] == [
        ("SUCCESS", None),
        ("FAILURE", 404),
    ]
    evicts = await rows(
        env,
        "SELECT status, resource_id FROM audit_log WHERE action = 'scaispeak.voice.evict'"
        " ORDER BY created_at, id",
    )
    assert [(r["status"], r["resource_id"]) for r in evicts] == [
        ("FAILURE", voice.id),
        ("SUCCESS", voice.id),
    ]


# ----- who may erase, and global voices ------------------------------------------------------


async def test_delete_rules_and_tenant_voice_erasure(speak: SpeakEnv) -> None:
    env = speak
    await wait_for_nodes(env, {TTS_NODE, SECOND_NODE})
    private_b, _ = await cloned_voice(env, owner="usr_b")
    team_b, _ = await cloned_voice(env, owner="usr_b", scope="tenant", with_consent=False)
    user_a = env.client(await env.key(user="usr_a"))
    reader = env.client(await env.key(user="usr_r", permissions=["scaispeak:voice.read"]))
    admin = env.client(await env.key(user="usr_adm", permissions=[*ALL_KEYS, ADMIN]))
    try:
        error(await user_a.delete(f"/voices/{private_b.id}"), 404, "SCAISPEAK_VOICE_NOT_FOUND")
        error(await user_a.delete(f"/voices/{team_b.id}"), 403, "SCAISPEAK_VOICE_NOT_OWNER")
        error(await reader.delete(f"/voices/{team_b.id}"), 403, "AUTHZ_PERMISSION_DENIED")
        error(await user_a.post(f"/voices/{team_b.id}/evict"), 403, "SCAISPEAK_VOICE_NOT_OWNER")

        # Evicting a live voice only drops node caches; both nodes confirm.
        live = ok(await admin.post(f"/voices/{team_b.id}/evict"))
        assert live == {
            "voice_id": team_b.id,
            "warm_replicas_evicted": 2,
            "error_summary": {},
            "pending_node_ids": [],
        }
        assert ok(await admin.get(f"/voices/{team_b.id}"))["embedding_status"] == "ready"
        assert await events(env, team_b.id) == []

        # A tenant admin erases a tenant voice; with every node confirming it completes at once.
        deleted = ok(await admin.delete(f"/voices/{team_b.id}"))
        assert (deleted["warm_replicas_evicted"], deleted["error_summary"]) == (2, {})
        assert [e[0] for e in await events(env, team_b.id)] == [
            "requested",
            "artifact_deleted",
            "node_evicted",
            "node_evicted",
            "completed",
        ]
        [item] = ok(await admin.get("/admin/erasure/audit", params={"voice_id": team_b.id}))[
            "items"
        ]
        assert item["artifacts_deleted"] == ["reference"]
        assert item["consent_hash"] is None
        assert item["scope"] == "tenant"
        assert item["actor_user_id"] == "usr_adm"
        assert item["completed_at"] is not None
        # The former tenant voice: its admin may still evict, its ex-colleagues see nothing.
        assert ok(await admin.post(f"/voices/{team_b.id}/evict"))["pending_node_ids"] == []
        error(await user_a.post(f"/voices/{team_b.id}/evict"), 404, "SCAISPEAK_VOICE_NOT_FOUND")

        err = error(
            await admin.get("/admin/erasure/audit", params={"since": "yesterday"}),
            422,
            "VALIDATION_ERROR",
        )
        assert [d["field"] for d in err["details"]] == ["since"]
        error(await user_a.get("/admin/erasure/audit"), 403, "AUTHZ_PERMISSION_DENIED")
    finally:
        for client in (user_a, reader, admin):
            await client.aclose()


async def test_global_voice_removal(speak: SpeakEnv) -> None:
    env = speak
    await wait_for_nodes(env, {TTS_NODE, SECOND_NODE})
    store = deps_of(env.runtime).voices
    glob = await store.insert(
        NewVoice(
            id=new_id("voice"),
            scope="global",
            kind="global",
            tenant_id=None,
            owner_user_id=None,
            display_name="Licensed Aria",
            language_primary="en",
            request_id="req_test",
            relay_voice="alloy",
            license={"licensor_name": "Acme", "license_type": "perpetual"},
        )
    )
    mine, _ = await cloned_voice(env, with_consent=False)
    root = env.client(await env.key(user="usr_root", roles=["super_admin"]))
    admin = env.client(await env.key(user="usr_adm", roles=["tenant_admin"]))
    try:
        for client in (root, admin):
            error(await client.delete(f"/voices/{glob.id}"), 403, "SCAISPEAK_VOICE_NOT_OWNER")
        error(await admin.delete(f"/admin/voices/global/{glob.id}"), 403, "AUTHZ_PERMISSION_DENIED")
        for missing in (mine.id, "voice_nope"):
            error(
                await root.delete(f"/admin/voices/global/{missing}"),
                404,
                "SCAISPEAK_VOICE_NOT_FOUND",
            )
        removed = ok(await root.delete(f"/admin/voices/global/{glob.id}"))
        assert (removed["deleted"], removed["warm_replicas_evicted"]) == (True, 2)
        error(await root.get(f"/voices/{glob.id}"), 404, "SCAISPEAK_VOICE_NOT_FOUND")
        error(
            await root.delete(f"/admin/voices/global/{glob.id}"), 404, "SCAISPEAK_VOICE_NOT_FOUND"
        )
        # Global erasures are kept under the pseudo-tenant "global".
        listed = ok(await root.get("/admin/erasure/audit", headers={"X-Tenant-ID": "global"}))[
            "items"
        ]
        assert [(i["voice_id"], i["reason"], i["scope"], i["tenant_id"]) for i in listed] == [
            (glob.id, "global_voice_removed", "global", "global")
        ]
        assert glob.id not in [
            i["voice_id"] for i in ok(await root.get("/admin/erasure/audit"))["items"]
        ]
        # The name is free again.
        recreated = await root.post(
            "/admin/voices/global",
            files=[
                (key, (None, value, "text/plain"))
                for key, value in {
                    "display_name": "licensed aria",
                    "language_primary": "en",
                    "relay_voice": "alloy",
                    "licensor_name": "Acme",
                    "license_type": "perpetual",
                }.items()
            ],
        )
        assert ok(recreated, 201)["display_name"] == "licensed aria"
    finally:
        for client in (root, admin):
            await client.aclose()
