"""``POST /speak`` and voice preview end to end (scaispeak.md §3, §4, §7.13): the real dev node
as backend A and its relay API as backend B, real Postgres, Redis and S3. The audio that comes
back is decoded with PyAV and transcribed by the dev node's speech-to-text."""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import secrets
from typing import Any

import av
import httpx
import numpy as np
import pytest
from psycopg.rows import dict_row

from scaicommon.audio import Pcm, decode_pcm16, wav_bytes
from scaicommon.ids import new_id
from scaicommon.testing import S3Endpoint, free_port
from scaicommon.testing.wer import word_error_rate
from scaicommon.usage import UsageSubject
from scaidevstack.node.testing import NodeProcess
from scaidevstack.speechgen import piper_speech
from scaispeak.deps import deps_of
from scaispeak.dispatch import split_text
from scaispeak.routes.speak import wants_raw_audio
from scaispeak.store.blocklist import BlocklistStore, NewBlocklistEntry
from scaispeak.store.voices import NewVoice

from .conftest import RELAY_KEY, SpeakEnv, running_speak, with_node

TEXT = "The weather today is sunny and warm, with a light breeze coming from the west."
REFERENCE_TEXT = (
    "The morning train leaves the station at half past seven. Please bring your ticket and "
    "a warm coat, and something to read on the way."
)
ADMIN = "scaispeak:admin"


# ----- helpers (also used by the job and OpenAI tests) ----------------------------------


@functools.cache
def reference_wav() -> bytes:
    """A 24 kHz mono PCM16 WAV of piper speech (about 8 s), like HC2's stored references."""
    audio: np.ndarray = piper_speech(REFERENCE_TEXT, 24000)
    return wav_bytes(Pcm(audio.astype(np.int16).tobytes(), 24000))


async def cloned_voice(
    env: SpeakEnv, tenant: str, user: str = "usr_a", *, scope: str = "user", **fields: Any
) -> str:
    """A ready cloned voice: its reference WAV in S3 and its row, as intake would leave them."""
    voice_id = new_id("voice")
    wav = reference_wav()
    key = env.runtime.objects.key("voices", voice_id, "reference.wav")
    await env.runtime.objects.put(key, wav, content_type="audio/wav")
    await deps_of(env.runtime).voices.insert(
        NewVoice(
            id=voice_id,
            scope=scope,
            kind="cloned",
            tenant_id=tenant,
            owner_user_id=user,
            display_name=f"Clone {voice_id[-6:]}",
            language_primary="en",
            request_id="req_test",
            reference_key=key,
            reference_sha256=hashlib.sha256(wav).hexdigest(),
            reference_text=REFERENCE_TEXT,
            **fields,
        )
    )
    return voice_id


async def global_voice(
    env: SpeakEnv,
    *,
    relay_voice: str | None = "joe",
    license: dict[str, Any] | None = None,
    voice_id: str | None = None,
) -> str:
    """A ready global voice spoken by the relay's built-in ``joe`` (no reference clip)."""
    voice_id = voice_id or new_id("voice")
    await deps_of(env.runtime).voices.insert(
        NewVoice(
            id=voice_id,
            scope="global",
            kind="global",
            tenant_id=None,
            owner_user_id=None,
            display_name=f"Global {secrets.token_hex(4)}",
            language_primary="en",
            request_id="req_test",
            relay_voice=relay_voice,
            license=license or {"licensor_name": "Dev", "license_type": "perpetual"},
        )
    )
    return voice_id


def decode(data: bytes, rate: int = 16000) -> Pcm:
    """Any container PyAV reads, as mono PCM16 at ``rate``."""
    return decode_pcm16(data, sample_rate=rate)


def container_duration_ms(data: bytes) -> int:
    """The decoded length of an encoded file, read frame by frame with PyAV."""
    samples = 0
    rate = 0
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(audio=0):
            samples += frame.samples
            rate = frame.sample_rate
    return samples * 1000 // rate


async def transcribe(node: NodeProcess, audio: bytes) -> str:
    """The dev node's speech-to-text (its relay API) on any audio file."""
    wav = wav_bytes(decode(audio))
    async with httpx.AsyncClient(timeout=120) as client:
        answer = await client.post(
            f"{node.http_url}/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {RELAY_KEY}"},
            files={"file": ("speech.wav", wav, "audio/wav")},
            data={"model": "whisper-1", "response_format": "json"},
        )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["text"])


