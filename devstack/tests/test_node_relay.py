"""The node's OpenAI-compatible relay API, driven by the official ``openai`` SDK and httpx.

The node runs transcription and synthesis with capacity 1, so the test can show that the
relay and the gRPC surface share admission slots.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from typing import Any

import av
import grpc
import httpx
import numpy as np
import openai
import pytest

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaicommon.testing.wer import word_error_rate
from scaidevstack.node.audio import decode_container
from scaidevstack.node.testing import NodeProcess, start_node
from scaidevstack.speechgen import espeak_speech, piper_speech, wav_bytes

KEY = "sk-devstack"
TEXT = "The library opens at nine in the morning. Students can borrow up to five books at a time."


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    proc = start_node(engines=("stt", "tts"), capacity=1, node_id="test-node-relay")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(node: NodeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{node.http_url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def http(node: NodeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=node.http_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    ) as c:
        yield c


@pytest.fixture(scope="module")
def speech_wav() -> bytes:
    return wav_bytes(piper_speech(TEXT, rate=22050), 22050)


def transcript_of(http: httpx.Client, audio: bytes, name: str = "audio.wav") -> str:
    answer = http.post(
        "/v1/audio/transcriptions",
        files={"file": (name, audio)},
        data={"model": "whisper-1", "response_format": "json"},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["text"])


def test_sdk_transcription_verbose_json(client: openai.OpenAI, speech_wav: bytes) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=("speech.wav", speech_wav, "audio/wav"),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert word_error_rate(TEXT, result.text) <= 0.10, result.text
    assert result.language == "english"
    assert abs(result.duration - (len(speech_wav) - 44) / 2 / 22050) < 0.05
    assert result.segments and result.words
    previous = 0.0
    for segment in result.segments:
        assert previous <= segment.start <= segment.end
        assert segment.avg_logprob <= 0.0
        previous = segment.end
    assert all(w.start <= w.end for w in result.words)
    assert word_error_rate(TEXT, " ".join(w.word for w in result.words)) <= 0.10


def test_transcription_formats(http: httpx.Client, speech_wav: bytes) -> None:
    def post(fmt: str, **extra: Any) -> httpx.Response:
        answer = http.post(
            "/v1/audio/transcriptions",
            files={"file": ("speech.wav", speech_wav, "audio/wav")},
            data={"model": "whisper-1", "response_format": fmt, **extra},
        )
        assert answer.status_code == 200, answer.text
        return answer

    assert word_error_rate(TEXT, post("json").json()["text"]) <= 0.10
    text = post("text", language="en", temperature="0").text
    assert text.endswith("\n") and word_error_rate(TEXT, text) <= 0.10
    srt = post("srt").text
    assert srt.startswith("1\n00:00:00,") and " --> " in srt
    vtt = post("vtt").text
    assert vtt.startswith("WEBVTT\n\n00:00:00.") and " --> " in vtt
    verbose = post("verbose_json").json()
    assert verbose["task"] == "transcribe" and verbose["segments"] and "words" not in verbose


def test_speech_wav_via_sdk_round_trip(client: openai.OpenAI, http: httpx.Client) -> None:
    response = client.audio.speech.create(
        model="gpt-4o-mini-tts", voice="joe", input=TEXT, response_format="wav"
    )
    data = response.content
    assert data[:4] == b"RIFF"
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.audio[0].sample_rate == 24000
    assert word_error_rate(TEXT, transcript_of(http, data)) <= 0.10


def test_speech_pcm_is_streamed(http: httpx.Client) -> None:
    text = (
        "The morning train was late again. Everyone waited on the cold platform. A man "
        "announced a short delay. Finally the doors opened for all the passengers."
    )
    pieces: list[tuple[float, bytes]] = []
    started = time.perf_counter()
    with http.stream(
        "POST",
        "/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("audio/pcm")
        for piece in response.iter_raw():
            pieces.append((time.perf_counter() - started, piece))
    body = b"".join(p for _, p in pieces)
    assert len(body) % 2 == 0
    first_at, last_at = pieces[0][0], pieces[-1][0]
    print(f"relay pcm: first bytes after {first_at * 1000:.0f} ms, last after {last_at * 1000:.0f}")
    assert first_at < last_at, "audio arrives as it is produced"
    audio = np.frombuffer(body, dtype="<i2")
    assert word_error_rate(text, transcript_of(http, wav_bytes(audio, 24000))) <= 0.10


@pytest.mark.parametrize("fmt", ["mp3", "opus", "flac", "aac"])
def test_speech_encoded_formats(http: httpx.Client, fmt: str) -> None:
    answer = http.post(
        "/v1/audio/speech",
        json={
            "model": "tts-1",
            "voice": "joe",
            "input": "Hello from the relay.",
            "response_format": fmt,
            "speed": 1.2,
        },
    )
    assert answer.status_code == 200, answer.text
    audio = decode_container(answer.content)
    assert 0.5 < audio.size / 16000 < 3.0


def test_speech_cloning_extension(http: httpx.Client) -> None:
    reference = wav_bytes(
        espeak_speech(
            "This is the reference clip of a cloned voice, read slowly and clearly.", rate=24000
        ),
        24000,
    )
    body = {
        "model": "gpt-4o-mini-tts",
        "voice": "voice_relaytest",
        "input": "A cloned voice says hello.",
        "response_format": "wav",
        "reference_audio_base64": base64.b64encode(reference).decode(),
        "reference_text": "This is the reference clip of a cloned voice.",
    }
    first = http.post("/v1/audio/speech", json=body)
    assert first.status_code == 200, first.text
    cached = http.post("/v1/audio/speech", json={k: body[k] for k in ("model", "voice", "input")})
    assert cached.status_code == 200, cached.text
    unknown = http.post(
        "/v1/audio/speech", json={"model": "tts-1", "voice": "voice_nobody", "input": "Hi."}
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "reference_audio_base64"


def test_listings(http: httpx.Client, client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"whisper-1", "gpt-4o-mini-tts", "tts-1"} <= ids
    voices = http.get("/v1/audio/voices").json()["data"]
    assert {"joe", "alloy"} <= {v["id"] for v in voices}


def test_auth_and_error_shapes(node: NodeProcess, http: httpx.Client) -> None:
    with httpx.Client(base_url=node.http_url) as anonymous:
        missing = anonymous.get("/v1/models")
        assert missing.status_code == 401
        assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
        wrong = anonymous.get("/v1/models", headers={"Authorization": "Bearer sk-wrong"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert anonymous.get("/healthz").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{node.http_url}/v1", api_key="sk-wrong").models.list()
    bad_model = http.post("/v1/audio/speech", json={"model": "nope", "voice": "joe", "input": "x"})
    assert bad_model.status_code == 404 and bad_model.json()["error"]["code"] == "model_not_found"
    empty = http.post("/v1/audio/speech", json={"model": "tts-1", "voice": "joe", "input": " "})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "input"
    bad_format = http.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "voice": "joe", "input": "x", "response_format": "ogg"},
    )
    assert bad_format.status_code == 400
    no_file = http.post("/v1/audio/transcriptions", data={"model": "whisper-1"})
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    garbage = http.post(
        "/v1/audio/transcriptions",
        files={"file": ("x.wav", b"definitely not audio" * 20)},
        data={"model": "whisper-1"},
    )
    assert garbage.status_code == 400
    german = http.post(
        "/v1/audio/transcriptions",
        files={"file": ("x.wav", wav_bytes(piper_speech("Hi."), 16000))},
        data={"model": "whisper-1", "language": "de"},
    )
    assert german.status_code == 400 and german.json()["error"]["param"] == "language"


def test_capacity_is_shared_with_grpc(node: NodeProcess, http: httpx.Client) -> None:
    long_text = " ".join(f"Sentence {n} keeps the only synthesis slot busy." for n in range(40))
    with node.channel() as ch:
        stub = node.stub(ch)
        running = stub.Synthesize(
            pb.SynthesizeRequest(text=long_text, voice=pb.VoiceSpec(builtin="joe"))
        )
        assert next(running).HasField("chunk")
        busy = http.post(
            "/v1/audio/speech", json={"model": "tts-1", "voice": "joe", "input": "Hello."}
        )
        assert busy.status_code == 429
        assert busy.json()["error"]["type"] == "rate_limit_error"
        assert int(busy.headers["Retry-After"]) >= 1 and int(busy.headers["retry-after-ms"]) > 0
        running.cancel()
        with pytest.raises(grpc.RpcError):
            list(running)
        deadline = time.monotonic() + 2
        while stub.GetNodeInfo(pb.GetNodeInfoRequest()).inflight:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    ok = http.post("/v1/audio/speech", json={"model": "tts-1", "voice": "joe", "input": "Hello."})
    assert ok.status_code == 200
