"""The node's speech-to-text engine: faster-whisper tiny.en and the Silero VAD, on real speech.

Speech comes from the shipped piper voice. The model is loaded once for the module, with the
network switched off, so every test also shows that nothing is fetched from a hub.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from scaicommon.testing.wer import normalise_words, word_error_rate
from scaidevstack.node.engines.base import (
    SpeechStarted,
    StreamEvent,
    StreamOptions,
    TranscriptUpdate,
    UtteranceEnd,
)
from scaidevstack.node.engines.stt import WhisperStream, WhisperSTT
from scaidevstack.node.engines.vad import WINDOW, SileroVad, VadStream
from scaidevstack.speechgen import piper_speech, silence

RATE = 16000
CHUNK = RATE // 10  # 100 ms, the recommended StreamTranscribe message
LEAD_S = 0.5
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please send the quarterly report to the finance team by Friday.",
    "We will meet again next week to discuss the budget.",
)
LONG_TEXT = (
    "The committee reviewed the new proposal for the public library and decided that the "
    "reading rooms should stay open later in the evening so that students and working families "
    "could use the computers and borrow books after school and after work without having to "
    "rush through their visit before closing time"
)


# ----- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def no_network() -> Iterator[None]:
    """Any outbound connection attempt in this module fails loudly."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError("network access attempted by the STT engine")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        patch.setattr(socket, "getaddrinfo", refuse)
        yield


@pytest.fixture(scope="module")
def engine(no_network: None) -> WhisperSTT:
    """The engine, loaded once (its warm-up runs faster-whisper's own VAD, offline)."""
    return WhisperSTT()


@dataclass(frozen=True)
class Speech:
    """Synthetic speech with the text spoken and where the speech lies (ms)."""

    audio: np.ndarray
    text: str
    spans: tuple[tuple[int, int], ...]

    @property
    def duration_ms(self) -> int:
        return self.audio.size * 1000 // RATE