async def rows(env: SpeakEnv, query: str, *params: Any) -> list[dict[str, Any]]:
    """Rows of a query on the service's schema."""
    async with env.runtime.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return list(await cur.fetchall())


def ok(response: httpx.Response, status: int = 200) -> Any:
    """``data`` of a success envelope."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "ok"
    return body["data"]


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """``error`` of an error envelope with that status and code."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    return body


async def block(env: SpeakEnv, tenant: str, pattern: str) -> str:
    """A substring blocklist entry of ``tenant`` (HE's store)."""
    entry_id = new_id("blk")
    store = BlocklistStore(env.runtime.pool)
    async with env.runtime.pool.connection() as conn:
        await store.insert(
            conn,
            NewBlocklistEntry(
                id=entry_id,
                tenant_id=tenant,
                pattern=pattern,
                match="substring",
                description=None,
                created_by="usr_admin",
                request_id="req_test",
            ),
        )
    return entry_id


def tenant() -> str:
    return "tnt_" + secrets.token_hex(5)


# ----- POST /speak inline ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("preference", "backend"), [("prefer_self_hosted", "A"), ("prefer_relay", "B")]
)
async def test_inline_cloned_voice_transcribes(
    speak_with_node: SpeakEnv, tts_node: NodeProcess, preference: str, backend: str
) -> None:
    env = speak_with_node
    tnt = tenant()
    voice_id = await cloned_voice(env, tnt)
    key = await env.key(tenant=tnt)
    async with env.client(key) as client:
        data = ok(
            await client.post(
                "/speak",
                json={
                    "text": f"  {TEXT}\n",
                    "voice_id": voice_id,
                    "response_format": "wav",
                    "backend_preference": preference,
                },
            )
        )
        job = ok(await client.get(f"/speak/jobs/{data['job_id']}"))
    audio = base64.b64decode(data["audio_base64"])
    assert data["backend_used"] == backend
    assert data["chars"] == len(TEXT)  # code points after trimming
    assert (data["response_format"], data["sample_rate"]) == ("wav", 24000)
    assert data["voice_id"] == voice_id and data["saved_to"] is None
    pcm = decode(audio, 24000)
    assert abs(pcm.duration_ms - data["audio_duration_ms"]) <= 2
    assert word_error_rate(TEXT, await transcribe(tts_node, audio)) <= 0.10
    assert job["mode"] == "inline" and job["status"] == "completed"
    assert job["backend_used"] == backend and job["audio_url"] is None
    assert job["status_reason"] is None and job["error"] is None
    usage = await rows(env, "SELECT * FROM usage_records WHERE job_id = %s", data["job_id"])
    assert [(u["operation"], u["status"], u["unit"], u["units"]) for u in usage] == [
        ("speak.batch", "success", "chars", len(TEXT))
    ]
    assert usage[0]["backend"] == backend
    assert usage[0]["output_audio_ms"] == data["audio_duration_ms"]
    audit = await rows(env, "SELECT * FROM audit_log WHERE resource_id = %s", data["job_id"])
    assert [(a["action"], a["status"]) for a in audit] == [("scaispeak.speech.create", "SUCCESS")]
    if backend == "A":
        warm = await env.runtime.redis.hkeys(f"scai:scaispeak:warm:voice:{tnt}:{voice_id}")
        assert len(warm) == 1


@pytest.mark.parametrize(
    ("fmt", "rate"),
    [
        ("mp3", None),
        ("mp3", 44100),
        ("wav", 16000),
        ("opus", None),
        ("flac", None),
        ("pcm", None),
        ("pcm", 8000),
    ],
)
async def test_every_format_decodes_to_its_duration(
    speak_with_node: SpeakEnv, fmt: str, rate: int | None
) -> None:
    env = speak_with_node
    voice_id = await global_voice(env)
    key = await env.key(tenant=tenant())
    body: dict[str, Any] = {"text": TEXT, "voice_id": voice_id, "response_format": fmt}
    if rate:
        body["sample_rate"] = rate
    async with env.client(key) as client:
        data = ok(await client.post("/speak", json=body))
    audio = base64.b64decode(data["audio_base64"])
    expected_rate = rate or (48000 if fmt == "opus" else 24000)
    assert data["sample_rate"] == expected_rate
    assert data["backend_used"] == "B"
    if fmt == "pcm":
        duration = len(audio) // 2 * 1000 // expected_rate
    else:
        duration = container_duration_ms(audio)
        with av.open(io.BytesIO(audio)) as container:
            assert container.streams.audio[0].sample_rate == expected_rate
            assert container.streams.audio[0].channels == 1
    # Lossy encoders pad to whole frames; the measured length stays within a few frames.
    assert abs(duration - data["audio_duration_ms"]) <= 80, (duration, data["audio_duration_ms"])
    assert data["audio_duration_ms"] > 2000


