"""``POST /transcribe`` and the OpenAI route against a real dev node (A) and its relay API (B)."""

from __future__ import annotations

import functools
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from openai import AsyncOpenAI

from scaicommon.audio import Pcm, encode, wav_bytes
from scaicommon.testing import LocalRedis, S3Endpoint
from scaicommon.testing.wer import word_error_rate
from scaidevstack.speechgen import piper_speech

from .conftest import RELAY_KEY, EchoEnv, running_echo

TEXT = "The quick brown fox jumps over the lazy dog near the quiet river bank."
FORMATS = ("wav", "mp3", "flac", "ogg", "m4a")
MIME = {
    "bin": "application/octet-stream",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "m4a": "audio/mp4",
    "webm": "audio/webm",
}


@functools.cache
def speech() -> Pcm:
    """The test sentence spoken by piper, 16 kHz mono."""
    audio: np.ndarray = piper_speech(TEXT, 16000)
    return Pcm(audio.astype(np.int16).tobytes(), 16000)


@functools.cache
def speech_as(ext: str) -> bytes:
    """The test sentence in container ``ext``."""
    return wav_bytes(speech()) if ext == "wav" else encode(speech(), ext)


@pytest.fixture(scope="module")
def echo(echo_with_node: EchoEnv) -> EchoEnv:
    """ScaiEcho with the dev node (A) and its relay (B)."""
    return echo_with_node


async def post(
    client: httpx.AsyncClient,
    data: bytes,
    *,
    ext: str = "wav",
    mime: str | None = None,
    **fields: str,
) -> httpx.Response:
    files = {"file": (f"clip.{ext}", data, mime or MIME[ext])}
    return await client.post("/transcribe", files=files, data=fields)


async def set_policy(env: EchoEnv, tenant: str, allowed: str, default: str) -> None:
    admin = await env.key(tenant=tenant, user="usr_admin", roles=["tenant_admin"])
    async with env.client(admin) as client:
        r = await client.patch(
            "/tenant-policy", json={"allowed_backends": allowed, "default_backend": default}
        )
        assert r.status_code == 200, r.text


def code_of(response: httpx.Response) -> str:
    body = response.json()
    assert body["status"] == "error", body
    return str(body["error"]["code"])


@pytest.mark.parametrize("ext", FORMATS)
async def test_inline_every_format_on_both_backends(echo: EchoEnv, ext: str) -> None:
    await set_policy(echo, "tnt_formats_a", "AB", "A")
    truth_ms = speech().duration_ms
    for tenant, backend in (("tnt_formats_a", "A"), ("tnt_formats_b", "B")):
        key = await echo.key(tenant=tenant)
        async with echo.client(key) as client:
            r = await post(client, speech_as(ext), ext=ext, language_hint="en")
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert data["backend_used"] == backend
        assert word_error_rate(TEXT, data["transcript"]) <= 0.10, data["transcript"]
        assert abs(data["audio_duration_ms"] - truth_ms) <= 50
        assert data["audio_bytes"] == len(speech_as(ext))
        assert data["job_id"].startswith("job_")
        assert data["language_detected"] == "en"
        assert data["segments"] and data["segments"][0]["id"] == 0


async def test_inline_job_row_usage_and_audit(echo: EchoEnv) -> None:
    key = await echo.key(tenant="tnt_meter", user="usr_meter")
    async with echo.client(key) as client:
        r = await post(client, speech_as("flac"), ext="flac", timestamps="word")
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert "words" in data["segments"][0]
        job = (await client.get(f"/transcribe/jobs/{data['job_id']}")).json()["data"]
    assert job["status"] == "completed"
    assert job["transcript"] == data["transcript"]
    assert job["started_at"] and job["completed_at"]
    with psycopg.connect(echo.dsn, options="-c search_path=scaiecho") as conn:
        usage = conn.execute(
            "SELECT operation, backend, units, status FROM usage_records WHERE job_id = %s",
            (data["job_id"],),
        ).fetchall()
        audit = conn.execute(
            "SELECT action, status FROM audit_log WHERE resource_id = %s", (data["job_id"],)
        ).fetchall()
    assert usage == [("transcribe.batch", "B", data["audio_duration_ms"], "success")]
    assert audit == [("scaiecho.transcription.create", "SUCCESS")]
    async with httpx.AsyncClient() as raw:
        metrics = (await raw.get(f"{echo.base}/metrics")).text
    dispatched = 'scaiecho_dispatch_total{backend="B",operation="transcribe",outcome="success"}'
    assert dispatched in metrics
    assert 'scaiecho_usage_units_total{backend="B",unit="audio_ms"}' in metrics


async def test_lying_content_type_still_transcribes(echo: EchoEnv) -> None:
    key = await echo.key(tenant="tnt_lie")
    async with echo.client(key) as client:
        r = await post(client, speech_as("mp3"), ext="wav", mime="audio/wav")
    assert r.status_code == 200, r.text
    assert word_error_rate(TEXT, r.json()["data"]["transcript"]) <= 0.10


