"""The devstack node as a real process: scaiinfer.proto.md §5 conformance plus quality checks.

One node with every engine serves most tests (module scope). A second node (synthesis only,
capacity 1, ``SCAI_NODE_API_SECRET`` set) covers auth, admission and cancellation; a third
(speaker only) covers restarts and draining.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaicommon.testing.wer import normalise_words, word_error_rate
from scaidevstack.node.testing import NodeProcess, error_code, start_node, trailing
from scaidevstack.speechgen import espeak_speech, piper_speech, silence

S = grpc.StatusCode
RATE = 16000
SECRET = "node-test-secret"
AUTH = (("x-api-secret", SECRET),)
TEXT = (
    "The weather today is sunny and warm. Many people are walking in the park with their "
    "dogs. A small child is flying a red kite near the lake."
)
STREAM_FIRST = (
    "Good morning everyone and welcome to the weekly meeting about our new project plans "
    "and the budget for the next year."
)
STREAM_SECOND = "Please send your updates to the team before Friday afternoon."
LONG_TEXT = " ".join(
    f"This is sentence number {n} of a long text that keeps the synthesis engine busy."
    for n in range(1, 31)
)


def pcm_input(audio: np.ndarray, rate: int = RATE) -> pb.AudioInput:
    """Raw PCM16 mono ``AudioInput``."""
    return pb.AudioInput(data=audio.astype("<i2").tobytes(), pcm=pb.PcmSpec(sample_rate_hz=rate))


def expect_error(call: Any, status: grpc.StatusCode, code: str) -> grpc.RpcError:
    """Run ``call`` and check that it fails with ``status`` / ``x-error-code`` ``code``."""
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, bytes):
            list(result)
    err = info.value
    assert err.code() == status, (err.code(), err.details())
    assert error_code(err) == code, trailing(err)
    return err


class Bidi:
    """A bidirectional call fed from a queue; events are read by the test thread."""

    def __init__(self, method: Any, metadata: Any = ()) -> None:
        self.requests: queue.Queue[Any] = queue.Queue()
        self.call = method(iter(self.requests.get, None), metadata=metadata)

    def send(self, message: Any) -> None:
        self.requests.put(message)

    def half_close(self) -> None:
        self.requests.put(None)

    def events(self) -> Iterator[Any]:
        return iter(self.call)


def collect_until_error(call: Any) -> tuple[list[Any], grpc.RpcError]:
    """Events of a stream that must end with an error, and that error."""
    events: list[Any] = []
    with pytest.raises(grpc.RpcError) as info:
        for event in call:
            events.append(event)
    return events, info.value


# ----- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    proc = start_node(node_id="test-node-main")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def channel(node: NodeProcess) -> Iterator[grpc.Channel]:
    ch = node.channel()
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def stub(node: NodeProcess, channel: grpc.Channel) -> Any:
    return node.stub(channel)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """``TEXT`` spoken by piper at 16 kHz."""
    return piper_speech(TEXT)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """Synthesis only, capacity 1, API secret required, 3 s stream idle limit."""
    config = tmp_path_factory.mktemp("node") / "node.toml"
    config.write_text("stream_idle_s = 3.0\n")
    proc = start_node(
        engines=("tts",),
        capacity=1,
        node_id="test-node-limited",
        env={"SCAI_NODE_API_SECRET": SECRET},
        extra_args=["--config", str(config)],
    )
    yield proc
    proc.stop()


def transcribe(stub: Any, audio: np.ndarray, rate: int = RATE, **kwargs: Any) -> Any:
    return stub.Transcribe(pb.TranscribeRequest(audio=pcm_input(audio, rate), **kwargs))


# ----- GetNodeInfo and health ------------------------------------------------------------------


def test_node_info(stub: Any) -> None:
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        info, call = stub.GetNodeInfo.with_call(pb.GetNodeInfoRequest())
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.05, timings
    assert dict(call.initial_metadata())["x-node-id"] == "test-node-main"
    assert info.node_id == "test-node-main"
    assert info.api_version == "scaiinfer.v1"
    kinds = {e.kind: e for e in info.engines}
    assert set(kinds) == {"audio.transcribe", "audio.synthesize", "audio.analyze.pyannote"}
    for engine in info.engines:
        assert f"{engine.kind}:{engine.model}" in info.models_loaded
        assert engine.capacity == 2
        assert engine.inflight == 0
    assert "aux:silero-vad-v6" in info.models_loaded
    assert "diarization" in kinds["audio.transcribe"].capabilities
    assert "streaming" in kinds["audio.synthesize"].capabilities
    assert kinds["audio.synthesize"].builtin_voices
    assert kinds["audio.synthesize"].output_sample_rate_hz == 22050
    assert kinds["audio.analyze.pyannote"].embedding_dims == 256
    assert info.capacity == 6 and info.inflight == 0 and not info.draining
    assert info.started_at_unix_ms > 1_600_000_000_000
    assert info.labels["stream_cpu_share"] == "0.45"
    assert "approximation" in info.labels["tts.cloning"]


def test_health_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "scaiinfer.v1.AudioNode"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=name))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert info.value.code() == S.NOT_FOUND


# ----- Transcribe ------------------------------------------------------------------------------


def test_transcribe_piper_speech(stub: Any, speech: np.ndarray) -> None:
    started = time.perf_counter()
    answer = transcribe(stub, speech, timestamps=pb.TIMESTAMP_GRANULARITY_WORD)
    elapsed = time.perf_counter() - started
    rtf = elapsed / (speech.size / RATE)
    print(f"Transcribe via gRPC: {speech.size / RATE:.1f} s audio, RTF {rtf:.3f}")
    assert word_error_rate(TEXT, answer.text) <= 0.10, answer.text
    assert answer.language == "en"
    assert abs(answer.duration_ms - speech.size * 1000 // RATE) <= 1
    assert answer.text == " ".join(s.text for s in answer.segments)
    previous_end = 0
    for index, segment in enumerate(answer.segments):
        assert segment.index == index
        assert previous_end <= segment.start_ms <= segment.end_ms
        previous_end = segment.end_ms
        assert segment.words
        for word in segment.words:
            assert segment.start_ms <= word.start_ms <= word.end_ms <= segment.end_ms
        assert normalise_words(" ".join(w.text for w in segment.words)) == normalise_words(
            segment.text
        )


def test_transcribe_segment_granularity_has_no_words(stub: Any, speech: np.ndarray) -> None:
    answer = transcribe(stub, speech)
    assert answer.segments and not any(s.words for s in answer.segments)


def test_transcribe_resamples_and_decodes_containers(stub: Any) -> None:
    import av  # noqa: F401  (PyAV decodes the WAV on the node)

    from scaidevstack.speechgen import wav_bytes

    text = (
        "Please close the window before you leave the office, and remember to turn off "
        "all the lights in the meeting room."
    )
    audio_44k = piper_speech(text, rate=44100)
    answer = transcribe(stub, audio_44k, rate=44100)
    assert word_error_rate(text, answer.text) <= 0.10, answer.text
    wav = wav_bytes(piper_speech(text, rate=22050), 22050)
    answer = stub.Transcribe(
        pb.TranscribeRequest(audio=pb.AudioInput(data=wav, media_type="audio/wav"))
    )
    assert word_error_rate(text, answer.text) <= 0.10, answer.text


def test_transcribe_silence_gives_no_text(stub: Any) -> None:
    answer = transcribe(stub, silence(3.0))
    assert answer.text == "" and not answer.segments
    assert answer.duration_ms == 3000


def test_transcribe_errors(stub: Any, speech: np.ndarray) -> None:
    odd = pb.AudioInput(data=b"\x01\x02\x03", pcm=pb.PcmSpec(sample_rate_hz=RATE))
    expect_error(
        lambda: stub.Transcribe(pb.TranscribeRequest(audio=odd)),
        S.INVALID_ARGUMENT,
        "AUDIO_INVALID",
    )
    empty = pb.AudioInput(data=b"", pcm=pb.PcmSpec(sample_rate_hz=RATE))
    expect_error(
        lambda: stub.Transcribe(pb.TranscribeRequest(audio=empty)),
        S.INVALID_ARGUMENT,
        "AUDIO_INVALID",
    )
    stereo = pb.AudioInput(data=b"\0" * 6400, pcm=pb.PcmSpec(sample_rate_hz=RATE, channels=2))
    expect_error(
        lambda: stub.Transcribe(pb.TranscribeRequest(audio=stereo)),
        S.INVALID_ARGUMENT,
        "AUDIO_INVALID",
    )
    expect_error(
        lambda: transcribe(stub, speech[:8000], rate=4000),
        S.INVALID_ARGUMENT,
        "UNSUPPORTED_SAMPLE_RATE",
    )
    expect_error(
        lambda: transcribe(stub, speech, language_hint="de"),
        S.INVALID_ARGUMENT,
        "UNSUPPORTED_LANGUAGE",
    )
    expect_error(
        lambda: transcribe(stub, speech, temperature=1.5), S.INVALID_ARGUMENT, "INVALID_PARAMETER"
    )
    expect_error(
        lambda: transcribe(stub, speech, timestamps=42), S.INVALID_ARGUMENT, "INVALID_PARAMETER"
    )
    expect_error(
        lambda: transcribe(stub, speech, diarize=True), S.INVALID_ARGUMENT, "INVALID_PARAMETER"
    )
    bogus = pb.AudioInput(data=b"\0" * 100, media_type="audio/x-bogus")
    expect_error(
        lambda: stub.Transcribe(pb.TranscribeRequest(audio=bogus)),
        S.INVALID_ARGUMENT,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    garbage = pb.AudioInput(data=b"not a wav file at all" * 10, media_type="audio/wav")
    expect_error(
        lambda: stub.Transcribe(pb.TranscribeRequest(audio=garbage)),
        S.INVALID_ARGUMENT,
        "AUDIO_INVALID",
    )
    too_long = pb.AudioInput(data=b"\0" * (1_800_001 * 16), pcm=pb.PcmSpec(sample_rate_hz=8000))
    expect_error(
        lambda: stub.Transcribe(pb.TranscribeRequest(audio=too_long)),
        S.INVALID_ARGUMENT,
        "AUDIO_TOO_LONG",
    )


# ----- StreamTranscribe ------------------------------------------------------------------------


def _paced_stream(stub: Any, audio: np.ndarray, config: pb.StreamTranscribeConfig) -> list[Any]:
    """Send ``audio`` in 100 ms messages at real-time pace, then CLOSE; return the events."""

    def requests() -> Iterator[pb.StreamTranscribeRequest]:
        yield pb.StreamTranscribeRequest(config=config)
        start = time.monotonic()
        for i, offset in enumerate(range(0, audio.size, 1600)):
            yield pb.StreamTranscribeRequest(audio=audio[offset : offset + 1600].tobytes())
            time.sleep(max(0.0, start + (i + 1) * 0.1 - time.monotonic()))
        yield pb.StreamTranscribeRequest(
            control=pb.StreamControl(action=pb.STREAM_CONTROL_ACTION_CLOSE)
        )

    call = stub.StreamTranscribe(requests())
    events = list(call)
    assert call.code() == S.OK
    return events


def check_segment_rules(updates: list[pb.TranscriptUpdate]) -> dict[str, pb.TranscriptUpdate]:
    """Revisions rise by one per segment, one final per segment, nothing after it."""
    revisions: dict[str, int] = {}
    finals: dict[str, pb.TranscriptUpdate] = {}
    for update in updates:
        assert update.segment_id not in finals, f"update after final: {update}"
        expected = revisions.get(update.segment_id, -1) + 1
        assert update.revision == expected, (update.segment_id, update.revision, expected)
        revisions[update.segment_id] = update.revision
        if update.is_final:
            finals[update.segment_id] = update
    assert set(finals) == set(revisions), "every segment gets exactly one final"
    return finals


def test_stream_transcribe_real_time(stub: Any) -> None:
    audio = np.concatenate(
        [piper_speech(STREAM_FIRST), silence(1.0), piper_speech(STREAM_SECOND), silence(1.5)]
    )
    config = pb.StreamTranscribeConfig(
        partials=True, vad_events=True, timestamps=pb.TIMESTAMP_GRANULARITY_WORD
    )
    events = _paced_stream(stub, audio, config)
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "started" and kinds[-1] == "closed"
    assert events[0].started.sample_rate_hz == RATE and events[0].started.model
    updates = [e.transcript for e in events if e.HasField("transcript")]
    first_final = next(i for i, u in enumerate(updates) if u.is_final)
    assert any(not u.is_final for u in updates[:first_final]), "a partial before the first final"
    finals = check_segment_rules(updates)
    ordered = sorted(finals.values(), key=lambda u: u.start_ms)
    text = " ".join(u.text for u in ordered)
    reference = f"{STREAM_FIRST} {STREAM_SECOND}"
    assert word_error_rate(reference, text) <= 0.10, text
    words = normalise_words(text)
    assert len(words) <= len(normalise_words(reference)) + 1, text
    for left, right in itertools.pairwise(ordered):
        assert left.end_ms <= right.start_ms + 300
        tail, head = normalise_words(left.text)[-2:], normalise_words(right.text)[:2]
        assert tail != head, f"duplicated words across finals: {left.text!r} / {right.text!r}"
    for final in ordered:
        assert final.words and final.language == "en"
        assert not final.from_finalize
    assert "speech_started" in kinds and "utterance_end" in kinds
    closed = events[-1].closed
    assert closed.segments == len(finals)
    assert abs(closed.audio_ms - audio.size * 1000 // RATE) <= 100


def test_stream_transcribe_finalize_and_half_close(stub: Any) -> None:
    text = "The train to the city leaves at nine in the morning."
    audio = piper_speech(text)
    bidi = Bidi(stub.StreamTranscribe)
    bidi.send(pb.StreamTranscribeRequest(config=pb.StreamTranscribeConfig(partials=False)))
    finalize = pb.StreamTranscribeRequest(
        control=pb.StreamControl(action=pb.STREAM_CONTROL_ACTION_FINALIZE)
    )
    bidi.send(finalize)  # nothing pending: no event
    for offset in range(0, audio.size, 8000):  # 500 ms messages; the last one may be short
        bidi.send(pb.StreamTranscribeRequest(audio=audio[offset : offset + 8000].tobytes()))
    bidi.send(finalize)
    events = bidi.events()
    assert next(events).HasField("started")
    final = next(events)
    assert final.HasField("transcript"), final
    assert final.transcript.is_final and final.transcript.from_finalize
    assert word_error_rate(text, final.transcript.text) <= 0.10, final.transcript.text
    bidi.send(pb.StreamTranscribeRequest(audio=silence(0.5).tobytes()))
    bidi.half_close()
    rest = list(events)
    assert [e.WhichOneof("event") for e in rest] == ["closed"]
    assert rest[0].closed.segments == 1
    assert bidi.call.code() == S.OK


def test_stream_transcribe_diarize(stub: Any) -> None:
    joe = piper_speech(
        "My voice is enrolled for the live stream test, and I keep talking for a while."
    )
    stub.EnrollSpeaker(
        pb.EnrollSpeakerRequest(tenant_id="t9", speaker_id="spkr_live", reference=pcm_input(joe))
    )
    audio = np.concatenate(
        [
            piper_speech("This first part is spoken by the enrolled voice of the stream."),
            silence(1.0),
            espeak_speech("And this second part comes from a rather different speaker."),
            silence(1.0),
        ]
    )
    requests = [
        pb.StreamTranscribeRequest(
            config=pb.StreamTranscribeConfig(
                diarize=True, tenant_id="t9", candidate_speaker_ids=["spkr_live"]
            )
        )
    ]
    requests += [
        pb.StreamTranscribeRequest(audio=audio[i : i + 16000].tobytes())
        for i in range(0, audio.size, 16000)
    ]
    events = list(stub.StreamTranscribe(iter(requests)))
    finals = [e.transcript for e in events if e.HasField("transcript") and e.transcript.is_final]
    assert len(finals) == 2, finals
    assert finals[0].speaker.label == "spkr_live" and finals[0].speaker.speaker_id == "spkr_live"
    assert finals[1].speaker.label == "spk_0" and finals[1].speaker.speaker_id == ""
    missing = [
        pb.StreamTranscribeRequest(
            config=pb.StreamTranscribeConfig(
                diarize=True, tenant_id="t9", candidate_speaker_ids=["spkr_gone"]
            )
        )
    ]
    events, err = collect_until_error(stub.StreamTranscribe(iter(missing)))
    assert err.code() == S.FAILED_PRECONDITION and error_code(err) == "SPEAKER_NOT_ENROLLED"
    assert trailing(err)["x-missing-speaker-ids"] == "spkr_gone"
    assert events[0].error.code == "SPEAKER_NOT_ENROLLED"


def test_stream_transcribe_protocol_violations(stub: Any) -> None:
    audio_first = [pb.StreamTranscribeRequest(audio=b"\0" * 3200)]
    events, err = collect_until_error(stub.StreamTranscribe(iter(audio_first)))
    assert err.code() == S.INVALID_ARGUMENT and error_code(err) == "PROTOCOL_VIOLATION"
    assert [e.WhichOneof("event") for e in events] == ["error"]
    assert events[0].error.code == "PROTOCOL_VIOLATION"

    config = pb.StreamTranscribeRequest(config=pb.StreamTranscribeConfig())
    for bad in (
        [config, config],
        [config, pb.StreamTranscribeRequest(audio=b"\0" * 3201)],
        [config, pb.StreamTranscribeRequest(audio=b"\0" * 32_002)],
        [
            config,
            pb.StreamTranscribeRequest(audio=b"\0" * 320),
            pb.StreamTranscribeRequest(audio=b"\0" * 3200),
        ],
    ):
        events, err = collect_until_error(stub.StreamTranscribe(iter(bad)))
        assert error_code(err) == "PROTOCOL_VIOLATION", bad
        assert events[0].HasField("started") and events[-1].error.code == "PROTOCOL_VIOLATION"

    wrong_rate = [pb.StreamTranscribeRequest(config=pb.StreamTranscribeConfig(sample_rate_hz=8000))]
    events, err = collect_until_error(stub.StreamTranscribe(iter(wrong_rate)))
    assert err.code() == S.INVALID_ARGUMENT and error_code(err) == "UNSUPPORTED_SAMPLE_RATE"
    assert events[0].error.code == "UNSUPPORTED_SAMPLE_RATE"


# ----- Synthesize ------------------------------------------------------------------------------


def synthesize(stub: Any, text: str, **options: Any) -> tuple[list[Any], Any]:
    voice = options.pop("voice", pb.VoiceSpec(builtin="joe"))
    request = pb.SynthesizeRequest(
        tenant_id="tenant-a", text=text, voice=voice, options=pb.SynthesisOptions(**options)
    )
    messages = list(stub.Synthesize(request))
    chunks = [m.chunk for m in messages if m.HasField("chunk")]
    assert [m.WhichOneof("payload") for m in messages] == ["chunk"] * len(chunks) + ["stats"]
    return chunks, messages[-1].stats


def test_synthesize_chunks_round_trip(stub: Any) -> None:
    started = time.perf_counter()
    request = pb.SynthesizeRequest(
        tenant_id="tenant-a",
        text=TEXT,
        voice=pb.VoiceSpec(builtin="joe"),
        options=pb.SynthesisOptions(sample_rate_hz=RATE),
    )
    first_chunk_s = None
    messages = []
    for message in stub.Synthesize(request):
        if first_chunk_s is None:
            first_chunk_s = time.perf_counter() - started
        messages.append(message)
    assert first_chunk_s is not None
    print(f"Synthesize first audio after {first_chunk_s * 1000:.0f} ms (client side)")
    chunks = [m.chunk for m in messages[:-1]]
    stats = messages[-1].stats
    assert all(m.HasField("chunk") for m in messages[:-1]) and messages[-1].HasField("stats")
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    pcm = b"".join(c.pcm for c in chunks)
    assert stats.chunks == len(chunks) and stats.sample_rate_hz == RATE
    assert stats.chars == len(TEXT) and stats.model and not stats.voice_cache_hit
    assert abs(len(pcm) // 2 * 1000 // RATE - stats.audio_ms) <= max(c.duration_ms for c in chunks)
    position = 0
    for chunk in chunks:
        assert chunk.sample_rate_hz == RATE and len(chunk.pcm) % 2 == 0
        assert 0 < chunk.duration_ms <= 1000
        assert abs(chunk.start_ms - position * 1000 // RATE) <= 1
        position += len(chunk.pcm) // 2
    durations = sorted(c.duration_ms for c in chunks)
    assert durations[len(durations) // 2] <= 200 and durations[-1] <= 200
    assert stats.first_chunk_ms <= stats.processing_ms
    audio = np.frombuffer(pcm, dtype="<i2")
    answer = transcribe(stub, audio)
    assert word_error_rate(TEXT, answer.text) <= 0.10, answer.text


def test_synthesize_options(stub: Any) -> None:
    text = "Short and clear."
    native, native_stats = synthesize(stub, text)
    assert native_stats.sample_rate_hz == 22050 and native[0].sample_rate_hz == 22050
    trimmed, trimmed_stats = synthesize(stub, text, warmup_trim_ms=300)
    assert trimmed[0].start_ms == 0
    # piper's durations vary a little run to run (noise_w): allow 150 ms either way
    assert abs(native_stats.audio_ms - 300 - trimmed_stats.audio_ms) <= 150
    _, fast_stats = synthesize(stub, text, speed=2.0)
    assert fast_stats.audio_ms < native_stats.audio_ms * 0.75
    _, stats = synthesize(stub, text, instructions="cheerful", model="other-model")
    assert set(stats.ignored_options) == {"instructions", "model"}
    _, rate_stats = synthesize(stub, text, sample_rate_hz=48000)
    assert rate_stats.sample_rate_hz == 48000


def test_synthesize_errors(stub: Any) -> None:
    def call(text: str = "Hello.", voice: Any = None, tenant: str = "t", **opts: Any) -> Any:
        request = pb.SynthesizeRequest(
            tenant_id=tenant,
            text=text,
            voice=voice or pb.VoiceSpec(builtin="joe"),
            options=pb.SynthesisOptions(**opts),
        )
        return lambda: list(stub.Synthesize(request))

    bad = S.INVALID_ARGUMENT
    expect_error(call(text="   "), bad, "TEXT_EMPTY")
    expect_error(call(text="a" * 10_001), bad, "TEXT_TOO_LONG")
    expect_error(call(speed=5.0), bad, "INVALID_PARAMETER")
    expect_error(call(warmup_trim_ms=2500), bad, "INVALID_PARAMETER")
    expect_error(call(sample_rate_hz=12345), bad, "UNSUPPORTED_SAMPLE_RATE")
    expect_error(call(language="fr"), bad, "UNSUPPORTED_LANGUAGE")
    expect_error(call(voice=pb.VoiceSpec(builtin="nobody")), bad, "INVALID_PARAMETER")
    expect_error(call(voice=pb.VoiceSpec(voice_id="v")), bad, "INVALID_PARAMETER")
    expect_error(
        call(voice=pb.VoiceSpec(design_prompt="a deep calm voice")), bad, "INVALID_PARAMETER"
    )
    uncached = pb.VoiceSpec(
        voice_id="voice_missing", reference=pb.ReferenceVoice(content_sha256="ab" * 32)
    )
    expect_error(call(voice=uncached), S.FAILED_PRECONDITION, "VOICE_NOT_CACHED")
    short = pb.VoiceSpec(
        voice_id="voice_short", reference=pb.ReferenceVoice(audio=pcm_input(silence(0.5)))
    )
    expect_error(call(voice=short), bad, "VOICE_REFERENCE_INVALID")


def test_voice_cache_and_evict_voice(stub: Any) -> None:
    import hashlib

    clip = espeak_speech(
        "This is my reference recording. I speak slowly and clearly so that the voice can "
        "be adapted to sound a little more like me."
    )
    data = clip.astype("<i2").tobytes()
    sha = hashlib.sha256(data).hexdigest()
    with_audio = pb.VoiceSpec(
        voice_id="voice_test",
        reference=pb.ReferenceVoice(
            audio=pb.AudioInput(data=data, pcm=pb.PcmSpec(sample_rate_hz=RATE)),
            text="This is my reference recording.",
            content_sha256=sha,
        ),
    )
    without = pb.VoiceSpec(voice_id="voice_test", reference=pb.ReferenceVoice(content_sha256=sha))
    _, first = synthesize(stub, "A cloned voice speaks.", voice=with_audio)
    assert not first.voice_cache_hit and first.audio_ms > 0
    _, second = synthesize(stub, "A cloned voice speaks.", voice=without)
    assert second.voice_cache_hit
    other_tenant = pb.SynthesizeRequest(tenant_id="tenant-b", text="Hi.", voice=without)
    expect_error(
        lambda: list(stub.Synthesize(other_tenant)), S.FAILED_PRECONDITION, "VOICE_NOT_CACHED"
    )
    evict = pb.EvictVoiceRequest(tenant_id="tenant-a", voice_id="voice_test")
    assert stub.EvictVoice(evict).evicted is True
    assert stub.EvictVoice(evict).evicted is False
    expect_error(
        lambda: synthesize(stub, "Hi.", voice=without), S.FAILED_PRECONDITION, "VOICE_NOT_CACHED"
    )
    expect_error(
        lambda: stub.EvictVoice(pb.EvictVoiceRequest(tenant_id="tenant-a")),
        S.INVALID_ARGUMENT,
        "INVALID_PARAMETER",
    )
    _, designed = synthesize(
        stub, "Designed.", voice=pb.VoiceSpec(voice_id="voice_d", design_prompt="a slow deep voice")
    )
    assert designed.audio_ms > 0


# ----- StreamSynthesize ------------------------------------------------------------------------


def _ss_text(text: str) -> pb.StreamSynthesizeRequest:
    return pb.StreamSynthesizeRequest(text=pb.TextDelta(text=text))


def _ss_control(action: pb.SynthesisControlAction) -> pb.StreamSynthesizeRequest:
    return pb.StreamSynthesizeRequest(control=pb.SynthesisControl(action=action))


def _ss_config(rate: int = RATE) -> pb.StreamSynthesizeRequest:
    return pb.StreamSynthesizeRequest(
        config=pb.StreamSynthesizeConfig(
            tenant_id="tenant-a",
            voice=pb.VoiceSpec(builtin="joe"),
            options=pb.SynthesisOptions(sample_rate_hz=rate),
        )
    )


def test_stream_synthesize_interrupt(stub: Any) -> None:
    new_text = "Please listen to this new sentence instead."
    bidi = Bidi(stub.StreamSynthesize)
    bidi.send(_ss_config())
    bidi.send(_ss_text(LONG_TEXT))
    events = bidi.events()
    before: list[pb.AudioChunk] = []
    first = next(events)
    assert first.HasField("chunk"), first
    before.append(first.chunk)
    sent_at = time.perf_counter()
    bidi.send(_ss_control(pb.SYNTHESIS_CONTROL_ACTION_INTERRUPT))
    interrupted = None
    for event in events:
        if event.HasField("interrupted"):
            interrupted = event.interrupted
            break
        assert event.HasField("chunk")
        before.append(event.chunk)
    latency_ms = (time.perf_counter() - sent_at) * 1000
    print(f"StreamSynthesize INTERRUPT → interrupted after {latency_ms:.1f} ms")
    assert interrupted is not None
    assert latency_ms <= 100
    assert interrupted.last_sequence == before[-1].sequence
    assert interrupted.dropped_chars > 0
    bidi.send(_ss_text(new_text))
    bidi.send(_ss_control(pb.SYNTHESIS_CONTROL_ACTION_FLUSH))
    after: list[pb.AudioChunk] = []
    flushed = None
    for event in events:
        if event.HasField("flushed"):
            flushed = event.flushed
            break
        assert event.HasField("chunk"), event
        after.append(event.chunk)
    assert flushed is not None and after
    assert after[0].sequence == interrupted.last_sequence + 1
    assert [c.sequence for c in after] == list(range(after[0].sequence, after[-1].sequence + 1))
    assert flushed.last_sequence == after[-1].sequence and flushed.chars == len(new_text)
    heard = transcribe(stub, np.frombuffer(b"".join(c.pcm for c in after), dtype="<i2")).text
    assert word_error_rate(new_text, heard) <= 0.15, heard  # nothing of the dropped text
    bidi.send(_ss_control(pb.SYNTHESIS_CONTROL_ACTION_CLOSE))
    rest = list(events)
    assert [e.WhichOneof("event") for e in rest] == ["done"]
    assert rest[0].done.chars == len(new_text)
    assert rest[0].done.chunks == len(before) + len(after)
    assert bidi.call.code() == S.OK


def test_stream_synthesize_buffering_flush_and_close(stub: Any) -> None:
    bidi = Bidi(stub.StreamSynthesize)
    bidi.send(_ss_config())
    bidi.send(_ss_text("Hello there"))
    bidi.send(_ss_text(", this is one sentence"))
    bidi.send(_ss_control(pb.SYNTHESIS_CONTROL_ACTION_FLUSH))
    events = bidi.events()
    kinds = []
    for event in events:
        kinds.append(event.WhichOneof("event"))
        if event.HasField("flushed"):
            assert event.flushed.chars == len("Hello there, this is one sentence")
            break
    assert kinds[0] == "chunk" and kinds[-1] == "flushed"
    bidi.send(_ss_control(pb.SYNTHESIS_CONTROL_ACTION_FLUSH))  # nothing buffered
    for event in events:
        assert event.HasField("flushed")
        assert not event.flushed.HasField("last_sequence") and event.flushed.chars == 0
        break
    bidi.send(_ss_text("Another sentence without an end"))
    bidi.send(_ss_control(pb.SYNTHESIS_CONTROL_ACTION_CLOSE))
    rest = list(events)
    assert [e.WhichOneof("event") for e in rest][-1] == "done"
    assert all(e.HasField("chunk") for e in rest[:-1]) and len(rest) > 1
    done = rest[-1].done
    assert done.chars == len("Hello there, this is one sentence") + len(
        "Another sentence without an end"
    )
    assert bidi.call.code() == S.OK


def test_stream_synthesize_errors(stub: Any) -> None:
    events, err = collect_until_error(stub.StreamSynthesize(iter([_ss_text("Hi.")])))
    assert error_code(err) == "PROTOCOL_VIOLATION" and events[0].error.code == "PROTOCOL_VIOLATION"
    events, err = collect_until_error(
        stub.StreamSynthesize(iter([_ss_config(), _ss_text("x" * 10_001)]))
    )
    assert error_code(err) == "TEXT_TOO_LONG" and events[-1].error.code == "TEXT_TOO_LONG"
    events, err = collect_until_error(stub.StreamSynthesize(iter([_ss_config(12_000)])))
    assert error_code(err) == "UNSUPPORTED_SAMPLE_RATE"
    uncached = pb.StreamSynthesizeRequest(
        config=pb.StreamSynthesizeConfig(
            tenant_id="tenant-a",
            voice=pb.VoiceSpec(
                voice_id="voice_x", reference=pb.ReferenceVoice(content_sha256="00")
            ),
        )
    )
    events, err = collect_until_error(stub.StreamSynthesize(iter([uncached])))
    assert err.code() == S.FAILED_PRECONDITION and events[0].error.code == "VOICE_NOT_CACHED"
    # No sentence end: each delta is cut at its last space and queued; queued text counts.
    flood = [_ss_config()] + [_ss_text("word " * 1999 + "word")] * 4
    events, err = collect_until_error(stub.StreamSynthesize(iter(flood)))
    assert err.code() == S.RESOURCE_EXHAUSTED and error_code(err) == "BUFFER_OVERFLOW"
    assert events[-1].error.code == "BUFFER_OVERFLOW"


# ----- speakers --------------------------------------------------------------------------------


def test_speakers_enroll_list_diarize_evict(stub: Any) -> None:
    joe = piper_speech(
        "Hello, my name is Joe and I am enrolling my voice for this test today. "
        "I like long walks on the beach."
    )
    enrolled = stub.EnrollSpeaker(
        pb.EnrollSpeakerRequest(tenant_id="t1", speaker_id="spkr_joe", reference=pcm_input(joe))
    )
    assert enrolled.ok and enrolled.embedding_dims == 256 and not enrolled.replaced
    assert enrolled.speech_ms > 2000
    again = stub.EnrollSpeaker(
        pb.EnrollSpeakerRequest(tenant_id="t1", speaker_id="spkr_joe", reference=pcm_input(joe))
    )
    assert again.replaced
    listed = stub.ListSpeakers(pb.ListSpeakersRequest(tenant_id="t1")).speakers
    assert [(s.tenant_id, s.speaker_id, s.embedding_dims) for s in listed] == [
        ("t1", "spkr_joe", 256)
    ]
    assert not stub.ListSpeakers(pb.ListSpeakersRequest(tenant_id="t2")).speakers

    first = "Good morning everyone, welcome to the weekly meeting about the project."
    second = "Thank you, I have some updates about the budget and the timeline."
    mix = np.concatenate(
        [
            piper_speech(first),
            silence(0.6),
            espeak_speech(second),
            silence(0.6),
            piper_speech("Great, please go ahead and share them with us now."),
        ]
    )
    diarized = stub.Diarize(
        pb.DiarizeRequest(tenant_id="t1", audio=pcm_input(mix), candidate_speaker_ids=["spkr_joe"])
    )
    labels = [s.speaker.label for s in diarized.segments]
    assert labels[0] == "spkr_joe" and labels[-1] == "spkr_joe"
    assert "spk_0" in labels and diarized.labels == ["spkr_joe", "spk_0"]
    for segment in diarized.segments:
        assert segment.speaker.HasField("similarity")
        if segment.speaker.label == "spkr_joe":
            assert segment.speaker.speaker_id == "spkr_joe"
        else:
            assert segment.speaker.speaker_id == ""

    answer = stub.Transcribe(
        pb.TranscribeRequest(
            audio=pcm_input(mix),
            diarize=True,
            tenant_id="t1",
            candidate_speaker_ids=["spkr_joe"],
            timestamps=pb.TIMESTAMP_GRANULARITY_WORD,
        )
    )
    assert answer.speaker_labels == ["spkr_joe", "spk_0"]
    assert answer.segments[0].speaker.label == "spkr_joe"
    assert all(w.speaker_label for s in answer.segments for w in s.words)

    err = expect_error(
        lambda: stub.Diarize(
            pb.DiarizeRequest(
                tenant_id="t1",
                audio=pcm_input(mix),
                candidate_speaker_ids=["spkr_joe", "spkr_ann", "spkr_bob"],
            )
        ),
        S.FAILED_PRECONDITION,
        "SPEAKER_NOT_ENROLLED",
    )
    assert trailing(err)["x-missing-speaker-ids"] == "spkr_ann,spkr_bob"
    evict = pb.EvictSpeakerRequest(tenant_id="t1", speaker_id="spkr_joe")
    assert stub.EvictSpeaker(evict).evicted is True
    assert stub.EvictSpeaker(evict).evicted is False


def test_embed_speaker(stub: Any) -> None:
    clip = espeak_speech("A short sentence for an embedding of this speaker's voice.")
    answer = stub.EmbedSpeaker(pb.EmbedSpeakerRequest(audio=pcm_input(clip)))
    assert answer.dims == 256 == len(answer.embedding)
    assert abs(float(np.linalg.norm(answer.embedding)) - 1.0) < 1e-3
    assert 1000 <= answer.speech_ms <= clip.size * 1000 // RATE
    expect_error(
        lambda: stub.EmbedSpeaker(pb.EmbedSpeakerRequest(audio=pcm_input(silence(2.0)))),
        S.INVALID_ARGUMENT,
        "AUDIO_INVALID",
    )
    expect_error(
        lambda: stub.EnrollSpeaker(
            pb.EnrollSpeakerRequest(tenant_id="t1", reference=pcm_input(clip))
        ),
        S.INVALID_ARGUMENT,
        "INVALID_PARAMETER",
    )


# ----- auth, admission, cancellation (limited node) ---------------------------------------------


def test_secret_required_but_health_answers(limited: NodeProcess) -> None:
    with limited.channel() as ch:
        stub = limited.stub(ch)
        expect_error(
            lambda: stub.GetNodeInfo(pb.GetNodeInfoRequest()), S.UNAUTHENTICATED, "UNAUTHENTICATED"
        )
        expect_error(
            lambda: stub.GetNodeInfo(pb.GetNodeInfoRequest(), metadata=(("x-api-secret", "no"),)),
            S.UNAUTHENTICATED,
            "UNAUTHENTICATED",
        )
        request = pb.SynthesizeRequest(text="Hello.", voice=pb.VoiceSpec(builtin="joe"))
        expect_error(lambda: list(stub.Synthesize(request)), S.UNAUTHENTICATED, "UNAUTHENTICATED")
        health = health_pb2_grpc.HealthStub(ch)
        answer = health.Check(health_pb2.HealthCheckRequest(service="scaiinfer.v1.AudioNode"))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        info = stub.GetNodeInfo(pb.GetNodeInfoRequest(), metadata=AUTH)
        assert [e.kind for e in info.engines] == ["audio.synthesize"]
        assert info.capacity == 1


def _inflight(stub: Any) -> int:
    return int(stub.GetNodeInfo(pb.GetNodeInfoRequest(), metadata=AUTH).inflight)


def test_capacity_and_cancellation(limited: NodeProcess) -> None:
    with limited.channel() as ch:
        stub = limited.stub(ch)
        long_request = pb.SynthesizeRequest(
            tenant_id="t", text=LONG_TEXT, voice=pb.VoiceSpec(builtin="joe")
        )
        running = stub.Synthesize(long_request, metadata=AUTH)
        assert next(running).HasField("chunk")  # holds the only slot; left unread
        assert _inflight(stub) == 1
        err = expect_error(
            lambda: list(stub.Synthesize(long_request, metadata=AUTH)),
            S.RESOURCE_EXHAUSTED,
            "AT_CAPACITY",
        )
        assert int(trailing(err)["retry-after-ms"]) > 0
        events, err = collect_until_error(
            stub.StreamSynthesize(iter([_ss_config()]), metadata=AUTH)
        )
        assert error_code(err) == "AT_CAPACITY" and events[0].error.code == "AT_CAPACITY"
        evict = pb.EvictVoiceRequest(tenant_id="t", voice_id="voice_none")
        assert stub.EvictVoice(evict, metadata=AUTH).evicted is False  # never refused
        cancelled_at = time.monotonic()
        running.cancel()
        while _inflight(stub) != 0:
            assert time.monotonic() - cancelled_at < 1.0, "slot not freed within 1 s"
            time.sleep(0.02)
        print(f"cancel → inflight 0 after {(time.monotonic() - cancelled_at) * 1000:.0f} ms")
        chunks, stats = synthesize_with(stub, "The slot is free again.")
        assert stats.audio_ms > 0 and chunks


def synthesize_with(stub: Any, text: str) -> tuple[list[Any], Any]:
    request = pb.SynthesizeRequest(tenant_id="t", text=text, voice=pb.VoiceSpec(builtin="joe"))
    messages = list(stub.Synthesize(request, metadata=AUTH))
    return [m.chunk for m in messages[:-1]], messages[-1].stats


def test_stream_cancel_frees_slot(limited: NodeProcess) -> None:
    with limited.channel() as ch:
        stub = limited.stub(ch)
        bidi = Bidi(stub.StreamSynthesize, metadata=AUTH)
        bidi.send(_ss_config())
        bidi.send(_ss_text(LONG_TEXT))
        assert next(bidi.events()).HasField("chunk")
        assert _inflight(stub) == 1
        cancelled_at = time.monotonic()
        bidi.call.cancel()
        while _inflight(stub) != 0:
            assert time.monotonic() - cancelled_at < 1.0
            time.sleep(0.02)


def test_stream_idle(limited: NodeProcess) -> None:
    with limited.channel() as ch:
        stub = limited.stub(ch)
        bidi = Bidi(stub.StreamSynthesize, metadata=AUTH)
        bidi.send(_ss_config())
        started = time.monotonic()
        events, err = collect_until_error(bidi.events())
        waited = time.monotonic() - started
        assert err.code() == S.DEADLINE_EXCEEDED and error_code(err) == "STREAM_IDLE"
        assert [e.WhichOneof("event") for e in events] == ["error"]
        assert 2.5 <= waited <= 6.0
        bidi.half_close()


# ----- restart and draining (speaker-only node) ---------------------------------------------------


def test_restart_and_drain() -> None:
    first = start_node(
        engines=("speaker",), node_id="test-node-drain", extra_args=["--grace-period", "2"]
    )
    grpc_port = int(first.grpc_target.rsplit(":", 1)[1])
    http_port = int(first.http_url.rsplit(":", 1)[1])
    with first.channel() as ch:
        before = first.stub(ch).GetNodeInfo(pb.GetNodeInfoRequest())
    assert first.stop() == 0
    second = start_node(
        engines=("speaker",),
        node_id="test-node-drain",
        extra_args=["--grace-period", "2"],
        grpc_port=grpc_port,
        http_port=http_port,
    )
    try:
        with second.channel() as ch:
            stub = second.stub(ch)
            after = stub.GetNodeInfo(pb.GetNodeInfoRequest())
            assert after.started_at_unix_ms != before.started_at_unix_ms
            assert after.models_loaded == before.models_loaded
            clip = np.concatenate([piper_speech(TEXT), silence(0.3)])
            long_audio = np.tile(clip, int(360 * RATE / clip.size) + 1)  # about 6 minutes
            outcome: dict[str, Any] = {}

            def diarize() -> None:
                try:
                    stub.Diarize(pb.DiarizeRequest(audio=pcm_input(long_audio)))
                    outcome["ok"] = True
                except grpc.RpcError as exc:
                    outcome["error"] = exc

            worker = threading.Thread(target=diarize)
            worker.start()
            deadline = time.monotonic() + 20
            while stub.GetNodeInfo(pb.GetNodeInfoRequest()).inflight != 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert second.process.pid is not None
            os.kill(second.process.pid, signal.SIGTERM)
            health = health_pb2_grpc.HealthStub(ch)
            request = health_pb2.HealthCheckRequest(service="scaiinfer.v1.AudioNode")
            while health.Check(request).status != health_pb2.HealthCheckResponse.NOT_SERVING:
                time.sleep(0.01)
            assert stub.GetNodeInfo(pb.GetNodeInfoRequest()).draining is True
            embed = pb.EmbedSpeakerRequest(audio=pcm_input(clip))
            expect_error(lambda: stub.EmbedSpeaker(embed), S.UNAVAILABLE, "DRAINING")
            worker.join(timeout=20)
            assert not worker.is_alive()
            err = outcome.get("error")
            assert err is not None, "the in-flight call should end at the grace period"
            assert err.code() == S.UNAVAILABLE and error_code(err) == "DRAINING"
        assert second.process.proc is not None
        assert second.process.proc.wait(timeout=20) == 0
    finally:
        second.stop()
