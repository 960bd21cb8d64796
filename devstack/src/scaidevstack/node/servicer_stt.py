"""``Transcribe`` and ``StreamTranscribe`` (engine kind ``audio.transcribe``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc.aio

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaidevstack.node import errors
from scaidevstack.node.diarize_merge import Span, best_turn, segment_turn
from scaidevstack.node.engines.base import (
    DiarizedTurn,
    SpeechStarted,
    SpeechToText,
    StreamEvent,
    StreamOptions,
    TranscriptResult,
    TranscriptUpdate,
    UtteranceEnd,
    WordResult,
)
from scaidevstack.node.errors import NodeError
from scaidevstack.node.inputs import Limits, check_input_shape, decode_input
from scaidevstack.node.languages import check_language
from scaidevstack.node.servicer_base import ServicerBase, log, rpc
from scaidevstack.node.speaker_support import DiarizeSetup, StreamSpeakers
from scaidevstack.node.state import STT

MiB = 1024 * 1024
TRANSCRIBE_MAX_BYTES = 60 * MiB
STREAM_RATE = 16000
MIN_STREAM_MSG = 640  # 20 ms of PCM16 at 16 kHz
MAX_STREAM_MSG = 32_000  # 1000 ms
MAX_STREAM_BUFFER = 30 * STREAM_RATE * 2  # 30 s of unprocessed audio
MAX_CANDIDATES = 1000
G = pb.TimestampGranularity
_GRANULARITIES = frozenset(G.values())


def check_granularity(value: int) -> int:
    """Known ``TimestampGranularity`` value (UNSPECIFIED reads as SEGMENT)."""
    if value not in _GRANULARITIES:
        raise errors.bad_param(f"unknown timestamps value {value}")
    return value or G.TIMESTAMP_GRANULARITY_SEGMENT


def check_temperature(has: bool, value: float) -> float | None:
    """Temperature 0..1 when set."""
    if not has:
        return None
    if not 0.0 <= value <= 1.0 or value != value:
        raise errors.bad_param("temperature must be within 0.0..1.0")
    return float(value)


@dataclass
class SttOptions:
    """Validated options of a transcription call."""

    language: str | None
    temperature: float | None
    words: bool
    prompt: str | None
    ignored: list[str]


def stt_options(
    stt: SpeechToText,
    caps: Sequence[str],
    *,
    language_hint: str,
    has_temperature: bool,
    temperature: float,
    timestamps: int,
    prompt: str,
    model: str,
) -> SttOptions:
    """Validate the shared options of ``Transcribe`` and ``StreamTranscribeConfig``."""
    ignored: list[str] = []
    granularity = check_granularity(timestamps)
    words = granularity == G.TIMESTAMP_GRANULARITY_WORD
    if words and "word_timestamps" not in caps:
        words = False
        ignored.append("word_timestamps")
    use_prompt: str | None = prompt or None
    if use_prompt and "prompt" not in caps:
        use_prompt = None
        ignored.append("prompt")
    if model and model != stt.model:
        ignored.append("model")
    return SttOptions(
        language=check_language(language_hint, stt.languages),
        temperature=check_temperature(has_temperature, temperature),
        words=words,
        prompt=use_prompt,
        ignored=ignored,
    )


def clean_segments(result: TranscriptResult, words: bool) -> list[pb.Segment]:
    """Segments in time order, non-overlapping, with words clamped inside them."""
    out: list[pb.Segment] = []
    prev_end = 0
    for seg in sorted(result.segments, key=lambda s: (s.start_ms, s.end_ms)):
        text = seg.text.strip()
        if not text:
            continue
        start = max(int(seg.start_ms), prev_end)
        end = max(int(seg.end_ms), start)
        pb_seg = pb.Segment(index=len(out), start_ms=start, end_ms=end, text=text)
        if seg.confidence is not None:
            pb_seg.confidence = float(seg.confidence)
        if seg.no_speech_probability is not None:
            pb_seg.no_speech_probability = float(seg.no_speech_probability)
        if words:
            pb_seg.words.extend(_pb_words(seg.words, start, end))
        out.append(pb_seg)
        prev_end = end
    return out


def _pb_words(words: Sequence[WordResult], lo: int, hi: int) -> list[pb.Word]:
    out: list[pb.Word] = []
    cursor = lo
    for w in words:
        text = w.text.strip()
        if not text:
            continue
        start = min(max(int(w.start_ms), cursor), hi)
        end = min(max(int(w.end_ms), start), hi)
        word = pb.Word(text=text, start_ms=start, end_ms=end)
        if w.confidence is not None:
            word.confidence = float(w.confidence)
        out.append(word)
        cursor = start
    return out


def attribution(turn: DiarizedTurn | None) -> pb.SpeakerAttribution | None:
    """``SpeakerAttribution`` of a diarized turn."""
    if turn is None:
        return None
    attr = pb.SpeakerAttribution(speaker_id=turn.speaker_id, label=turn.label)
    if turn.similarity is not None:
        attr.similarity = float(turn.similarity)
    return attr


def apply_diarization(segments: list[pb.Segment], turns: Sequence[DiarizedTurn]) -> list[str]:
    """Set ``speaker`` on segments and ``speaker_label`` on words; the labels in order."""
    labels: list[str] = []
    for seg in segments:
        word_turns: list[tuple[Span, DiarizedTurn | None]] = []
        for word in seg.words:
            turn = best_turn(turns, word.start_ms, word.end_ms)
            word_turns.append((Span(word.start_ms, word.end_ms), turn))
            if turn is not None:
                word.speaker_label = turn.label
        seg_turn = segment_turn(turns, Span(seg.start_ms, seg.end_ms), word_turns)
        attr = attribution(seg_turn)
        if attr is not None:
            seg.speaker.CopyFrom(attr)
            if attr.label not in labels:
                labels.append(attr.label)
        for word in seg.words:
            if word.speaker_label and word.speaker_label not in labels:
                labels.append(word.speaker_label)
    return labels


class SttServicer(ServicerBase):
    """The two transcription RPCs."""

    def transcribe_limits(self) -> Limits:
        """Size and duration limits of ``Transcribe``."""
        return Limits(max_bytes=TRANSCRIBE_MAX_BYTES, max_ms=self.state.config.max_audio_ms)

    def diarize_setup(
        self, tenant_id: str, candidates: Sequence[str], caps: Sequence[str]
    ) -> DiarizeSetup:
        """Checks for ``diarize = true`` inside a transcription call."""
        if "diarization" not in caps:
            raise errors.unsupported("this node cannot diarize transcripts")
        if not tenant_id:
            raise errors.bad_param("tenant_id is required when diarize is true")
        if len(candidates) > MAX_CANDIDATES:
            raise errors.bad_param(f"at most {MAX_CANDIDATES} candidate speakers")
        return DiarizeSetup.resolve(self.state, tenant_id, candidates)

    @rpc()
    async def Transcribe(
        self, request: pb.TranscribeRequest, context: Any
    ) -> pb.TranscribeResponse:
        """Whole-file speech to text."""
        stt = self.state.require_stt()
        caps = self.state.stt_capabilities()
        opts = stt_options(
            stt,
            caps,
            language_hint=request.language_hint,
            has_temperature=request.HasField("temperature"),
            temperature=request.temperature,
            timestamps=request.timestamps,
            prompt=request.prompt,
            model=request.model,
        )
        diar = None
        if request.diarize:
            diar = self.diarize_setup(request.tenant_id, request.candidate_speaker_ids, caps)
        limits = self.transcribe_limits()
        check_input_shape(request.audio, limits, caps)
        with self.state.admission.acquire(STT):
            started = time.monotonic()
            audio = await asyncio.to_thread(decode_input, request.audio, limits, caps)
            result = await asyncio.to_thread(
                stt.transcribe,
                audio,
                language=opts.language,
                temperature=opts.temperature,
                word_timestamps=opts.words or diar is not None,
                prompt=opts.prompt,
                vad=not request.disable_vad,
            )
            turns = await asyncio.to_thread(diar.run, audio) if diar is not None else None
            processing_ms = int((time.monotonic() - started) * 1000)
        segments = clean_segments(result, opts.words or diar is not None)
        labels: list[str] = []
        if turns is not None:
            labels = apply_diarization(segments, turns)
        if diar is not None and not opts.words:
            for seg in segments:
                del seg.words[:]
        response = pb.TranscribeResponse(
            text=" ".join(s.text for s in segments).strip(),
            language=result.language or (opts.language or ""),
            duration_ms=int(audio.size * 1000 // STREAM_RATE),
            segments=segments,
            speaker_labels=labels,
            model=result.model or stt.model,
            processing_ms=processing_ms,
            ignored_options=opts.ignored,
        )
        if result.language_probability is not None:
            response.language_probability = float(result.language_probability)
        return response

    @rpc(error_event=lambda e: pb.StreamTranscribeEvent(error=e.stream_error()))
    async def StreamTranscribe(self, request_iterator: Any, context: Any) -> None:
        """Live speech to text (config, then audio and controls; see §3.4)."""
        stt = self.state.require_stt()
        idle_s = self.state.config.stream_idle_s
        first = await _read(context, idle_s)
        if first is grpc.aio.EOF or first.WhichOneof("payload") != "config":
            raise errors.protocol_violation("the first message must be the config")
        cfg = first.config
        caps = self.state.stt_capabilities()
        if "streaming" not in caps:
            raise errors.unsupported("this engine has no streaming")
        if cfg.sample_rate_hz not in (0, STREAM_RATE):
            raise errors.invalid(
                "UNSUPPORTED_SAMPLE_RATE", "StreamTranscribe takes 16 kHz audio only"
            )
        opts = stt_options(
            stt,
            caps,
            language_hint=cfg.language_hint,
            has_temperature=cfg.HasField("temperature"),
            temperature=cfg.temperature,
            timestamps=cfg.timestamps,
            prompt=cfg.prompt,
            model=cfg.model,
        )
        endpointing = cfg.endpointing_ms or 500
        if not 10 <= endpointing <= 10_000:
            raise errors.bad_param("endpointing_ms must be within 10..10000")
        diar = None
        if cfg.diarize:
            diar = self.diarize_setup(cfg.tenant_id, cfg.candidate_speaker_ids, caps)
        vad_events = cfg.vad_events and "vad_events" in caps
        options = StreamOptions(
            language=opts.language,
            temperature=opts.temperature,
            word_timestamps=opts.words,
            partials=cfg.partials,
            vad_events=vad_events,
            endpointing_ms=endpointing,
            prompt=opts.prompt,
        )
        with self.state.admission.acquire(STT):
            recognizer = await asyncio.to_thread(stt.open_stream, options)
            stream_id = f"str_{uuid.uuid4().hex[:16]}"
            await context.write(
                pb.StreamTranscribeEvent(
                    started=pb.StreamStarted(
                        stream_id=stream_id, model=stt.model, sample_rate_hz=STREAM_RATE
                    )
                )
            )
            session = _TranscribeSession(
                context,
                recognizer,
                idle_s=idle_s,
                partials=cfg.partials,
                vad_events=vad_events,
                words=opts.words,
                speakers=StreamSpeakers(diar) if diar is not None else None,
            )
            await session.run()


async def _read(context: Any, idle_s: float) -> Any:
    try:
        return await asyncio.wait_for(context.read(), idle_s)
    except TimeoutError:
        raise errors.stream_idle(idle_s) from None


_FINALIZE = "finalize"
_CLOSE = "close"
_Item = bytes | str | NodeError


class _Inbox:
    """What the reader hands the processor, in arrival order; audio can be coalesced."""

    def __init__(self) -> None:
        self.items: deque[_Item] = deque()
        self.event = asyncio.Event()
        self.pending_bytes = 0

    def put(self, item: _Item) -> None:
        self.items.append(item)
        if isinstance(item, bytes):
            self.pending_bytes += len(item)
        self.event.set()

    async def get(self) -> _Item:
        while not self.items:
            self.event.clear()
            await self.event.wait()
        item = self.items.popleft()
        if isinstance(item, bytes):
            parts = [item]
            size = len(item)
            while self.items and isinstance(self.items[0], bytes):
                nxt = self.items[0]
                if size + len(nxt) > MAX_STREAM_MSG:
                    break
                assert isinstance(nxt, bytes)
                parts.append(nxt)
                size += len(nxt)
                self.items.popleft()
            item = b"".join(parts)
        return item

    def done_with(self, pcm: bytes) -> None:
        self.pending_bytes -= len(pcm)


class _TranscribeSession:
    """One live stream: a reader task feeding the recogniser through an inbox."""

    def __init__(
        self,
        context: Any,
        recognizer: Any,
        *,
        idle_s: float,
        partials: bool,
        vad_events: bool,
        words: bool,
        speakers: StreamSpeakers | None,
    ) -> None:
        self.context = context
        self.rec = recognizer
        self.idle_s = idle_s
        self.partials = partials
        self.vad_events = vad_events
        self.words = words
        self.speakers = speakers
        self.inbox = _Inbox()

    async def run(self) -> None:
        reader = asyncio.create_task(self._read_loop())
        try:
            while True:
                item = await self.inbox.get()
                if isinstance(item, NodeError):
                    raise item
                if isinstance(item, bytes):
                    if self.speakers is not None:
                        self.speakers.add_audio(item)
                    events = await asyncio.to_thread(self.rec.push, item)
                    self.inbox.done_with(item)
                    await self._emit(events)
                elif item == _FINALIZE:
                    await self._emit(await asyncio.to_thread(self.rec.finalize))
                elif item == _CLOSE:
                    await self._emit(await asyncio.to_thread(self.rec.finalize))
                    await self.context.write(
                        pb.StreamTranscribeEvent(
                            closed=pb.StreamTranscribeClosed(
                                audio_ms=int(self.rec.audio_ms),
                                segments=int(self.rec.finals),
                                language=self.rec.language or "",
                            )
                        )
                    )
                    return
        finally:
            reader.cancel()

    async def _read_loop(self) -> None:
        short_pending = False
        try:
            while True:
                msg = await _read(self.context, self.idle_s)
                if msg is grpc.aio.EOF:
                    self.inbox.put(_CLOSE)
                    return
                kind = msg.WhichOneof("payload")
                if kind == "audio":
                    pcm = msg.audio
                    if short_pending:
                        raise errors.protocol_violation(
                            "an audio message under 20 ms is allowed only before FINALIZE/CLOSE"
                        )
                    if len(pcm) % 2 or len(pcm) > MAX_STREAM_MSG or not pcm:
                        raise errors.protocol_violation(
                            f"audio message of {len(pcm)} bytes: expected 640..32000, even"
                        )
                    short_pending = len(pcm) < MIN_STREAM_MSG
                    unprocessed = int(getattr(self.rec, "unprocessed_ms", 0)) * STREAM_RATE // 500
                    if self.inbox.pending_bytes + len(pcm) + unprocessed > MAX_STREAM_BUFFER:
                        raise errors.buffer_overflow("over 30 s of unprocessed audio")
                    self.inbox.put(pcm)
                elif kind == "control":
                    action = msg.control.action
                    if action == pb.STREAM_CONTROL_ACTION_KEEPALIVE:
                        continue
                    if action == pb.STREAM_CONTROL_ACTION_FINALIZE:
                        short_pending = False
                        self.inbox.put(_FINALIZE)
                    elif action == pb.STREAM_CONTROL_ACTION_CLOSE:
                        self.inbox.put(_CLOSE)
                        return
                    else:
                        raise errors.bad_param(f"unknown stream control action {action}")
                elif kind == "config":
                    raise errors.protocol_violation("config may be sent only once, first")
                else:
                    raise errors.protocol_violation("empty stream message")
        except NodeError as err:
            self.inbox.put(err)
        except Exception:
            log.exception("stream_read_failed")
            self.inbox.put(errors.internal())

    async def _emit(self, events: list[StreamEvent]) -> None:
        for event in events:
            out = await self._to_pb(event)
            if out is not None:
                await self.context.write(out)

    async def _to_pb(self, event: StreamEvent) -> pb.StreamTranscribeEvent | None:
        if isinstance(event, TranscriptUpdate):
            if not event.is_final and not self.partials:
                return None
            update = pb.TranscriptUpdate(
                segment_id=event.segment_id,
                revision=event.revision,
                is_final=event.is_final,
                text=event.text.strip(),
                start_ms=max(0, int(event.start_ms)),
                end_ms=max(int(event.start_ms), int(event.end_ms)),
                language=event.language,
                from_finalize=event.from_finalize,
            )
            if event.confidence is not None:
                update.confidence = float(event.confidence)
            if self.words and event.words:
                update.words.extend(_pb_words(event.words, update.start_ms, update.end_ms))
            if event.is_final and self.speakers is not None:
                turn = await self.speakers.attribute(update.start_ms, update.end_ms)
                attr = attribution(turn)
                if attr is not None:
                    update.speaker.CopyFrom(attr)
                    for word in update.words:
                        word.speaker_label = attr.label
            return pb.StreamTranscribeEvent(transcript=update)
        if not self.vad_events:
            return None
        if isinstance(event, SpeechStarted):
            return pb.StreamTranscribeEvent(speech_started=pb.SpeechStarted(at_ms=event.at_ms))
        if isinstance(event, UtteranceEnd):
            return pb.StreamTranscribeEvent(
                utterance_end=pb.UtteranceEnd(
                    at_ms=event.at_ms, last_segment_id=event.last_segment_id
                )
            )
        return None