async def test_bad_audio_gets_documented_codes(echo: EchoEnv) -> None:
    key = await echo.key(tenant="tnt_bad")
    async with echo.client(key) as client:
        empty = await post(client, b"")
        noise = await post(client, b"this is not audio at all " * 40, ext="bin", mime="text/plain")
        labelled = await post(client, b"this is not audio at all " * 40, ext="wav")
        truncated = await post(client, speech_as("wav")[:40], ext="wav")
        broken_mp3 = await post(client, speech_as("mp3")[:400], ext="mp3")
        no_file = await client.post("/transcribe", files={"language_hint": (None, "en")})
        not_multipart = await client.post("/transcribe", json={"file": "x"})
    assert (empty.status_code, code_of(empty)) == (422, "VALIDATION_ERROR")
    assert empty.json()["error"]["details"][0]["field"] == "file"
    assert (noise.status_code, code_of(noise)) == (415, "SCAIECHO_AUDIO_FORMAT_UNSUPPORTED")
    assert "audio/wav" in noise.json()["error"]["accepted"]
    # Bytes say nothing, so the label counts: they claim WAV and do not decode as it.
    assert (labelled.status_code, code_of(labelled)) == (422, "SCAIECHO_AUDIO_DECODE_FAILED")
    assert (truncated.status_code, code_of(truncated)) == (422, "SCAIECHO_AUDIO_DECODE_FAILED")
    assert truncated.json()["error"]["job_id"].startswith("job_")
    assert broken_mp3.status_code in (200, 422)  # a few frames may still decode
    assert broken_mp3.status_code < 500
    assert (no_file.status_code, code_of(no_file)) == (422, "VALIDATION_ERROR")
    assert not_multipart.status_code == 415
    assert code_of(not_multipart) == "UNSUPPORTED_MEDIA_TYPE"


async def test_field_validation_lists_every_bad_field(echo: EchoEnv) -> None:
    key = await echo.key(tenant="tnt_fields")
    async with echo.client(key) as client:
        r = await post(
            client,
            speech_as("wav"),
            language_hint="eng",
            temperature="1.5",
            timestamps="chars",
            backend_preference="fastest",
            force_async="maybe",
            unknown_field="ignored",
        )
    assert r.status_code == 422
    fields = {d["field"] for d in r.json()["error"]["details"]}
    assert fields == {"language_hint", "temperature", "timestamps", "backend_preference",
                      "force_async"}  # fmt: skip


async def test_upload_limit_is_413(
    pg_dsn: str, local_redis: LocalRedis, s3_endpoint: S3Endpoint
) -> None:
    async with running_echo(pg_dsn, local_redis.url, s3_endpoint, max_upload_bytes=10_000) as env:
        key = await env.key()
        async with env.client(key) as client:
            r = await post(client, speech_as("wav"))
    assert (r.status_code, code_of(r)) == (413, "PAYLOAD_TOO_LARGE")
    assert r.json()["error"]["max_bytes"] == 10_000


async def test_permissions_and_job_isolation(echo: EchoEnv) -> None:
    owner = await echo.key(tenant="tnt_iso", user="usr_owner")
    colleague = await echo.key(tenant="tnt_iso", user="usr_other")
    stranger = await echo.key(tenant="tnt_elsewhere", user="usr_owner")
    nobody = await echo.key(tenant="tnt_iso", user="usr_none", permissions=())
    async with echo.client(owner) as client:
        r = await post(client, speech_as("wav"))
        job_id = r.json()["data"]["job_id"]
        mine = await client.get("/transcribe/jobs")
    assert [j["job_id"] for j in mine.json()["data"]["items"]] == [job_id]
    assert "transcript" not in mine.json()["data"]["items"][0]
    for key in (colleague, stranger):
        async with echo.client(key) as client:
            got = await client.get(f"/transcribe/jobs/{job_id}")
            deleted = await client.delete(f"/transcribe/jobs/{job_id}")
            listed = await client.get("/transcribe/jobs")
        assert (got.status_code, code_of(got)) == (404, "SCAIECHO_JOB_NOT_FOUND")
        assert deleted.status_code == 404
        assert listed.json()["data"]["items"] == []
    async with echo.client(nobody) as client:
        denied = await post(client, speech_as("wav"))
    assert (denied.status_code, code_of(denied)) == (403, "AUTHZ_PERMISSION_DENIED")
    async with echo.client(owner) as client:
        diarize = await post(client, speech_as("wav"), diarize="true")
        gone = await client.delete(f"/transcribe/jobs/{job_id}")
        after = await client.get(f"/transcribe/jobs/{job_id}")
    assert (diarize.status_code, code_of(diarize)) == (403, "AUTHZ_PERMISSION_DENIED")
    assert gone.json()["data"] == {"job_id": job_id, "deleted": True}
    assert after.status_code == 404