def _compose(parts: Sequence[np.ndarray | str], gap_s: float) -> Speech:
    pieces = [silence(LEAD_S)]
    spans: list[tuple[int, int]] = []
    texts: list[str] = []
    at = pieces[0].size
    for part in parts:
        spoken = piper_speech(part) if isinstance(part, str) else part
        texts.append(part if isinstance(part, str) else "")
        spans.append((at * 1000 // RATE, (at + spoken.size) * 1000 // RATE))
        pieces += [spoken, silence(gap_s)]
        at += spoken.size + pieces[-1].size
    return Speech(np.concatenate(pieces), " ".join(texts), tuple(spans))


@pytest.fixture(scope="module")
def three_sentences() -> Speech:
    """Three sentences, each followed by 1 s of silence (about 12 s)."""
    return _compose(SENTENCES, gap_s=1.0)


@pytest.fixture(scope="module")
def long_utterance() -> Speech:
    """About 16 s of speech without a pause longer than 0.2 s, then 1 s of silence."""
    audio = piper_speech(LONG_TEXT, length_scale=1.1)
    speech = _compose([audio], gap_s=1.0)
    return Speech(speech.audio, LONG_TEXT, speech.spans)


# ----- helpers ------------------------------------------------------------------------------


def feed(stream: WhisperStream, audio: np.ndarray) -> list[StreamEvent]:
    """Push ``audio`` in 100 ms messages as fast as the engine takes them."""
    events: list[StreamEvent] = []
    for i in range(0, audio.size, CHUNK):
        events += stream.push(audio[i : i + CHUNK].tobytes())
    return events


def updates(events: Sequence[StreamEvent]) -> list[TranscriptUpdate]:
    return [e for e in events if isinstance(e, TranscriptUpdate)]


def finals(events: Sequence[StreamEvent]) -> list[TranscriptUpdate]:
    return [e for e in updates(events) if e.is_final]


def final_text(events: Sequence[StreamEvent]) -> str:
    return " ".join(f.text for f in finals(events))


def repeated_ngrams(reference: str, hypothesis: str, n: int = 3) -> list[tuple[str, ...]]:
    """n-grams the hypothesis holds more often than the reference does (and more than once)."""
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    ref_counts = Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
    hyp_counts = Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
    return [g for g, c in hyp_counts.items() if c > max(1, ref_counts[g])]


def assert_no_overlap_between_finals(events: Sequence[StreamEvent]) -> None:
    """No final starts with the words the previous final ended with."""
    for before, after in itertools.pairwise(finals(events)):
        tail, head = normalise_words(before.text), normalise_words(after.text)
        for k in range(1, min(3, len(tail), len(head)) + 1):
            assert tail[-k:] != head[:k], (before.text, after.text)


def assert_segment_protocol(events: Sequence[StreamEvent], audio_ms: int) -> None:
    """scaiinfer.proto.md §3.4: ids in order, revisions +1, final last, finals not overlapping."""
    revisions: dict[str, list[int]] = {}
    done: set[str] = set()
    order: list[str] = []
    for update in updates(events):
        assert update.segment_id not in done, f"{update.segment_id} updated after its final"
        if update.segment_id not in revisions:
            order.append(update.segment_id)
            revisions[update.segment_id] = []
        revisions[update.segment_id].append(update.revision)
        if update.is_final:
            done.add(update.segment_id)
        assert update.language == "en"
        assert 0 <= update.start_ms <= update.end_ms <= audio_ms
    assert order == [f"seg_{i}" for i in range(len(order))]
    for segment_id, seen in revisions.items():
        assert seen == list(range(len(seen))), (segment_id, seen)
    finalised = [f.segment_id for f in finals(events)]
    assert finalised == order[: len(finalised)], "segments finalised out of order"
    previous_end = 0
    for final in finals(events):
        assert final.start_ms >= previous_end
        previous_end = final.end_ms
        for word in final.words:
            assert final.start_ms <= word.start_ms <= word.end_ms <= final.end_ms
        assert [w.start_ms for w in final.words] == sorted(w.start_ms for w in final.words)


# ----- VAD ----------------------------------------------------------------------------------


def test_vad_probabilities_separate_speech_from_silence(three_sentences: Speech) -> None:
    vad = SileroVad()
    assert vad.speech_probabilities(silence(2.0)).max() < 0.1
    probs = vad.speech_probabilities(three_sentences.audio)
    assert probs.size == -(-three_sentences.audio.size // WINDOW)
    for start_ms, end_ms in three_sentences.spans:
        inside = probs[start_ms * RATE // 1000 // WINDOW : end_ms * RATE // 1000 // WINDOW]
        assert np.mean(inside > 0.5) > 0.7
    assert probs[: int(LEAD_S * RATE) // WINDOW - 2].max() < 0.2


def test_vad_stream_matches_batch_and_reports_each_utterance(three_sentences: Speech) -> None:
    audio = three_sentences.audio
    batch = SileroVad().speech_probabilities(audio[: audio.size - audio.size % WINDOW])
    stream = VadStream(min_silence_ms=500)
    rng = np.random.default_rng(7)
    windows = []
    at = 0
    while at < audio.size:
        size = int(rng.integers(100, 9000))
        windows += stream.push(audio[at : at + size])
        at += size
    assert np.array_equal(np.array([w.probability for w in windows], np.float32), batch)
    events = [w.event for w in windows if w.event is not None]
    assert [e.kind for e in events] == ["start", "end"] * 3
    for (start_ms, end_ms), began, ended in zip(
        three_sentences.spans, events[::2], events[1::2], strict=True
    ):
        assert abs(began.ms - start_ms) < 150
        assert abs(ended.ms - end_ms) < 250
        assert ended.reported_at - ended.sample >= 500 * RATE // 1000


# ----- unary ---------------------------------------------------------------------------------


def test_engine_describes_itself(engine: WhisperSTT) -> None:
    assert engine.name == "faster-whisper"
    assert engine.model == "whisper-tiny.en"
    assert set(engine.capabilities) == {
        "streaming",
        "word_timestamps",
        "vad_events",
        "prompt",
        "decode_containers",
    }
    assert list(engine.languages) == ["en"]


def test_transcribe_sentences(engine: WhisperSTT, three_sentences: Speech) -> None:
    started = time.perf_counter()
    result = engine.transcribe(three_sentences.audio, word_timestamps=True)
    rtf = (time.perf_counter() - started) / (three_sentences.duration_ms / 1000)
    print(f"unary RTF {rtf:.3f} on {three_sentences.duration_ms / 1000:.1f} s")

    assert word_error_rate(three_sentences.text, result.text) <= 0.10, result.text
    assert result.text == " ".join(s.text for s in result.segments).strip()
    assert result.language == "en"
    assert result.model == "whisper-tiny.en"
    assert result.duration_ms == three_sentences.duration_ms
    assert result.segments
    previous_end = 0
    for segment in result.segments:
        assert previous_end <= segment.start_ms <= segment.end_ms <= result.duration_ms
        previous_end = segment.end_ms
        assert segment.confidence is not None and 0.0 < segment.confidence <= 1.0
        assert segment.no_speech_probability is not None
        assert segment.words
        for word in segment.words:
            assert segment.start_ms <= word.start_ms <= word.end_ms <= segment.end_ms
        assert word_error_rate(segment.text, " ".join(w.text for w in segment.words)) == 0
    first = result.segments[0]
    assert abs(first.start_ms - three_sentences.spans[0][0]) < 500
    assert rtf < 1.0


def test_transcribe_silence_is_empty(engine: WhisperSTT) -> None:
    quiet = np.random.default_rng(3).normal(0, 30, 4 * RATE).astype(np.int16)
    for audio in (silence(3.0), quiet):
        result = engine.transcribe(audio)
        assert result.text == ""
        assert result.segments == ()
        assert result.duration_ms == audio.size * 1000 // RATE


def test_transcribe_without_words_and_with_prompt(engine: WhisperSTT) -> None:
    audio = np.concatenate([silence(0.3), piper_speech(SENTENCES[2]), silence(0.3)])
    result = engine.transcribe(audio, prompt="Notes from the weekly budget meeting.", vad=False)
    assert word_error_rate(SENTENCES[2], result.text) <= 0.10, result.text
    assert result.segments and all(not s.words for s in result.segments)
    assert result.duration_ms == audio.size * 1000 // RATE


# ----- streaming -----------------------------------------------------------------------------


def test_stream_sentences(engine: WhisperSTT, three_sentences: Speech) -> None:
    stream = engine.open_stream(StreamOptions(word_timestamps=True))
    events = feed(stream, three_sentences.audio)

    assert_segment_protocol(events, three_sentences.duration_ms)
    got = finals(events)
    assert len(got) == 3 and stream.finals == 3
    assert not any(f.from_finalize for f in got)
    text = final_text(events)
    assert word_error_rate(three_sentences.text, text) <= 0.10, text
    assert repeated_ngrams(three_sentences.text, text) == []
    assert_no_overlap_between_finals(events)
    first_final = events.index(got[0])
    assert any(isinstance(e, TranscriptUpdate) and not e.is_final for e in events[:first_final])
    assert all(f.words for f in got)
    for final, (start_ms, end_ms) in zip(got, three_sentences.spans, strict=True):
        assert start_ms - 500 <= final.start_ms and final.end_ms <= end_ms + 500

    # VAD events: a start before each segment's first update, an end after each final.
    assert isinstance(events[0], SpeechStarted)
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    ends = [e for e in events if isinstance(e, UtteranceEnd)]
    assert len(starts) == len(ends) == 3
    for final, end in zip(got, ends, strict=True):
        assert events.index(end) > events.index(final)
        assert end.last_segment_id == final.segment_id
        assert end.at_ms >= final.end_ms - 300

    assert stream.audio_ms == three_sentences.duration_ms
    assert stream.language == "en"
    assert stream.unprocessed_ms == 0
    assert stream.finalize() == []  # everything was already finalised by endpointing


def test_stream_finalize(engine: WhisperSTT, three_sentences: Speech) -> None:
    options = StreamOptions(partials=False, vad_events=True, endpointing_ms=800)
    stream = engine.open_stream(options)
    first_end = three_sentences.spans[0][1] * RATE // 1000
    events = feed(stream, three_sentences.audio[:first_end])
    assert updates(events) == []  # no partials asked, the speech has not ended yet
    assert stream.unprocessed_ms > 2000

    forced = stream.finalize()
    assert len(forced) == 1 and isinstance(forced[0], TranscriptUpdate)
    final = forced[0]
    assert final.is_final and final.from_finalize
    assert final.words == ()  # not asked for
    assert (final.segment_id, final.revision) == ("seg_0", 0)
    assert word_error_rate(SENTENCES[0], final.text) <= 0.2, final.text  # one sentence
    assert stream.finalize() == []
    assert stream.unprocessed_ms == 0

    rest = feed(stream, three_sentences.audio[first_end:])
    ends = [e for e in rest if isinstance(e, UtteranceEnd)]
    assert ends and ends[0].last_segment_id == "seg_0"
    assert rest.index(ends[0]) < rest.index(finals(rest)[0])
    assert [f.segment_id for f in finals(rest)] == ["seg_1", "seg_2"]
    assert all(f.revision == 0 and not f.from_finalize for f in finals(rest))
    assert_segment_protocol(events + forced + rest, three_sentences.duration_ms)
    assert stream.finals == 3


def test_stream_without_vad_events(engine: WhisperSTT) -> None:
    audio = np.concatenate([silence(0.3), piper_speech(SENTENCES[2]), silence(0.8)])
    stream = engine.open_stream(StreamOptions(vad_events=False, partials=False))
    events = feed(stream, audio)
    assert all(isinstance(e, TranscriptUpdate) and e.is_final for e in events)
    assert len(events) == 1
    assert word_error_rate(SENTENCES[2], final_text(events)) <= 0.10


def test_stream_silence_gives_nothing(engine: WhisperSTT) -> None:
    hiss = np.random.default_rng(5).normal(0, 30, 2 * RATE).astype(np.int16)
    stream = engine.open_stream(StreamOptions())
    assert feed(stream, np.concatenate([silence(1.0), hiss])) == []
    assert stream.finalize() == []
    assert stream.audio_ms == 3000 and stream.finals == 0


def test_stream_cuts_long_utterance_without_losing_words(
    engine: WhisperSTT, long_utterance: Speech
) -> None:
    assert long_utterance.spans[0][1] - long_utterance.spans[0][0] > 14000
    stream = engine.open_stream(StreamOptions(word_timestamps=True))
    events: list[StreamEvent] = []
    most_unprocessed = 0
    for i in range(0, long_utterance.audio.size, CHUNK):
        events += stream.push(long_utterance.audio[i : i + CHUNK].tobytes())
        most_unprocessed = max(most_unprocessed, stream.unprocessed_ms)

    got = finals(events)
    assert len(got) >= 2, [f.text for f in got]
    print("long utterance finals:", [(f.start_ms, f.end_ms, f.revision, f.text) for f in got])
    text = final_text(events)
    assert word_error_rate(LONG_TEXT, text) <= 0.10, text
    assert repeated_ngrams(LONG_TEXT, text) == [], text
    assert_no_overlap_between_finals(events)
    assert_segment_protocol(events, long_utterance.duration_ms)
    assert all(f.end_ms - f.start_ms <= engine.max_segment_ms for f in got)
    assert most_unprocessed <= engine.max_segment_ms + 200


def test_stream_at_real_time_pace(engine: WhisperSTT, three_sentences: Speech) -> None:
    """Audio arrives in 100 ms messages at real time; pushes run as soon as they may."""
    stream = engine.open_stream(StreamOptions())
    timed: list[tuple[float, StreamEvent]] = []
    cpu_started = time.process_time()
    t0 = time.perf_counter()
    for n, i in enumerate(range(0, three_sentences.audio.size, CHUNK), start=1):
        due = t0 + n * CHUNK / RATE  # the message is complete only then
        ahead = due - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        produced = stream.push(three_sentences.audio[i : i + CHUNK].tobytes())
        now = time.perf_counter() - t0
        timed += [(now, event) for event in produced]
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu_started
    events = [event for _, event in timed]

    assert_segment_protocol(events, three_sentences.duration_ms)
    text = final_text(events)
    assert word_error_rate(three_sentences.text, text) <= 0.10, text
    assert repeated_ngrams(three_sentences.text, text) == []
    got = finals(events)
    assert len(got) == 3
    assert any(
        isinstance(e, TranscriptUpdate) and not e.is_final for e in events[: events.index(got[0])]
    )

    first_partial: list[float] = []
    final_after_end: list[float] = []
    for final, (start_ms, end_ms) in zip(got, three_sentences.spans, strict=True):
        mine = [(t, e) for t, e in timed if isinstance(e, TranscriptUpdate)]
        mine = [(t, e) for t, e in mine if e.segment_id == final.segment_id]
        first_partial.append(mine[0][0] - start_ms / 1000)
        final_after_end.append(next(t for t, e in mine if e.is_final) - end_ms / 1000)
    print(
        "real-time stream: first partial "
        + ", ".join(f"{x:.2f}" for x in first_partial)
        + " s after speech onset; final "
        + ", ".join(f"{x:.2f}" for x in final_after_end)
        + f" s after speech end; CPU {cpu / (three_sentences.duration_ms / 1000):.2f} core-s"
        + f" per audio-s; wall {wall:.1f} s for {three_sentences.duration_ms / 1000:.1f} s"
    )
    # Loose bounds: the test machine is shared (measured numbers are in the report).
    assert max(first_partial) < 5.0
    assert max(final_after_end) < 6.0
    assert wall < three_sentences.duration_ms / 1000 + 6.0  # it keeps up with the audio
