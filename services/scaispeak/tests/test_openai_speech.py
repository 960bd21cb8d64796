"""The OpenAI-compatible speech and voice routes (scaispeak.md §6) driven by the official
``openai`` SDK against the real dev node (A) and its relay API (B)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import av
import httpx
import openai
import pytest
from openai import AsyncOpenAI

from scaicommon.ids import new_id
from scaicommon.testing import S3Endpoint
from scaicommon.testing.wer import word_error_rate
from scaidevstack.node.testing import NodeProcess

from .conftest import SpeakEnv, running_speak, with_node
from .test_speak import (
    TEXT,
    cloned_voice,
    container_duration_ms,
    global_voice,
    rows,
    tenant,
    transcribe,
)


def sdk(env: SpeakEnv, key: str) -> AsyncOpenAI:
    """The official SDK pointed at ScaiSpeak's OpenAI-compatible base URL."""
    return AsyncOpenAI(base_url=f"{env.mount}/v1", api_key=key, max_retries=0, timeout=120)


@pytest.fixture
async def default_voice_env(
    pg_dsn: str, redis_url: str, s3_endpoint: S3Endpoint, tts_node: NodeProcess
) -> AsyncIterator[tuple[SpeakEnv, str]]:
    """ScaiSpeak whose ``SCAISPEAK_OPENAI_DEFAULT_VOICE`` names a global voice of its own."""
    voice_id = new_id("voice")
    settings = {**with_node(tts_node), "openai_default_voice": voice_id}
    async with running_speak(pg_dsn, redis_url, s3_endpoint, **settings) as env:
        await global_voice(env, voice_id=voice_id)
        yield env, voice_id


async def test_sdk_speech_returns_playable_audio(
    speak_with_node: SpeakEnv, tts_node: NodeProcess, tmp_path: Path
) -> None:
    env = speak_with_node
    tnt = tenant()
    voice_id = await cloned_voice(env, tnt)
    key = await env.key(tenant=tnt)
    client = sdk(env, key)
    speech = await client.audio.speech.create(
        model="tts-1", voice=voice_id, input=TEXT, response_format="mp3"
    )
    audio = speech.content
    assert speech.response.headers["content-type"] == "audio/mpeg"
    assert speech.response.headers["x-scaispeak-job-id"].startswith("job_")
    assert speech.response.headers["x-scaispeak-backend"] == "B"  # the tenant default
    assert container_duration_ms(audio) > 2000
    assert word_error_rate(TEXT, await transcribe(tts_node, audio)) <= 0.10
    target = tmp_path / "morning.wav"
    async with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice=voice_id,
        input=TEXT,
        response_format="wav",
        extra_body={"backend_preference": "prefer_self_hosted"},
    ) as streamed:
        assert streamed.headers["x-scaispeak-backend"] == "A"
        assert streamed.headers.get("transfer-encoding") == "chunked"
        await streamed.stream_to_file(target)
    wav = target.read_bytes()
    assert word_error_rate(TEXT, await transcribe(tts_node, wav)) <= 0.10
    job_id = speech.response.headers["x-scaispeak-job-id"]
    [job] = await rows(env, "SELECT * FROM synth_jobs WHERE id = %s", job_id)
    assert (job["mode"], job["source"], job["status"]) == ("inline", "openai", "completed")
    assert job["audio_duration_ms"] > 2000
    usage = await rows(env, "SELECT * FROM usage_records WHERE tenant_id = %s", tnt)
    assert sorted((u["operation"], u["backend"], u["units"]) for u in usage) == [
        ("speak.openai", "A", len(TEXT)),
        ("speak.openai", "B", len(TEXT)),
    ]
    audits = await rows(
        env,
        "SELECT status FROM audit_log WHERE action = 'scaispeak.speech.create' AND tenant_id = %s",
        tnt,
    )
    assert [a["status"] for a in audits] == ["SUCCESS", "SUCCESS"]


@pytest.mark.parametrize(("fmt", "rate"), [("aac", 24000), ("opus", 48000), ("flac", 24000)])
async def test_sdk_formats_decode(speak_with_node: SpeakEnv, fmt: str, rate: int) -> None:
    env = speak_with_node
    voice_id = await global_voice(env)
    client = sdk(env, await env.key(tenant=tenant()))
    speech = await client.audio.speech.create(
        model="scaispeak",
        voice=voice_id,
        input=TEXT,
        response_format=fmt,  # type: ignore[arg-type]
    )
    with av.open(io.BytesIO(speech.content)) as container:
        stream = container.streams.audio[0]
        assert (stream.sample_rate, stream.channels) == (rate, 1)
    assert container_duration_ms(speech.content) > 2000


async def test_pcm_is_24khz_raw(speak_with_node: SpeakEnv) -> None:
    env = speak_with_node
    voice_id = await global_voice(env)
    client = sdk(env, await env.key(tenant=tenant()))
    speech = await client.audio.speech.create(
        model="tts-1", voice=voice_id, input=TEXT, response_format="pcm", speed=1.5
    )
    plain = await client.audio.speech.create(
        model="tts-1", voice=voice_id, input=TEXT, response_format="pcm"
    )
    assert speech.response.headers["content-type"].startswith("audio/pcm; rate=24000")
    fast_ms = len(speech.content) // 2 * 1000 // 24000
    plain_ms = len(plain.content) // 2 * 1000 // 24000
    assert plain_ms > 2000
    assert fast_ms < plain_ms * 0.8  # speed reaches the backend