async def test_policy_matrix(
    echo: EchoEnv, pg_dsn: str, local_redis: LocalRedis, s3_endpoint: S3Endpoint
) -> None:
    # AB + prefer_self_hosted with no node (its own Redis: an empty registry) → served by B.
    relay = {"relay_base_url": with_node_relay(echo), "relay_api_key": RELAY_KEY}
    async with running_echo(pg_dsn, local_redis.url, s3_endpoint, **relay) as no_node:
        key = await no_node.key(tenant="tnt_fall")
        async with no_node.client(key) as client:
            r = await post(client, speech_as("wav"), backend_preference="prefer_self_hosted")
        assert r.status_code == 200, r.text
        assert r.json()["data"]["backend_used"] == "B"
        await set_policy(no_node, "tnt_pinned_a", "A", "A")
        key = await no_node.key(tenant="tnt_pinned_a")
        async with no_node.client(key) as client:
            r = await post(client, speech_as("wav"), backend_preference="prefer_relay")
        assert (r.status_code, code_of(r)) == (502, "SCAIECHO_BACKEND_UNAVAILABLE")
        assert r.json()["error"]["resolution"] == {
            "allowed_backends": "A", "default_backend": "A", "preference": "prefer_relay",
            "candidates": [{"backend": "B", "usable": False, "reason": "not_allowed"},
                           {"backend": "A", "usable": False, "reason": "no_node"}],
        }  # fmt: skip
    # B only without relay settings → 502 (deployment misconfigured).
    async with running_echo(
        pg_dsn, local_redis.url, s3_endpoint, default_allowed_backends="B", default_backend="B"
    ) as no_relay:
        key = await no_relay.key(tenant="tnt_pinned_b")
        async with no_relay.client(key) as client:
            r = await post(client, speech_as("wav"))
        assert (r.status_code, code_of(r)) == (502, "SCAIECHO_BACKEND_UNAVAILABLE")
        reasons = [c["reason"] for c in r.json()["error"]["resolution"]["candidates"]]
        assert reasons == ["relay_unconfigured"]
    # A preference outside the allowed set is ignored: B-only tenant asking for A gets B.
    await set_policy(echo, "tnt_only_b", "B", "B")
    key = await echo.key(tenant="tnt_only_b")
    async with echo.client(key) as client:
        r = await post(client, speech_as("wav"), backend_preference="prefer_self_hosted")
    assert r.status_code == 200 and r.json()["data"]["backend_used"] == "B"


def with_node_relay(env: EchoEnv) -> str:
    settings: Any = env.runtime.settings
    return str(settings.relay_base_url)


async def test_quota_exceeded_before_dispatch(echo: EchoEnv) -> None:
    admin = await echo.key(tenant="tnt_quota", user="usr_admin", roles=["tenant_admin"])
    async with echo.client(admin) as client:
        r = await client.put("/admin/budget", json={"period": "month", "audio_seconds_limit": 1})
        assert r.status_code == 200, r.text
        denied = await post(client, speech_as("wav"))
    assert (denied.status_code, code_of(denied)) == (429, "QUOTA_EXCEEDED")
    assert int(denied.headers["retry-after"]) > 0


async def test_openai_sdk(echo: EchoEnv) -> None:
    key = await echo.key(tenant="tnt_sdk")
    client = AsyncOpenAI(api_key=key, base_url=f"{echo.mount}/v1", max_retries=0)
    verbose = await client.audio.transcriptions.create(
        model="whisper-1",
        file=("speech.mp3", speech_as("mp3"), "audio/mpeg"),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert word_error_rate(TEXT, verbose.text) <= 0.10
    assert verbose.language == "english"
    assert verbose.words and verbose.words[0].word
    assert verbose.segments and verbose.segments[0].end > 0
    plain = await client.audio.transcriptions.create(
        model="scaiecho-self-hosted", file=("speech.wav", speech_as("wav")), response_format="text"
    )
    assert word_error_rate(TEXT, str(plain)) <= 0.10
    srt = await client.audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", speech_as("wav")), response_format="srt"
    )
    assert str(srt).startswith("1\n00:00:0")
    models = await client.models.list()
    assert {m.id for m in models.data} == {"whisper-1", "scaiecho-self-hosted", "scaiecho-relay"}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as raw:
        bad = await raw.post(
            f"{echo.mount}/v1/audio/transcriptions",
            files={"file": ("a.wav", speech_as("wav"), "audio/wav")},
            data={"stream": "true"},
        )
        unauth = await raw.post(
            f"{echo.mount}/v1/audio/transcriptions",
            headers={"Authorization": "Bearer nope"},
            files={"file": ("a.wav", speech_as("wav"), "audio/wav")},
        )
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert bad.json()["error"]["code"] == "VALIDATION_ERROR"
    assert unauth.status_code == 401 and unauth.json()["error"]["type"] == "authentication_error"
    assert bad.headers["x-request-id"]