async def test_raw_audio_when_accept_prefers_audio(speak_with_node: SpeakEnv) -> None:
    env = speak_with_node
    voice_id = await global_voice(env)
    key = await env.key(tenant=tenant())
    body = {"text": TEXT, "voice_id": voice_id, "response_format": "mp3"}
    async with env.client(key) as client:
        raw = await client.post("/speak", json=body, headers={"Accept": "audio/mpeg"})
        wild = await client.post(
            "/speak", json={**body, "response_format": "flac"}, headers={"Accept": "audio/*"}
        )
        json_first = await client.post(
            "/speak", json=body, headers={"Accept": "application/json, audio/*;q=0.5"}
        )
    assert raw.status_code == 200, raw.text
    assert raw.headers["content-type"] == "audio/mpeg"
    assert int(raw.headers["content-length"]) == len(raw.content)
    assert raw.headers["x-scaispeak-backend"] == "B"
    assert raw.headers["x-scaispeak-sample-rate"] == "24000"
    assert raw.headers["x-scaispeak-chars"] == str(len(TEXT))
    assert raw.headers["x-scaispeak-job-id"].startswith("job_")
    assert raw.headers["x-request-id"].startswith("req_")
    assert "x-scaispeak-saved-file-id" not in raw.headers
    duration = container_duration_ms(raw.content)
    assert abs(duration - int(raw.headers["x-scaispeak-audio-duration-ms"])) <= 80
    assert wild.headers["content-type"] == "audio/flac"
    assert container_duration_ms(wild.content) > 2000
    assert json_first.headers["content-type"].startswith("application/json")
    assert json_first.json()["data"]["audio_base64"]


def test_accept_preference_rules() -> None:
    assert wants_raw_audio("audio/wav")
    assert wants_raw_audio("audio/*, application/json;q=0.9")
    assert wants_raw_audio("application/json;q=0.4, audio/ogg")
    assert not wants_raw_audio(None)
    assert not wants_raw_audio("*/*")
    assert not wants_raw_audio("application/json, audio/mpeg")  # a tie goes to the first
    assert not wants_raw_audio("audio/mpeg;q=0, application/json;q=0.1")


async def test_validation_rules(speak_with_node: SpeakEnv) -> None:
    env = speak_with_node
    voice_id = await global_voice(env)
    key = await env.key(tenant=tenant())
    base = {"text": TEXT, "voice_id": voice_id}
    async with env.client(key) as client:
        blank = error(
            await client.post("/speak", json={**base, "text": " \n\t "}), 422, "VALIDATION_ERROR"
        )
        long = error(
            await client.post("/speak", json={**base, "text": "a" * 100_001}),
            422,
            "SCAISPEAK_TEXT_TOO_LONG",
        )
        # Surrounding whitespace does not count.
        fits = await client.post(
            "/speak", json={**base, "text": "  " + "a" * 10 + "  ", "response_format": "pcm"}
        )
        bad = error(
            await client.post(
                "/speak",
                json={
                    **base,
                    "response_format": "opus",
                    "sample_rate": 24000,
                    "speed": 2.5,
                    "cfg_value": 0.1,
                    "warmup_trim_ms": 2001,
                    "instructions": "x" * 1001,
                    "language_hint": "EN",
                    "backend_preference": "fastest",
                },
            ),
            422,
            "VALIDATION_ERROR",
        )
        aac = error(
            await client.post("/speak", json={**base, "response_format": "aac"}),
            422,
            "VALIDATION_ERROR",
        )
        unknown = error(
            await client.post("/speak", json={**base, "voice": "x"}), 422, "VALIDATION_ERROR"
        )
        missing = error(await client.post("/speak", json={"text": TEXT}), 422, "VALIDATION_ERROR")
        bad_save = error(
            await client.post("/speak", json={**base, "save_to": {"share_id": "shr_1"}}),
            422,
            "VALIDATION_ERROR",
        )
        nothing = error(
            await client.post("/speak", json={**base, "voice_id": new_id("voice")}),
            404,
            "SCAISPEAK_VOICE_NOT_FOUND",
        )
    assert [d["field"] for d in blank["details"]] == ["text"]
    assert long["limit"] == 100_000
    assert fits.status_code == 200 and fits.json()["data"]["chars"] == 10
    assert {d["field"] for d in bad["details"]} == {
        "sample_rate",
        "speed",
        "cfg_value",
        "warmup_trim_ms",
        "instructions",
        "language_hint",
        "backend_preference",
    }
    assert [d["field"] for d in aac["details"]] == ["response_format"]
    assert [d["field"] for d in unknown["details"]] == ["voice"]
    assert [d["field"] for d in missing["details"]] == ["voice_id"]
    assert [d["field"] for d in bad_save["details"]] == ["save_to.filename"]
    assert nothing["message"]


