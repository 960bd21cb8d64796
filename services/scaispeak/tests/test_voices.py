"""The voice library over real HTTP against real Postgres, Redis and S3 (scaispeak.md §1.8,
§7.1–7.3, §7.7, §7.11, §7.12, §12.3): visibility, the ranked list and its cursor, PATCH and
share rules, legacy warming, licences and global-voice import."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
from psycopg.rows import dict_row

from scaicommon.audio import Pcm, wav_bytes
from scaicommon.errors import ScaiError
from scaicommon.ids import new_id
from scaidevstack.speechgen import piper_speech, silence
from scaispeak.deps import deps_of
from scaispeak.services.voices import WARM_NOTE, VoiceService
from scaispeak.store.voices import NewVoice, Voice

from .conftest import ALL_KEYS, SpeakEnv

ADMIN = "scaispeak:admin"
RATE = 24000
REFERENCE_TEXT = (
    "The morning train left the station a little after seven, carrying commuters, students and "
    "a few tired travellers toward the city. Outside the windows, fields of wheat rolled past "
    "under a pale sky, and somewhere near the back a child was laughing at a dog that chased "
    "the train along the fence."
)
USAGE_LICENSE = {
    "licensor_name": "Acme Voices",
    "license_type": "usage",
    "license_expires_at": None,
    "license_char_cap": 1000,
}


# ----- helpers ---------------------------------------------------------------------------


async def add_voice(
    env: SpeakEnv,
    name: str,
    *,
    scope: str = "user",
    tenant: str = "tnt_a",
    owner: str = "usr_a",
    **fields: Any,
) -> Voice:
    """Insert a voice row directly (``kind`` defaults to cloned, or global for global voices)."""
    is_global = scope == "global"
    kind = fields.pop("kind", "global" if is_global else "cloned")
    return await deps_of(env.runtime).voices.insert(
        NewVoice(
            id=new_id("voice"),
            scope=scope,
            kind=kind,
            tenant_id=None if is_global else tenant,
            owner_user_id=None if is_global else owner,
            display_name=name,
            language_primary=fields.pop("language_primary", "en"),
            request_id="req_test",
            **fields,
        )
    )


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    """The ``data`` of a success envelope."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "ok"
    data: dict[str, Any] = body["data"]
    return data


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The ``error`` object of an error envelope with this status and code."""
    assert response.status_code == status, response.text
    err: dict[str, Any] = response.json()["error"]
    assert err["code"] == code, err
    return err


def fields_of(err: dict[str, Any]) -> set[str]:
    """The ``details`` fields of a validation error."""
    return {d["field"] for d in err.get("details") or []}


async def ids_listed(client: httpx.AsyncClient, **query: Any) -> list[str]:
    """Every voice id of ``GET /voices`` (one page of up to 200)."""
    data = ok(await client.get("/voices", params={"limit": 200, **query}))
    return [item["voice_id"] for item in data["items"]]


async def rows(env: SpeakEnv, query: str, *params: Any) -> list[dict[str, Any]]:
    """Rows of a query on the service's database."""
    async with env.runtime.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return list(await cur.fetchall())


async def audit(env: SpeakEnv, action: str) -> list[dict[str, Any]]:
    """Audit rows of ``action``, oldest first."""
    return await rows(
        env, "SELECT * FROM audit_log WHERE action = %s ORDER BY created_at, id", action
    )


def ranking(voices: list[Voice]) -> list[str]:
    """The §7.2 order: user, tenant, global; then lower-cased name; then id."""
    group = {"user": 0, "tenant": 1, "global": 2}
    ordered = sorted(voices, key=lambda v: (group[v.scope], v.display_name.lower(), v.id))
    return [v.id for v in ordered]


@functools.cache
def reference_wav(seconds: float) -> bytes:
    """Spoken reference audio (piper, 24 kHz, -6 dBFS) with 0.3 s of silence at each end."""
    audio = piper_speech(REFERENCE_TEXT, RATE).astype(np.float64)
    speech = (audio / np.abs(audio).max() * 32767 * 10 ** (-6 / 20)).astype(np.int16)
    body = np.zeros(int((seconds - 0.6) * RATE), dtype=np.int16)
    cut = speech[: len(body)]
    body[: len(cut)] = cut
    padded = np.concatenate([silence(0.3, RATE), body, silence(0.3, RATE)])
    return wav_bytes(Pcm(padded.astype(np.int16).tobytes(), RATE))


