"""The relay client (platform §8) against a real HTTP server.

A tiny in-test Starlette app stands in for an external OpenAI-shaped relay where a test needs
a given status or body; the transcription and speech round trips against the dev node's relay
API live in ``test_node_relay_roundtrip`` (they need ``scaidevstack node``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from scaicommon.metrics import ServiceMetrics
from scaicommon.relay import (
    RelayCircuit,
    RelayClient,
    RelayError,
    normalize_language,
    parse_verbose_json,
    speech_voice_reason,
)
from scaicommon.requestid import set_request_id
from scaicommon.testing import free_port
from scaicommon.testing.inloop import serving
from scaicommon.testing.nodes import DevNode, start_nodes
from scaicommon.testing.wer import word_error_rate
from scaidevstack.speechgen import espeak_speech, piper_speech, wav_bytes

KEY = "sk-test-relay-key"
UA = "scaitest/0.0.1 scaicommon/0.1.0"
VERBOSE = {
    "task": "transcribe",
    "language": "english",
    "duration": 1.5,
    "text": " hello world ",
    "segments": [
        {"id": 0, "start": 0.0, "end": 1.2, "text": " hello world", "avg_logprob": -0.25,
         "no_speech_prob": 0.01},
    ],
    "words": [{"word": "hello", "start": 0.0, "end": 0.5}, {"word": "world", "start": 0.6,
                                                              "end": 1.1}],
}  # fmt: skip

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class FakeRelay:
    """Answers from a queue of handlers (the last one repeats) and records every request."""

    base: str = ""
    handlers: list[Handler] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def answer(self, *handlers: Handler) -> None:
        self.handlers = list(handlers)
        self.requests.clear()

    async def dispatch(self, request: Request) -> Response:
        record: dict[str, Any] = {"path": request.url.path, "headers": dict(request.headers)}
        if request.url.path.endswith("/transcriptions"):
            form = await request.form()
            record["form"] = [
                (k, v if isinstance(v, str) else ("file", v.filename, v.content_type))
                for k, v in form.multi_items()
            ]
            record["file"] = [
                await v.read() for _k, v in form.multi_items() if not isinstance(v, str)
            ]
        else:
            record["json"] = await request.json()
        self.requests.append(record)
        handler = self.handlers[0] if len(self.handlers) == 1 else self.handlers.pop(0)
        return await handler(request)


def status(code: int, body: Any = None, headers: dict[str, str] | None = None) -> Handler:
    async def handler(_request: Request) -> Response:
        if isinstance(body, str):
            return PlainTextResponse(body, status_code=code, headers=headers)
        return JSONResponse(body if body is not None else {}, status_code=code, headers=headers)

    return handler


def ok_transcript(body: Any = VERBOSE) -> Handler:
    return status(200, body)


def audio_stream(chunks: list[bytes], *, fail_after: bool = False) -> Handler:
    async def handler(_request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk
                await asyncio.sleep(0.01)
            if fail_after:
                raise RuntimeError("relay broke mid-stream")

        return StreamingResponse(body(), media_type="audio/pcm")

    return handler


@pytest.fixture(scope="module")
async def relay_server() -> AsyncIterator[FakeRelay]:
    fake = FakeRelay()
    app = Starlette(
        routes=[
            Route("/v1/audio/transcriptions", fake.dispatch, methods=["POST"]),
            Route("/v1/audio/speech", fake.dispatch, methods=["POST"]),
        ]
    )
    async with serving(app) as base:
        fake.base = base
        yield fake


def client_for(base: str, **kwargs: Any) -> RelayClient:
    options: dict[str, Any] = {
        "module": "scaitest",
        "base_url": base,
        "api_key": KEY,
        "model": "whisper-1",
        "user_agent": UA,
        "connect_timeout_s": 2.0,
        "read_timeout_s": 5.0,
    }
    options.update(kwargs)
    return RelayClient(**options)


@pytest.fixture
async def relay(relay_server: FakeRelay) -> AsyncIterator[RelayClient]:
    client = client_for(relay_server.base)
    yield client
    await client.aclose()


async def test_transcription_request_shape_and_headers(
    relay: RelayClient, relay_server: FakeRelay
) -> None:
    relay_server.answer(ok_transcript())
    set_request_id("req_0123456789abcdef01234567")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("dispatch") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        result = await relay.transcribe(
            b"RIFFfake", "audio/wav", "wav", language="en", temperature=0.2, prompt="names: Ada"
        )
    seen = relay_server.requests[0]
    headers = seen["headers"]
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["x-request-id"] == "req_0123456789abcdef01234567"
    assert headers["traceparent"].split("-")[1] == trace_id
    assert headers["user-agent"] == UA
    assert not any(h in headers for h in ("x-tenant-id", "x-user-id"))
    assert seen["form"] == [
        ("model", "whisper-1"),
        ("response_format", "verbose_json"),
        ("language", "en"),
        ("temperature", "0.2"),
        ("prompt", "names: Ada"),
        ("timestamp_granularities[]", "segment"),
        ("timestamp_granularities[]", "word"),
        ("file", ("file", "audio.wav", "audio/wav")),
    ]
    assert seen["file"] == [b"RIFFfake"]
    assert result.text == "hello world" and result.language == "en"
    assert result.duration_ms == 1500
    assert [(s.start_ms, s.end_ms, s.text) for s in result.segments] == [(0, 1200, "hello world")]
    assert result.segments[0].confidence == pytest.approx(math.exp(-0.25))
    assert [(w.text, w.start_ms, w.end_ms) for w in result.words] == [
        ("hello", 0, 500),
        ("world", 600, 1100),
    ]


async def test_optional_fields_are_left_out(relay: RelayClient, relay_server: FakeRelay) -> None:
    relay_server.answer(ok_transcript({"text": "hi"}))
    result = await relay.transcribe(b"x", "audio/ogg", ".ogg", word_timestamps=False)
    form = relay_server.requests[0]["form"]
    assert [k for k, _ in form] == [
        "model",
        "response_format",
        "timestamp_granularities[]",
        "file",
    ]
    assert form[2] == ("timestamp_granularities[]", "segment")
    assert form[3][1][1] == "audio.ogg"
    assert result.segments == () and result.words == () and result.duration_ms is None
    assert result.language is None


def test_verbose_json_normalisation() -> None:
    body = {
        "text": "x",
        "language": "German",
        "segments": [
            {"start": 0, "end": 1, "text": "a", "avg_logprob": 0.5},
            {"start": 1, "end": 2, "text": "b"},
        ],
    }
    result = parse_verbose_json(body)
    assert result.language == "de"
    assert result.segments[0].confidence == 1.0  # exp(0.5) clamped
    assert result.segments[1].confidence is None and result.words == ()
    assert normalize_language("en") == "en" and normalize_language("en-US") == "en"
    assert normalize_language("klingon") is None and normalize_language(None) is None
    assert normalize_language("javanese") == "jv" and normalize_language("jw") == "jv"
    with pytest.raises(RelayError) as err:
        parse_verbose_json({"segments": []})
    assert err.value.code == "UPSTREAM_SHAPE_MISMATCH" and err.value.http_status == 502


LONG = "x" * 400
CASES: list[tuple[Handler, str, int, int | None, str | None]] = [
    (status(400, {"error": {"message": "bad language", "type": "invalid_request_error"}}),
     "VALIDATION_ERROR", 422, None, "relay rejected input: bad language"),
    (status(422, {"detail": "file missing"}), "VALIDATION_ERROR", 422, None,
     "relay rejected input: file missing"),
    (status(401, {"error": {"message": "bad key"}}), "BACKEND_ERROR", 502, None, None),
    (status(403, "forbidden"), "BACKEND_ERROR", 502, None, None),
    (status(404, {"error": {"message": "model nope"}}), "BACKEND_ERROR", 502, None, None),
    (status(408, "slow"), "BACKEND_TIMEOUT", 504, None, None),
    (status(504, "gateway"), "BACKEND_TIMEOUT", 504, None, None),
    (status(413, "too big"), "PAYLOAD_TOO_LARGE", 413, None, None),
    (status(429, {"error": {"message": "slow down"}}, {"retry-after": "7"}),
     "BACKEND_RATE_LIMITED", 429, 7, None),
    (status(429, "x", {"retry-after-ms": "8500"}), "BACKEND_RATE_LIMITED", 429, 9, None),
    (status(429, "x"), "BACKEND_RATE_LIMITED", 429, None, None),
    (status(500, "boom"), "BACKEND_ERROR", 502, None, None),
    (status(502, "boom"), "BACKEND_ERROR", 502, None, None),
    (status(503, "boom"), "BACKEND_ERROR", 502, None, None),
    (status(200, "not json"), "UPSTREAM_SHAPE_MISMATCH", 502, None, None),
    (status(200, {"segments": []}), "UPSTREAM_SHAPE_MISMATCH", 502, None, None),
]  # fmt: skip


@pytest.mark.parametrize(("handler", "code", "http", "retry_after", "message"), CASES)
async def test_error_mapping(
    relay_server: FakeRelay,
    handler: Handler,
    code: str,
    http: int,
    retry_after: int | None,
    message: str | None,
) -> None:
    # A fresh client per case: earlier failures must not open this one's circuit.
    client = client_for(relay_server.base)
    relay_server.answer(handler)
    try:
        with pytest.raises(RelayError) as err:
            await client.transcribe(b"x", "audio/wav", "wav")
    finally:
        await client.aclose()
    assert err.value.code == code and err.value.http_status == http
    if retry_after is not None:
        assert err.value.retry_after == retry_after
    elif code == "BACKEND_RATE_LIMITED":
        assert err.value.retry_after == 1
    if message is not None:
        assert err.value.message == message


async def test_relay_messages_are_shortened_and_scrubbed(
    relay: RelayClient, relay_server: FakeRelay
) -> None:
    leak = f"key Bearer {KEY} rejected {LONG}"
    relay_server.answer(status(400, {"error": {"message": leak}}))
    with pytest.raises(RelayError) as err:
        await relay.transcribe(b"x", "audio/wav", "wav")
    text = err.value.message.removeprefix("relay rejected input: ")
    assert KEY not in text and "[REDACTED]" in text and len(text) == 300


async def test_connect_and_tls_errors_are_backend_unavailable(relay_server: FakeRelay) -> None:
    closed = client_for(f"http://127.0.0.1:{free_port()}")
    tls = client_for(relay_server.base.replace("http://", "https://"))
    try:
        for client in (closed, tls):
            with pytest.raises(RelayError) as err:
                await client.transcribe(b"x", "audio/wav", "wav")
            assert err.value.code == "SCAITEST_BACKEND_UNAVAILABLE", err.value.message
            assert err.value.kind == "connect" and err.value.failover_eligible
            assert client.circuit.failures == 2  # tried, then retried once
    finally:
        await closed.aclose()
        await tls.aclose()


async def test_client_timeout_is_backend_timeout(relay_server: FakeRelay) -> None:
    async def slow(_request: Request) -> Response:
        await asyncio.sleep(1.0)
        return JSONResponse(VERBOSE)

    relay_server.answer(slow)
    client = client_for(relay_server.base, read_timeout_s=0.2)
    try:
        with pytest.raises(RelayError) as err:
            await client.transcribe(b"x", "audio/wav", "wav")
    finally:
        await client.aclose()
    assert err.value.code == "BACKEND_TIMEOUT" and len(relay_server.requests) == 1


async def test_transcription_retries_once(relay: RelayClient, relay_server: FakeRelay) -> None:
    relay_server.answer(status(503, "busy"), ok_transcript())
    assert (await relay.transcribe(b"x", "audio/wav", "wav")).text == "hello world"
    assert len(relay_server.requests) == 2

    relay_server.answer(status(500, "down"))
    with pytest.raises(RelayError):
        await relay.transcribe(b"x", "audio/wav", "wav")
    assert len(relay_server.requests) == 2  # one retry only

    relay_server.answer(status(429, "x", {"retry-after": "1"}), ok_transcript())
    assert (await relay.transcribe(b"x", "audio/wav", "wav")).text == "hello world"
    assert len(relay_server.requests) == 2

    for handler in (status(429, "x", {"retry-after": "6"}), status(400, "no"), status(401, "no")):
        relay_server.answer(handler)
        with pytest.raises(RelayError):
            await relay.transcribe(b"x", "audio/wav", "wav")
        assert len(relay_server.requests) == 1


async def test_speech_streams_and_sends_the_extension_fields(
    relay: RelayClient, relay_server: FakeRelay
) -> None:
    chunks = [b"\x01\x02" * 100, b"\x03\x04" * 100, b"\x05\x06" * 50]
    relay_server.answer(audio_stream(chunks))
    set_request_id("req_speech0000000000000000001")
    got = [
        c
        async for c in relay.speech(
            "Hello there.",
            "voice_01ABC",
            speed=1.25,
            instructions="calm",
            reference_wav_b64=b"RIFFref",
            reference_text="ref words",
        )
    ]
    assert b"".join(got) == b"".join(chunks)
    seen = relay_server.requests[0]
    assert seen["json"] == {
        "model": "whisper-1",
        "input": "Hello there.",
        "voice": "voice_01ABC",
        "response_format": "pcm",
        "speed": 1.25,
        "instructions": "calm",
        "reference_audio_base64": "UklGRnJlZg==",
        "reference_text": "ref words",
    }
    assert seen["headers"]["x-request-id"] == "req_speech0000000000000000001"
    assert seen["headers"]["authorization"] == f"Bearer {KEY}"

    relay_server.answer(audio_stream([b"ab"]))
    assert [c async for c in relay.speech("x", "alloy", speed=1.0)] == [b"ab"]
    assert relay_server.requests[0]["json"] == {
        "model": "whisper-1",
        "input": "x",
        "voice": "alloy",
        "response_format": "pcm",
    }


async def test_speech_retries_only_before_the_first_byte(
    relay: RelayClient, relay_server: FakeRelay
) -> None:
    relay_server.answer(status(502, "flaky"), audio_stream([b"ok"]))
    assert [c async for c in relay.speech("x", "alloy")] == [b"ok"]
    assert len(relay_server.requests) == 2

    relay_server.answer(audio_stream([b"partial"], fail_after=True))
    got: list[bytes] = []
    with pytest.raises(RelayError) as err:
        async for chunk in relay.speech("x", "alloy"):
            got.append(chunk)
    assert got == [b"partial"] and err.value.code == "BACKEND_ERROR"
    assert len(relay_server.requests) == 1

    relay_server.answer(status(429, {"error": {"message": "later"}}, {"retry-after": "30"}))
    with pytest.raises(RelayError) as err:
        async for _ in relay.speech("x", "alloy"):
            pass
    assert err.value.code == "BACKEND_RATE_LIMITED" and err.value.retry_after == 30
    assert len(relay_server.requests) == 1


async def test_circuit_opens_after_three_failures_and_probes_after_cooldown(
    relay_server: FakeRelay,
) -> None:
    client = client_for(relay_server.base, failure_threshold=3, cooldown_s=0.5)
    try:
        relay_server.answer(status(401, "bad key"))
        for _ in range(3):
            assert client.usable() is None and client.readiness() == ("ok", None)
            with pytest.raises(RelayError):
                await client.transcribe(b"x", "audio/wav", "wav")
        assert client.usable() == "relay_unhealthy"
        assert client.readiness()[0] == "error"
        calls = len(relay_server.requests)
        with pytest.raises(RelayError) as err:
            await client.transcribe(b"x", "audio/wav", "wav")
        assert err.value.code == "SCAITEST_BACKEND_UNAVAILABLE" and err.value.kind == "circuit"
        assert len(relay_server.requests) == calls  # refused without calling the relay

        await asyncio.sleep(0.55)
        assert client.usable() is None and client.circuit.state == "half_open"
        relay_server.answer(status(500, "still down"))
        with pytest.raises(RelayError):
            await client.transcribe(b"x", "audio/wav", "wav")
        assert len(relay_server.requests) == 1  # the probe; its retry is refused
        assert client.usable() == "relay_unhealthy"

        await asyncio.sleep(0.55)
        relay_server.answer(ok_transcript())
        assert (await client.transcribe(b"x", "audio/wav", "wav")).text == "hello world"
        closed: str = client.circuit.state
        assert closed == "closed" and client.usable() is None
    finally:
        await client.aclose()


def test_circuit_lets_one_probe_through() -> None:
    now = [0.0]
    circuit = RelayCircuit(2, 10.0, clock=lambda: now[0])
    circuit.failure()
    assert circuit.state == "closed"
    circuit.failure()
    assert circuit.is_open and not circuit.acquire()
    now[0] = 10.5
    assert circuit.acquire()  # the probe
    assert not circuit.acquire() and circuit.is_open  # others wait for its verdict
    circuit.success()
    assert circuit.acquire() and circuit.state == "closed"


async def test_usable_reasons() -> None:
    unconfigured = client_for("")
    assert unconfigured.usable() == "relay_unconfigured"
    assert unconfigured.usable("relay_no_voice") == "relay_unconfigured"
    assert unconfigured.readiness() == ("unconfigured", "relay base URL or API key not set")
    keyless = client_for("http://127.0.0.1:1", api_key="")
    assert keyless.usable() == "relay_unconfigured"
    configured = client_for("http://127.0.0.1:1")
    assert configured.usable("relay_no_cloning") == "relay_no_cloning"
    assert (
        speech_voice_reason(relay_voice="alloy", has_reference=False, supports_cloning=False)
        is None
    )
    assert (
        speech_voice_reason(relay_voice=None, has_reference=True, supports_cloning=False)
        == "relay_no_cloning"
    )
    assert speech_voice_reason(relay_voice=None, has_reference=True, supports_cloning=True) is None
    assert (
        speech_voice_reason(relay_voice=None, has_reference=False, supports_cloning=True)
        == "relay_no_voice"
    )
    for client in (unconfigured, keyless, configured):
        await client.aclose()


# ----- round trips against the dev node's relay API (a real OpenAI-shaped relay) -----------

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


@pytest.fixture(scope="module")
def relay_node() -> Iterator[DevNode]:
    node = DevNode("node-relay", engines="stt,tts", capacity=1)
    start_nodes([node])
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
async def node_relay(relay_node: DevNode) -> AsyncIterator[RelayClient]:
    client = client_for(
        relay_node.relay_url,
        api_key="sk-devstack",
        read_timeout_s=60.0,
        metrics=ServiceMetrics("scaitest"),
    )
    yield client
    await client.aclose()


def _requests(client: RelayClient, endpoint: str, status: str) -> float:
    assert client.metrics is not None
    value = client.metrics.registry.get_sample_value(
        "scaitest_relay_requests_total", {"endpoint": endpoint, "status": status}
    )
    return value or 0.0


async def test_transcription_round_trip_on_the_node_relay(node_relay: RelayClient) -> None:
    speech = piper_speech(SENTENCE)
    result = await node_relay.transcribe(
        wav_bytes(speech, 16000), "audio/wav", "wav", language="en"
    )
    assert word_error_rate(SENTENCE, result.text) <= 0.15, result.text
    assert result.language == "en"  # the relay said "english"
    assert result.duration_ms == pytest.approx(speech.size * 1000 / 16000, abs=5)
    assert result.segments and result.words and result.duration_ms is not None
    for segment in result.segments:
        assert 0 <= segment.start_ms < segment.end_ms <= result.duration_ms + 50
        assert segment.confidence is None or 0.0 <= segment.confidence <= 1.0
    assert all(w.start_ms <= w.end_ms for w in result.words)
    assert _requests(node_relay, "transcriptions", "200") == 1

    no_words = await node_relay.transcribe(
        wav_bytes(speech, 16000), "audio/wav", "wav", word_timestamps=False
    )
    assert no_words.words == () and no_words.segments

    with pytest.raises(RelayError) as err:
        await node_relay.transcribe(wav_bytes(speech, 16000), "audio/wav", "wav", language="xx")
    assert err.value.code == "VALIDATION_ERROR"
    assert err.value.message.startswith("relay rejected input: ")


async def test_node_relay_refusals_map_to_platform_errors(relay_node: DevNode) -> None:
    wrong_key = client_for(relay_node.relay_url, api_key="sk-wrong", model="tts-1")
    wrong_model = client_for(relay_node.relay_url, api_key="sk-devstack", model="nope-1")
    try:
        # (speech: the node answers a multipart upload's 401 before reading the body and then
        # resets the connection about half the time, so the client sees a ReadError instead)
        with pytest.raises(RelayError) as err:
            async for _ in wrong_key.speech("hi", "alloy"):
                pass
        assert err.value.code == "BACKEND_ERROR" and err.value.status == 401
        assert wrong_key.circuit.failures == 1  # a 401 counts towards the circuit
        with pytest.raises(RelayError) as err:
            await wrong_model.transcribe(b"RIFF", "audio/wav", "wav")
        assert err.value.code == "BACKEND_ERROR" and err.value.status == 404
        assert wrong_model.circuit.failures == 0
    finally:
        await wrong_key.aclose()
        await wrong_model.aclose()


@pytest.fixture
async def node_tts(relay_node: DevNode) -> AsyncIterator[RelayClient]:
    client = client_for(
        relay_node.relay_url, api_key="sk-devstack", model="gpt-4o-mini-tts", read_timeout_s=60.0
    )
    yield client
    await client.aclose()


async def test_speech_round_trip_on_the_node_relay(
    node_relay: RelayClient, node_tts: RelayClient
) -> None:
    chunks = [c async for c in node_tts.speech(SENTENCE, "alloy")]
    assert len(chunks) >= 2  # streamed, not one body
    pcm = b"".join(chunks)
    assert len(pcm) % 2 == 0
    audio = np.frombuffer(pcm, dtype="<i2")
    assert 1.5 < audio.size / 24_000 < 10
    heard = await node_relay.transcribe(wav_bytes(audio, 24_000), "audio/wav", "wav")
    assert word_error_rate(SENTENCE, heard.text) <= 0.2, heard.text

    # Cloning extension: a voice_… id with its reference clip (24 kHz mono WAV), then cached.
    reference = wav_bytes(espeak_speech("This is my reference voice for cloning.", 24_000), 24_000)
    cloned = [
        c
        async for c in node_tts.speech(
            "Hello from a cloned voice.",
            "voice_TEST01",
            reference_wav_b64=reference,
            reference_text="This is my reference voice for cloning.",
        )
    ]
    assert sum(len(c) for c in cloned) > 24_000  # more than 0.5 s of audio
    again = [c async for c in node_tts.speech("Cached now.", "voice_TEST01")]
    assert again


async def test_node_relay_capacity_is_retried_once(node_relay: RelayClient) -> None:
    # Capacity 1: two concurrent transcriptions; the loser gets 429 + Retry-After and is
    # retried exactly once (it succeeds when the winner has finished by then).
    speech = wav_bytes(np.tile(piper_speech(SENTENCE), 2), 16000)
    results = await asyncio.gather(
        node_relay.transcribe(speech, "audio/wav", "wav", language="en"),
        node_relay.transcribe(speech, "audio/wav", "wav", language="en"),
        return_exceptions=True,
    )
    done = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert done and all(word_error_rate(f"{SENTENCE} {SENTENCE}", r.text) <= 0.2 for r in done)
    limited = _requests(node_relay, "transcriptions", "429")
    assert limited in (1, 2)
    assert limited + _requests(node_relay, "transcriptions", "200") == 3  # loser: two requests
    if failed:
        assert isinstance(failed[0], RelayError) and failed[0].code == "BACKEND_RATE_LIMITED"
        assert failed[0].retry_after is not None and failed[0].retry_after >= 1
    assert node_relay.circuit.state == "closed"  # 429 is not a circuit failure