async def test_voice_rules_licence_blocklist_and_quota(speak_with_node: SpeakEnv) -> None:
    env = speak_with_node
    tnt = tenant()
    key = await env.key(tenant=tnt)
    expired = await global_voice(
        env,
        license={
            "licensor_name": "Dev",
            "license_type": "term",
            "license_expires_at": "2020-01-01T00:00:00.000Z",
        },
    )
    capped = await global_voice(
        env, license={"licensor_name": "Dev", "license_type": "usage", "license_char_cap": 100}
    )
    other_users = await cloned_voice(env, tnt, "usr_other")
    mine = await cloned_voice(env, tnt)
    entry = await block(env, tnt, "forbidden words")
    async with env.client(key) as client:
        lic = error(
            await client.post("/speak", json={"text": TEXT, "voice_id": expired}),
            403,
            "SCAISPEAK_VOICE_LICENSE_EXPIRED",
        )
        within = ok(await client.post("/speak", json={"text": TEXT, "voice_id": capped}))
        cap = error(
            await client.post("/speak", json={"text": TEXT, "voice_id": capped}),
            403,
            "SCAISPEAK_VOICE_LICENSE_CAP_EXCEEDED",
        )
        hidden = error(
            await client.post("/speak", json={"text": TEXT, "voice_id": other_users}),
            404,
            "SCAISPEAK_VOICE_NOT_FOUND",
        )
        blocked = error(
            await client.post(
                "/speak", json={"text": "Say the FORBIDDEN   words now.", "voice_id": mine}
            ),
            422,
            "SCAISPEAK_TEXT_BLOCKED",
        )
    assert lic["message"] and hidden["message"] and cap["message"]
    assert blocked["blocklist_entry_id"] == entry
    assert within["chars"] == len(TEXT)
    [row] = await rows(env, "SELECT license_chars_used FROM voices WHERE id = %s", capped)
    assert row["license_chars_used"] == len(TEXT)
    failures = await rows(
        env,
        "SELECT error_code, http_status FROM audit_log WHERE action = 'scaispeak.speech.create'"
        " AND tenant_id = %s AND status = 'FAILURE' ORDER BY created_at",
        tnt,
    )
    assert [(f["error_code"], f["http_status"]) for f in failures] == [
        ("SCAISPEAK_VOICE_LICENSE_EXPIRED", 403),
        ("SCAISPEAK_VOICE_LICENSE_CAP_EXCEEDED", 403),
        ("SCAISPEAK_VOICE_NOT_FOUND", 404),
        ("SCAISPEAK_TEXT_BLOCKED", 422),
    ]
    # No dispatch, no usage and no job row for refused requests.
    usage = await rows(env, "SELECT * FROM usage_records WHERE tenant_id = %s", tnt)
    assert len(usage) == 1
    jobs = await rows(env, "SELECT * FROM synth_jobs WHERE tenant_id = %s", tnt)
    assert len(jobs) == 1


async def test_quota_is_checked_before_dispatch(speak_with_node: SpeakEnv) -> None:
    env = speak_with_node
    tnt = tenant()
    voice_id = await global_voice(env)
    key = await env.key(tenant=tnt)
    await deps_of(env.runtime).budgets.set(tnt, None, "month", "chars", len(TEXT) + 5, "usr_admin")
    async with env.client(key) as client:
        ok(await client.post("/speak", json={"text": TEXT, "voice_id": voice_id}))
        over = error(
            await client.post("/speak", json={"text": TEXT, "voice_id": voice_id}),
            429,
            "QUOTA_EXCEEDED",
        )
    assert over["retry_after"] >= 1
    used = await deps_of(env.runtime).usage.used(tnt, None, "month", "chars")
    assert used == len(TEXT)
    assert UsageSubject(tenant_id=tnt, user_id="usr_a").tenant_id == tnt