def global_form(name: str, **extra: str) -> list[tuple[str, tuple[str | None, Any, str]]]:
    """Multipart parts of ``POST /admin/voices/global`` (text fields as filename-less parts)."""
    values = {
        "display_name": name,
        "language_primary": "en",
        "licensor_name": "Acme Voices",
        "license_type": "perpetual",
        **extra,
    }
    return [(key, (None, value, "text/plain")) for key, value in values.items()]


# ----- visibility (§1.8) ------------------------------------------------------------------


async def test_visibility_matrix_and_sharing(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    private = await add_voice(env, "Ingrid")
    tenant_voice = await add_voice(env, "Team voice", scope="tenant", owner="usr_z")
    glob = await add_voice(env, "Aria", scope="global", license=USAGE_LICENSE)
    other_tenant = await add_voice(env, "Elsewhere", tenant="tnt_c", owner="usr_c")
    keys = {
        "owner": await env.key(user="usr_a"),
        "colleague": await env.key(user="usr_b"),
        "stranger": await env.key(tenant="tnt_c", user="usr_c"),
        "tenant_admin": await env.key(user="usr_adm", roles=["tenant_admin"]),
        "super_admin": await env.key(user="usr_root", roles=["super_admin"]),
    }
    clients = {name: env.client(key) for name, key in keys.items()}
    try:
        owner = clients["owner"]
        assert ok(await owner.get(f"/voices/{private.id}"))["voice_id"] == private.id
        for name in ("colleague", "stranger", "tenant_admin", "super_admin"):
            for path in (f"/voices/{private.id}", f"/voices/{private.id}/warm"):
                error(await clients[name].get(path), 404, "SCAISPEAK_VOICE_NOT_FOUND")
            assert private.id not in await ids_listed(clients[name])
        # Another tenant's voices never show, to anyone here (administrators included).
        for name in ("owner", "colleague", "tenant_admin", "super_admin"):
            error(
                await clients[name].get(f"/voices/{other_tenant.id}"),
                404,
                "SCAISPEAK_VOICE_NOT_FOUND",
            )
        assert await ids_listed(owner) == [private.id, tenant_voice.id, glob.id]
        assert await ids_listed(clients["colleague"]) == [tenant_voice.id, glob.id]
        assert await ids_listed(clients["stranger"]) == [other_tenant.id, glob.id]
        # Global voices are visible to everyone, without owner or tenant in the record.
        record = ok(await clients["stranger"].get(f"/voices/{glob.id}"))
        assert (record["scope"], record["owner_user_id"], record["tenant_id"]) == (
            "global",
            None,
            None,
        )
        assert record["license"] == {**USAGE_LICENSE, "license_chars_used": 0}

        shared = ok(await owner.post(f"/voices/{private.id}/share"))
        assert (shared["scope"], shared["owner_user_id"]) == ("tenant", "usr_a")
        assert ok(await clients["colleague"].get(f"/voices/{private.id}"))["scope"] == "tenant"
        # "Ingrid" now ranks among the tenant voices, before "Team voice".
        assert await ids_listed(clients["colleague"]) == [private.id, tenant_voice.id, glob.id]
        assert private.id in await ids_listed(clients["tenant_admin"])
        error(
            await clients["stranger"].get(f"/voices/{private.id}"), 404, "SCAISPEAK_VOICE_NOT_FOUND"
        )

        # A tombstoned voice is gone for everyone, its owner included.
        await deps_of(env.runtime).voices.tombstone(tenant_voice.id, "usr_z")
        error(await owner.get(f"/voices/{tenant_voice.id}"), 404, "SCAISPEAK_VOICE_NOT_FOUND")
        assert tenant_voice.id not in await ids_listed(owner)
    finally:
        for client in clients.values():
            await client.aclose()


async def test_reads_of_tenant_and_user_voices_are_audited(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    private = await add_voice(env, "Mine")
    glob = await add_voice(env, "Shared by all", scope="global")
    async with env.client(await env.key()) as client:
        ok(await client.get(f"/voices/{private.id}"))
        ok(await client.get(f"/voices/{glob.id}"))
        ok(await client.get("/voices", params={"scope": "user"}))
    reads = await audit(env, "scaispeak.voice.read")
    assert [(r["resource_id"], r["status"], r["tenant_id"]) for r in reads] == [
        (private.id, "SUCCESS", "tnt_a")
    ]
    [listed] = await audit(env, "scaispeak.voice.list")
    assert listed["resource_id"] is None
    assert listed["details"] == {"count": 1, "filters": {"scope": "user"}}


async def test_permission_comes_before_visibility(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    private = await add_voice(env, "Mine")
    key = await env.key(permissions=["scaispeak:synthesize"])
    async with env.client(key) as client:
        for method, path in (
            ("GET", "/voices"),
            ("GET", f"/voices/{private.id}"),
            ("GET", "/voices/voice_missing"),
            ("PATCH", f"/voices/{private.id}"),
            ("POST", f"/voices/{private.id}/share"),
            ("POST", f"/voices/{private.id}/warm"),
        ):
            response = await client.request(method, path, json={} if method == "PATCH" else None)
            error(response, 403, "AUTHZ_PERMISSION_DENIED")
    failures = await audit(env, "scaispeak.voice.share")
    assert [(r["status"], r["error_code"], r["http_status"]) for r in failures] == [
        ("FAILURE", "AUTHZ_PERMISSION_DENIED", 403)
    ]


# ----- the ranked list (§7.2) ---------------------------------------------------------------


async def test_ranking_filters_and_cursor_pagination(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    visible = [
        await add_voice(env, "beta", gender_hint="female", style_tags=["narration", "calm"]),
        await add_voice(env, "Alpha", language_primary="nl", language_supported=["nl", "de"]),
        await add_voice(env, "alpha", description="Warm NARRATION voice"),
        await add_voice(env, "Zed", embedding_status="processing", gender_hint="male"),
        await add_voice(env, "Älpha-umlaut", embedding_status="failed"),
        await add_voice(env, "Charlie", scope="tenant", owner="usr_b", gender_hint="female"),
        await add_voice(env, "able", scope="tenant", owner="usr_a", language_primary="de"),
        await add_voice(env, "Global B", scope="global", gender_hint="female"),
        await add_voice(env, "global a", scope="global", style_tags=["Storytelling"]),
        await add_voice(env, "Narrator", scope="global", embedding_status="evicted"),
    ]
    await add_voice(env, "hidden: another user's", owner="usr_b")
    await add_voice(env, "hidden: another tenant's", scope="tenant", tenant="tnt_x")
    gone = await add_voice(env, "hidden: deleted")
    await deps_of(env.runtime).voices.tombstone(gone.id, "usr_a")

    async with env.client(await env.key()) as client:
        expected = ranking(visible)
        assert await ids_listed(client) == expected
        for limit in (1, 3, 4):
            seen: list[str] = []
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"limit": limit}
                if cursor:
                    params["cursor"] = cursor
                response = await client.get("/voices", params=params)
                body = response.json()
                assert response.status_code == 200, body
                seen += [item["voice_id"] for item in body["data"]["items"]]
                pagination = body["pagination"]
                assert (pagination["next_cursor"] is None) == (not pagination["has_more"])
                if not pagination["has_more"]:
                    break
                assert len(body["data"]["items"]) == limit
                cursor = pagination["next_cursor"]
            assert seen == expected, limit

        def only(keep: Any) -> list[str]:
            return ranking([v for v in visible if keep(v)])

        assert await ids_listed(client, language="de") == only(
            lambda v: v.language_primary == "de" or "de" in v.language_supported
        )
        assert await ids_listed(client, scope="tenant") == only(lambda v: v.scope == "tenant")
        assert await ids_listed(client, gender="female") == only(
            lambda v: v.gender_hint == "female"
        )
        assert await ids_listed(client, embedding_status="processing") == only(
            lambda v: v.embedding_status == "processing"
        )
        narration = await ids_listed(client, q="NarRat")
        assert narration == only(
            lambda v: (
                "narrat" in v.display_name.lower()
                or "narrat" in (v.description or "").lower()
                or any("narrat" in t.lower() for t in v.style_tags)
            )
        )
        assert len(narration) == 3
        assert await ids_listed(client, q="storyTELL") == only(
            lambda v: v.display_name == "global a"
        )

        # Pages under a filter concatenate to the filtered list.
        first = await client.get("/voices", params={"gender": "female", "limit": 2})
        first_body = first.json()
        assert first_body["pagination"]["has_more"] is True
        cursor = first_body["pagination"]["next_cursor"]
        rest = ok(await client.get("/voices", params={"gender": "female", "cursor": cursor}))
        assert [i["voice_id"] for i in first_body["data"]["items"] + rest["items"]] == only(
            lambda v: v.gender_hint == "female"
        )

        # A cursor is bound to its filters and to its caller; garbage is refused.
        for params in (
            {"cursor": cursor},
            {"cursor": cursor, "gender": "male"},
            {"cursor": "not-a-cursor!"},
            {"cursor": base64.urlsafe_b64encode(b'{"v":1,"k":[9,"a","b"],"f":"x"}').decode()},
        ):
            err = error(await client.get("/voices", params=params), 422, "VALIDATION_ERROR")
            assert fields_of(err) == {"cursor"}
    async with env.client(await env.key(user="usr_b")) as other:
        params = {"gender": "female", "cursor": cursor}
        err = error(await other.get("/voices", params=params), 422, "VALIDATION_ERROR")
        assert fields_of(err) == {"cursor"}

        bad = {
            "language": "EN",
            "scope": "private",
            "gender": "other",
            "embedding_status": "done",
        }
        err = error(await other.get("/voices", params=bad), 422, "VALIDATION_ERROR")
        assert fields_of(err) == set(bad)
        for raw_limit in ("0", "201", "ten"):
            err = error(
                await other.get("/voices", params={"limit": raw_limit}), 422, "VALIDATION_ERROR"
            )
            assert fields_of(err) == {"limit"}


async def test_cursor_encodes_the_ranking_position(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    first = await add_voice(env, "B voice")
    await add_voice(env, "a global", scope="global")
    async with env.client(await env.key()) as client:
        page = (await client.get("/voices", params={"limit": 1})).json()
    cursor = page["pagination"]["next_cursor"]
    body = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    assert body["v"] == 1
    assert body["k"] == [0, "b voice", first.id]
    assert len(body["f"]) == 8


# ----- PATCH (§7.7) --------------------------------------------------------------------------


async def test_patch_modification_rules(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    mine = await add_voice(env, "Mine")
    team = await add_voice(env, "Team", scope="tenant", owner="usr_a")
    glob = await add_voice(env, "Aria", scope="global", license=USAGE_LICENSE, relay_voice="alloy")
    owner = env.client(await env.key(user="usr_a"))
    colleague = env.client(await env.key(user="usr_b"))
    admin = env.client(await env.key(user="usr_adm", permissions=[*ALL_KEYS, ADMIN]))
    root = env.client(await env.key(user="usr_root", roles=["super_admin"]))
    try:
        error(
            await colleague.patch(f"/voices/{mine.id}", json={"display_name": "x"}),
            404,
            "SCAISPEAK_VOICE_NOT_FOUND",
        )
        error(
            await colleague.patch(f"/voices/{team.id}", json={"display_name": "x"}),
            403,
            "SCAISPEAK_VOICE_NOT_OWNER",
        )
        renamed = ok(await admin.patch(f"/voices/{team.id}", json={"display_name": " Team 2 "}))
        assert renamed["display_name"] == "Team 2"
        assert (
            ok(await owner.patch(f"/voices/{team.id}", json={"description": "ours"}))["description"]
            == "ours"
        )
        for client in (owner, admin):
            error(
                await client.patch(f"/voices/{glob.id}", json={"display_name": "x"}),
                403,
                "SCAISPEAK_VOICE_NOT_OWNER",
            )
        patched = ok(
            await root.patch(
                f"/voices/{glob.id}",
                json={
                    "display_name": "Aria II",
                    "relay_voice": "nova",
                    "license": {"license_char_cap": 5000},
                },
            )
        )
        assert patched["relay_voice"] == "nova"
        assert patched["license"] == {
            **USAGE_LICENSE,
            "license_char_cap": 5000,
            "license_chars_used": 0,
        }
        # The super admin is bound by visibility on other people's voices.
        error(
            await root.patch(f"/voices/{mine.id}", json={"display_name": "x"}),
            404,
            "SCAISPEAK_VOICE_NOT_FOUND",
        )
    finally:
        for client in (owner, colleague, admin, root):
            await client.aclose()
    updates = await audit(env, "scaispeak.voice.update")
    assert [(r["resource_id"], r["status"], r["http_status"]) for r in updates] == [
        (mine.id, "FAILURE", 404),
        (team.id, "FAILURE", 403),
        (team.id, "SUCCESS", None),
        (team.id, "SUCCESS", None),
        (glob.id, "FAILURE", 403),
        (glob.id, "FAILURE", 403),
        (glob.id, "SUCCESS", None),
        (mine.id, "FAILURE", 404),
    ]
    assert updates[2]["details"] == {"fields": ["display_name"]}


async def test_patch_fields_defaults_and_validation(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    voice = await add_voice(
        env, "Mine", language_supported=["en", "fr"], defaults={"speed": 0.9, "cfg_value": 2.5}
    )
    async with env.client(await env.key()) as client:
        before = ok(await client.get(f"/voices/{voice.id}"))
        after = ok(
            await client.patch(
                f"/voices/{voice.id}",
                json={
                    "language_primary": "nl",
                    "gender_hint": "female",
                    "age_hint": "senior",
                    "style_tags": ["calm", "calm", "narration"],
                    "defaults": {
                        "speed": None,
                        "instructions": "Slow and warm",
                        "warmup_trim_ms": 120,
                    },
                },
            )
        )
        assert after["language_primary"] == "nl"
        assert after["language_supported"] == ["nl", "en", "fr"]
        assert (after["gender_hint"], after["age_hint"]) == ("female", "senior")
        assert after["style_tags"] == ["calm", "narration"]
        assert after["defaults"] == {
            "instructions": "Slow and warm",
            "speed": None,
            "cfg_value": 2.5,
            "warmup_trim_ms": 120,
        }
        assert after["updated_at"] > before["updated_at"]
        again = ok(await client.patch(f"/voices/{voice.id}", json={"language_supported": ["de"]}))
        assert again["language_supported"] == ["nl", "de"]
        cleared = ok(await client.patch(f"/voices/{voice.id}", json={"description": None}))
        assert cleared["description"] is None

        err = error(
            await client.patch(
                f"/voices/{voice.id}",
                json={
                    "display_name": "   ",
                    "language_primary": "english",
                    "language_supported": ["en", "EN"],
                    "gender_hint": "robot",
                    "style_tags": ["ok", "x" * 33],
                    "description": "d" * 1001,
                    "defaults": {
                        "speed": 3,
                        "cfg_value": "high",
                        "warmup_trim_ms": 1.5,
                        "pitch": 1,
                    },
                    "license": {"licensor_name": "Nope"},
                    "relay_voice": "alloy",
                },
            ),
            422,
            "VALIDATION_ERROR",
        )
        assert fields_of(err) == {
            "display_name",
            "language_primary",
            "language_supported[1]",
            "gender_hint",
            "style_tags[1]",
            "description",
            "defaults.speed",
            "defaults.cfg_value",
            "defaults.warmup_trim_ms",
            "defaults.pitch",
            "license",
            "relay_voice",
        }
        err = error(
            await client.patch(f"/voices/{voice.id}", json={"style_tags": ["t"] * 21}),
            422,
            "VALIDATION_ERROR",
        )
        assert fields_of(err) == {"style_tags"}
        err = error(
            await client.patch(f"/voices/{voice.id}", json={"owner_user_id": "usr_x"}),
            422,
            "VALIDATION_ERROR",
        )
        unchanged = ok(await client.get(f"/voices/{voice.id}"))
        assert unchanged == cleared


async def test_patch_global_licence_and_name_rules(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    relay_only = await add_voice(
        env, "Relay only", scope="global", license=USAGE_LICENSE, relay_voice="alloy"
    )
    await add_voice(env, "Taken", scope="global", license=USAGE_LICENSE, relay_voice="echo")
    async with env.client(await env.key(user="usr_root", roles=["super_admin"])) as root:
        err = error(
            await root.patch(
                f"/voices/{relay_only.id}",
                json={
                    "relay_voice": None,
                    "license": {
                        "license_type": "term",
                        "license_char_cap": 0,
                        "license_chars_used": 5,
                        "colour": "red",
                    },
                },
            ),
            422,
            "VALIDATION_ERROR",
        )
        assert fields_of(err) == {
            "relay_voice",
            "license.license_chars_used",
            "license.colour",
            "license.license_char_cap",
            "license.license_expires_at",
        }
        err = error(
            await root.patch(
                f"/voices/{relay_only.id}",
                json={
                    "license": {
                        "license_type": "perpetual",
                        "license_expires_at": "2030-01-01T00:00:00Z",
                    }
                },
            ),
            422,
            "VALIDATION_ERROR",
        )
        assert fields_of(err) == {"license.license_expires_at"}
        term = ok(
            await root.patch(
                f"/voices/{relay_only.id}",
                json={
                    "license": {
                        "license_type": "term",
                        "license_expires_at": "2031-06-30T12:00:00+02:00",
                    }
                },
            )
        )
        assert term["license"]["license_expires_at"] == "2031-06-30T10:00:00.000Z"
        error(
            await root.patch(f"/voices/{relay_only.id}", json={"display_name": "TAKEN"}),
            409,
            "SCAISPEAK_VOICE_NAME_CONFLICT",
        )


# ----- share (§7.12) --------------------------------------------------------------------------


async def test_share_is_owner_only_and_idempotent(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    mine = await add_voice(env, "Mine")
    theirs = await add_voice(env, "Theirs", scope="tenant", owner="usr_b")
    glob = await add_voice(env, "Aria", scope="global")
    root_key = await env.key(user="usr_root", roles=["super_admin"])
    async with env.client(await env.key()) as owner, env.client(root_key) as root:
        first = ok(await owner.post(f"/voices/{mine.id}/share"))
        assert first["scope"] == "tenant"
        second = ok(await owner.post(f"/voices/{mine.id}/share"))
        assert second == first
        error(await owner.post(f"/voices/{theirs.id}/share"), 403, "SCAISPEAK_VOICE_NOT_OWNER")
        for client in (owner, root):
            error(await client.post(f"/voices/{glob.id}/share"), 403, "SCAISPEAK_VOICE_NOT_OWNER")
        error(await owner.post("/voices/voice_nope/share"), 404, "SCAISPEAK_VOICE_NOT_FOUND")
    shares = await audit(env, "scaispeak.voice.share")
    assert [(r["resource_id"], r["status"]) for r in shares] == [
        (mine.id, "SUCCESS"),
        (theirs.id, "FAILURE"),
        (glob.id, "FAILURE"),
        (glob.id, "FAILURE"),
        ("voice_nope", "FAILURE"),
    ]


# ----- warm (§7.11) ---------------------------------------------------------------------------


async def test_warm_is_a_no_op_for_ready_voices_and_409_for_legacy_rows(
    speak_bare: SpeakEnv,
) -> None:
    env = speak_bare
    ready = await add_voice(env, "Ready")
    legacy = [
        await add_voice(
            env, f"Legacy {status}", embedding_status=status, embedding_status_reason=reason
        )
        for status, reason in (
            ("pending", None),
            ("processing", None),
            ("failed", "ecapa_cosine_below_threshold:0.41"),
            ("evicted", None),
        )
    ]
    async with env.client(await env.key()) as client:
        assert ok(await client.post(f"/voices/{ready.id}/warm")) == {
            "voice_id": ready.id,
            "warmed": False,
            "note": WARM_NOTE,
        }
        assert WARM_NOTE == (
            "Warming is not needed on the current engine; the voice is usable now."
        )
        assert ok(await client.get(f"/voices/{ready.id}/warm")) == {
            "voice_id": ready.id,
            "warm_node_ids": [],
        }
        for voice in legacy:
            error(
                await client.post(f"/voices/{voice.id}/warm"),
                409,
                "SCAISPEAK_VOICE_NOT_READY_FOR_WARMING",
            )
            record = ok(await client.get(f"/voices/{voice.id}"))
            assert record["embedding_status"] == voice.embedding_status
            assert record["embedding_status_reason"] == voice.embedding_status_reason
        assert await ids_listed(client, embedding_status="failed") == [legacy[2].id]


# ----- usable(), licences (§4.2, §12.3) ------------------------------------------------------


async def test_usable_readiness_and_licence_enforcement(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    service = VoiceService(deps_of(env.runtime))
    mine = await add_voice(env, "Mine")
    legacy = await add_voice(env, "Legacy", embedding_status="processing")
    capped = await add_voice(env, "Capped", scope="global", license=USAGE_LICENSE)
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    expired = await add_voice(
        env,
        "Expired",
        scope="global",
        license={**USAGE_LICENSE, "license_type": "term", "license_expires_at": past},
    )

    async def code_of(voice_id: str, chars: int, user: str = "usr_a") -> str | None:
        try:
            await service.usable("tnt_a", user, voice_id, chars)
        except ScaiError as exc:
            return f"{exc.http_status} {exc.code}"
        return None

    assert await code_of(mine.id, 10) is None
    assert await code_of(mine.id, 10, user="usr_b") == "404 SCAISPEAK_VOICE_NOT_FOUND"
    assert await code_of(legacy.id, 10) == "409 SCAISPEAK_VOICE_NOT_READY"
    assert await code_of(expired.id, 1) == "403 SCAISPEAK_VOICE_LICENSE_EXPIRED"
    assert await code_of(capped.id, 1000) is None
    assert await code_of(capped.id, 1001) == "403 SCAISPEAK_VOICE_LICENSE_CAP_EXCEEDED"

    # Usage counts atomically across concurrent successes, for global voices only.
    await asyncio.gather(*(service.record_license_use(capped, 30) for _ in range(20)))
    await service.record_license_use(mine, 500)
    assert await code_of(capped.id, 400) is None
    assert await code_of(capped.id, 401) == "403 SCAISPEAK_VOICE_LICENSE_CAP_EXCEEDED"
    stored = await deps_of(env.runtime).voices.get(capped.id)
    assert stored is not None and stored.license_chars_used == 600
    untouched = await deps_of(env.runtime).voices.get(mine.id)
    assert untouched is not None and untouched.license_chars_used == 0
    async with env.client(await env.key(tenant="tnt_other", user="usr_o")) as client:
        record = ok(await client.get(f"/voices/{capped.id}"))
        assert record["license"]["license_chars_used"] == 600
        # Voices past their licence stay listed.
        assert {capped.id, expired.id} <= set(await ids_listed(client))

    found = await service.find_global_by_name("CAPPED")
    assert found is not None and found.id == capped.id
    assert await service.find_global_by_name("Mine") is None
    await deps_of(env.runtime).voices.tombstone(capped.id, "usr_root")
    assert await service.find_global_by_name("capped") is None


# ----- global voice import (§12.3) -----------------------------------------------------------


async def test_global_voice_import_without_reference(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    root_key = await env.key(user="usr_root", roles=["super_admin"])
    admin_key = await env.key(user="usr_adm", roles=["tenant_admin"])
    async with env.client(root_key) as root, env.client(admin_key) as admin:
        error(
            await admin.post(
                "/admin/voices/global", files=global_form("Aria", relay_voice="alloy")
            ),
            403,
            "AUTHZ_PERMISSION_DENIED",
        )
        created = ok(
            await root.post(
                "/admin/voices/global",
                files=global_form(
                    "Aria",
                    relay_voice="alloy",
                    license_type="usage",
                    license_char_cap="250000",
                    language_supported_json='["de", "en"]',
                    style_tags_json='["bright"]',
                    gender_hint="female",
                    description="Licensed narration voice",
                    defaults_json='{"speed": 1.1}',
                    ignored_field="whatever",
                ),
            ),
            201,
        )
        assert created["scope"] == created["kind"] == "global"
        assert created["embedding_status"] == "ready"
        assert (created["tenant_id"], created["owner_user_id"]) == (None, None)
        assert created["relay_voice"] == "alloy"
        assert created["preflight"] is None
        assert created["language_supported"] == ["en", "de"]
        assert created["defaults"]["speed"] == 1.1
        assert created["license"] == {
            "licensor_name": "Acme Voices",
            "license_type": "usage",
            "license_expires_at": None,
            "license_char_cap": 250000,
            "license_chars_used": 0,
        }
        # Everyone sees it; the name is taken case-insensitively.
        async with env.client(await env.key(tenant="tnt_new", user="usr_new")) as fresh:
            assert await ids_listed(fresh, scope="global") == [created["voice_id"]]
        error(
            await root.post("/admin/voices/global", files=global_form("ARIA", relay_voice="nova")),
            409,
            "SCAISPEAK_VOICE_NAME_CONFLICT",
        )
        err = error(
            await root.post(
                "/admin/voices/global",
                files=global_form(
                    "",
                    license_type="term",
                    licensor_name="",
                    language_primary="eng",
                    style_tags_json="[not json",
                ),
            ),
            422,
            "VALIDATION_ERROR",
        )
        assert fields_of(err) == {
            "display_name",
            "language_primary",
            "style_tags_json",
            "licensor_name",
            "license_expires_at",
            "reference",
        }
        err = error(
            await root.post(
                "/admin/voices/global",
                files=global_form("Usage", relay_voice="x", license_type="usage"),
            ),
            422,
            "VALIDATION_ERROR",
        )
        assert fields_of(err) == {"license_char_cap"}
        err = error(
            await root.post(
                "/admin/voices/global",
                files=global_form(
                    "Forever", relay_voice="x", license_expires_at="2030-01-01T00:00:00Z"
                ),
            ),
            422,
            "VALIDATION_ERROR",
        )
        assert fields_of(err) == {"license_expires_at"}
    created_rows = await audit(env, "scaispeak.voice.create")
    assert [(r["status"], r["http_status"]) for r in created_rows] == [
        ("FAILURE", 403),
        ("SUCCESS", None),
        ("FAILURE", 409),
        ("FAILURE", 422),
        ("FAILURE", 422),
        ("FAILURE", 422),
    ]
    assert len(await rows(env, "SELECT id FROM voices")) == 1


async def test_global_voice_import_with_reference(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    objects = env.runtime.objects
    async with env.client(await env.key(user="usr_root", roles=["super_admin"])) as root:
        created = ok(
            await root.post(
                "/admin/voices/global",
                files=[
                    *global_form(
                        "Narrator",
                        license_type="term",
                        license_expires_at="2035-01-01T00:00:00Z",
                    ),
                    ("reference", ("narrator.wav", reference_wav(10.0), "audio/wav")),
                ],
            ),
            201,
        )
        assert created["relay_voice"] is None
        assert created["preflight"]["passed"] is True
        assert created["license"]["license_expires_at"] == "2035-01-01T00:00:00.000Z"
        voice = await deps_of(env.runtime).voices.get(created["voice_id"])
        assert voice is not None
        assert voice.reference_key == f"scaispeak/voices/{voice.id}/reference.wav"
        stored = await objects.get(voice.reference_key)
        assert voice.reference_sha256 is not None and len(stored) > 24000 * 2 * 9

        short = await root.post(
            "/admin/voices/global",
            files=[
                *global_form("Too short", relay_voice="alloy"),
                ("reference", ("short.wav", reference_wav(3.0), "audio/wav")),
            ],
        )
        err = error(short, 422, "SCAISPEAK_VOICE_PREFLIGHT_FAILED")
        assert "duration_below_minimum" in err["preflight"]["fail_reasons"]
    assert [r["display_name"] for r in await rows(env, "SELECT display_name FROM voices")] == [
        "Narrator"
    ]