async def test_voice_by_global_name_and_stock_default(
    default_voice_env: tuple[SpeakEnv, str],
) -> None:
    env, default_id = default_voice_env
    named = await global_voice(env)
    [row] = await rows(env, "SELECT display_name FROM voices WHERE id = %s", named)
    client = sdk(env, await env.key(tenant=tenant()))
    by_name = await client.audio.speech.create(
        model="tts-1", voice=row["display_name"].upper(), input=TEXT, response_format="pcm"
    )
    stock = await client.audio.speech.create(
        model="tts-1", voice="alloy", input=TEXT, response_format="pcm"
    )
    jobs = {
        r["id"]: r["voice_id"]
        for r in await rows(env, "SELECT id, voice_id FROM synth_jobs WHERE source = 'openai'")
    }
    assert jobs[by_name.response.headers["x-scaispeak-job-id"]] == named
    assert jobs[stock.response.headers["x-scaispeak-job-id"]] == default_id
    with pytest.raises(openai.NotFoundError) as missing:
        await client.audio.speech.create(model="tts-1", voice="Nobody", input=TEXT)
    assert missing.value.body == {
        "message": "no voice named 'Nobody'",
        "type": "not_found_error",
        "param": None,
        "code": "SCAISPEAK_VOICE_NOT_FOUND",
    }


async def test_errors_in_openai_shape(speak_with_node: SpeakEnv) -> None:
    env = speak_with_node
    voice_id = await global_voice(env)
    key = await env.key(tenant=tenant())
    client = sdk(env, key)
    with pytest.raises(openai.BadRequestError) as sse:
        await client.audio.speech.create(
            model="tts-1", voice=voice_id, input=TEXT, stream_format="sse"
        )
    assert sse.value.status_code == 400
    assert sse.value.body["code"] == "VALIDATION_ERROR"  # type: ignore[index]
    assert sse.value.body["param"] == "stream_format"  # type: ignore[index]
    assert sse.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(openai.UnprocessableEntityError) as long:
        await client.audio.speech.create(model="tts-1", voice=voice_id, input="a" * 4097)
    assert long.value.body["code"] == "SCAISPEAK_TEXT_TOO_LONG"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as blank:
        await client.audio.speech.create(model="tts-1", voice=voice_id, input="   ")
    assert blank.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        await sdk(env, "sgk_" + "x" * 40).audio.speech.create(
            model="tts-1", voice=voice_id, input=TEXT
        )
    async with httpx.AsyncClient(base_url=f"{env.mount}/v1", timeout=60) as raw:
        answer = await raw.post(
            "/audio/speech",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "tts-1", "voice": voice_id, "input": TEXT, "colour": "blue"},
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "colour"


async def test_voice_list(speak_with_node: SpeakEnv) -> None:
    env = speak_with_node
    tnt = tenant()
    mine = await cloned_voice(env, tnt)
    shared = await cloned_voice(env, tnt, "usr_other", scope="tenant")
    hidden = await cloned_voice(env, tnt, "usr_other")
    pending = await cloned_voice(env, tnt, embedding_status="processing")
    known_global = await global_voice(env)
    key = await env.key(tenant=tnt, permissions=["scaispeak:voice.read"])
    async with httpx.AsyncClient(base_url=f"{env.mount}/v1", timeout=60) as raw:
        answer = await raw.get("/audio/voices", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "list"
    ids = [v["id"] for v in body["data"]]
    assert ids[:2] == [mine, shared]
    assert known_global in ids and hidden not in ids and pending not in ids
    first = body["data"][0]
    assert first == {
        "id": mine,
        "object": "voice",
        "name": first["name"],
        "scope": "user",
        "kind": "cloned",
        "language_primary": "en",
        "language_supported": [],
        "gender_hint": "unspecified",
    }
    [audit] = await rows(
        env,
        "SELECT details FROM audit_log WHERE action = 'scaispeak.voice.list' AND tenant_id = %s",
        tnt,
    )
    assert audit["details"]["count"] == len(ids)


async def test_client_leaving_mid_stream_is_recorded(speak_with_node: SpeakEnv) -> None:
    env = speak_with_node
    tnt = tenant()
    voice_id = await global_voice(env)
    key = await env.key(tenant=tnt)
    long_read = " ".join([TEXT] * 30)
    async with (
        httpx.AsyncClient(base_url=f"{env.mount}/v1", timeout=60) as raw,
        raw.stream(
            "POST",
            "/audio/speech",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": "tts-1",
                "voice": voice_id,
                "input": long_read,
                "response_format": "pcm",
            },
        ) as answer,
    ):
        assert answer.status_code == 200
        job_id = answer.headers["x-scaispeak-job-id"]
        async for chunk in answer.aiter_raw():
            assert chunk
            break
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        [job] = await rows(env, "SELECT * FROM synth_jobs WHERE id = %s", job_id)
        if job["status"] != "running":
            break
        assert loop.time() < deadline, job
        await asyncio.sleep(0.1)
    assert (job["status"], job["status_reason"]) == ("failed", "internal error")
    usage = await rows(env, "SELECT * FROM usage_records WHERE job_id = %s", job_id)
    assert [(u["operation"], u["status"]) for u in usage] == [("speak.openai", "failure")]
    assert usage[0]["units"] < len(long_read)
    audits = await rows(env, "SELECT status FROM audit_log WHERE resource_id = %s", job_id)
    assert [a["status"] for a in audits] == ["FAILURE"]