async def test_backend_unavailable_lists_the_resolution(speak_with_node: SpeakEnv) -> None:
    env = speak_with_node
    tnt = tenant()
    relay_only = await global_voice(env)
    admin = await env.key(tenant=tnt, user="usr_admin", permissions=[ADMIN])
    key = await env.key(tenant=tnt)
    async with env.client(admin) as client:
        ok(
            await client.patch(
                "/admin/policy", json={"allowed_backends": ["A"], "default_backend": "A"}
            )
        )
    async with env.client(key) as client:
        err = error(
            await client.post(
                "/speak",
                json={"text": TEXT, "voice_id": relay_only, "backend_preference": "prefer_relay"},
            ),
            502,
            "SCAISPEAK_BACKEND_UNAVAILABLE",
        )
    assert err["resolution"] == {
        "allowed_backends": ["A"],
        "default_backend": "A",
        "preference": "prefer_relay",
        "candidates": [
            {"backend": "B", "usable": False, "reason": "not_allowed"},
            {"backend": "A", "usable": False, "reason": "no_node"},
        ],
    }


async def test_relay_without_cloning_is_not_usable_for_a_clone(
    pg_dsn: str, redis_url: str, s3_endpoint: S3Endpoint, tts_node: NodeProcess
) -> None:
    settings = {
        **with_node(tts_node, cloning_relay=False),
        "default_allowed_backends": "B",
        "default_backend": "B",
    }
    async with running_speak(pg_dsn, redis_url, s3_endpoint, **settings) as env:
        tnt = tenant()
        voice_id = await cloned_voice(env, tnt)
        key = await env.key(tenant=tnt)
        async with env.client(key) as client:
            err = error(
                await client.post("/speak", json={"text": TEXT, "voice_id": voice_id}),
                502,
                "SCAISPEAK_BACKEND_UNAVAILABLE",
            )
    assert err["resolution"]["candidates"] == [
        {"backend": "B", "usable": False, "reason": "relay_no_cloning"}
    ]


async def test_relay_down_fails_over_to_the_node(
    pg_dsn: str, redis_url: str, s3_endpoint: S3Endpoint, tts_node: NodeProcess
) -> None:
    dead_relay = f"http://127.0.0.1:{free_port()}"
    settings = {**with_node(tts_node), "relay_base_url": dead_relay}
    async with running_speak(pg_dsn, redis_url, s3_endpoint, **settings) as env:
        await env.wait_for_node()
        tnt = tenant()
        voice_id = await cloned_voice(env, tnt)
        key = await env.key(tenant=tnt)
        async with env.client(key) as client:
            data = ok(
                await client.post(
                    "/speak",
                    json={"text": TEXT, "voice_id": voice_id, "response_format": "pcm"},
                )
            )
        usage = await rows(env, "SELECT * FROM usage_records WHERE job_id = %s", data["job_id"])
    assert data["backend_used"] == "A"  # the tenant default is B; its relay refused to connect
    assert [(u["backend"], u["status"]) for u in usage] == [("A", "success")]


async def test_sync_timeout_answers_504(
    pg_dsn: str, redis_url: str, s3_endpoint: S3Endpoint, tts_node: NodeProcess
) -> None:
    settings = {**with_node(tts_node), "sync_timeout_s": 0.05}
    async with running_speak(pg_dsn, redis_url, s3_endpoint, **settings) as env:
        tnt = tenant()
        voice_id = await global_voice(env)
        key = await env.key(tenant=tnt)
        async with env.client(key) as client:
            err = error(
                await client.post("/speak", json={"text": TEXT * 3, "voice_id": voice_id}),
                504,
                "BACKEND_TIMEOUT",
            )
            job = ok(await client.get(f"/speak/jobs/{err['job_id']}"))
    assert (job["status"], job["status_reason"]) == ("failed", "backend timeout")
    assert job["error"]["code"] == "BACKEND_TIMEOUT"


# ----- preview ----------------------------------------------------------------------------


async def test_preview_in_every_body_form(speak_with_node: SpeakEnv, tts_node: NodeProcess) -> None:
    env = speak_with_node
    tnt = tenant()
    voice_id = await cloned_voice(env, tnt)
    key = await env.key(tenant=tnt, permissions=["scaispeak:voice.read"])
    path = f"/voices/{voice_id}/preview"
    async with env.client(key) as client:
        default = ok(await client.post(path, json={}))
        multipart = ok(
            await client.post(
                path,
                files={
                    "text": (None, TEXT),
                    "response_format": (None, "wav"),
                    "ignored": (None, "x"),
                },
            )
        )
        form = ok(
            await client.post(
                path, data={"text": "Short and sweet.", "backend_preference": "prefer_relay"}
            )
        )
        empty = ok(await client.post(path))
        long = error(
            await client.post(path, json={"text": "a" * 301}), 422, "SCAISPEAK_TEXT_TOO_LONG"
        )
        unknown = error(await client.post(path, json={"voice": "x"}), 422, "VALIDATION_ERROR")
        speak = error(
            await client.post("/speak", json={"text": TEXT, "voice_id": voice_id}),
            403,
            "AUTHZ_PERMISSION_DENIED",
        )
    sentence = "Hello! This is a short preview of my voice."
    assert default["chars"] == len(sentence) and default["response_format"] == "mp3"
    assert default["sample_rate"] == 24000 and default["backend_used"] in ("A", "B")
    assert container_duration_ms(base64.b64decode(default["audio_base64"])) > 1000
    assert empty["chars"] == len(sentence)
    wav = base64.b64decode(multipart["audio_base64"])
    assert multipart["chars"] == len(TEXT) and multipart["response_format"] == "wav"
    assert word_error_rate(TEXT, await transcribe(tts_node, wav)) <= 0.10
    assert form["backend_used"] == "B" and form["chars"] == len("Short and sweet.")
    assert long["limit"] == 300
    assert [d["field"] for d in unknown["details"]] == ["voice"]
    assert speak["message"]
    usage = await rows(env, "SELECT operation, units FROM usage_records WHERE tenant_id = %s", tnt)
    assert sorted(u["units"] for u in usage if u["operation"] == "voice.preview") == sorted(
        [len(sentence), len(sentence), len(TEXT), len("Short and sweet.")]
    )
    assert await rows(env, "SELECT * FROM synth_jobs WHERE tenant_id = %s", tnt) == []


# ----- long texts -------------------------------------------------------------------------


def test_split_text_cuts_at_sentence_ends() -> None:
    text = "One two three. Four five six! Seven eight nine? Ten eleven twelve."
    assert split_text(text, 1000) == [text]
    assert split_text(text, 30) == [
        "One two three. Four five six!",
        "Seven eight nine?",
        "Ten eleven twelve.",
    ]
    # A sentence over the limit is cut at whitespace; a run without any is cut hard.
    assert split_text("aaaa bbbb cccc dddd.", 10) == ["aaaa bbbb", "cccc dddd."]
    assert split_text("abcdefghijkl", 5) == ["abcde", "fghij", "kl"]
    long = " ".join(f"Sentence number {i} is here." for i in range(2000))
    pieces = split_text(long, 10_000)
    assert all(len(p) <= 10_000 for p in pieces) and len(pieces) > 1
    assert all(p.endswith(".") for p in pieces)
    assert " ".join(pieces) == long


async def test_long_text_goes_to_the_relay_in_pieces(
    pg_dsn: str, redis_url: str, s3_endpoint: S3Endpoint, tts_node: NodeProcess
) -> None:
    text = f"{TEXT} The forecast for tomorrow looks just as pleasant, so bring your friends along."
    settings = {**with_node(tts_node), "relay_max_input_chars": 90}
    async with running_speak(pg_dsn, redis_url, s3_endpoint, **settings) as env:
        voice_id = await global_voice(env)
        key = await env.key(tenant=tenant())
        async with env.client(key) as client:
            data = ok(
                await client.post(
                    "/speak", json={"text": text, "voice_id": voice_id, "response_format": "wav"}
                )
            )
    audio = base64.b64decode(data["audio_base64"])
    assert data["backend_used"] == "B" and data["chars"] == len(text)
    assert word_error_rate(text, await transcribe(tts_node, audio)) <= 0.10
