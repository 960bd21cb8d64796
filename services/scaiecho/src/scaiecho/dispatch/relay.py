"""Backend B: the relay's ``/v1/audio/transcriptions`` (platform §8.2)."""

from __future__ import annotations

import asyncio

from scaicommon.audio import Pcm, split_pcm, wav_bytes
from scaicommon.relay import RELAY_CONTAINERS, RelayClient, RelayTranscript
from scaiecho.dispatch.options import MAX_PIECE_MS, OriginalAudio, TranscribeOptions
from scaiecho.transcript import Segment, Transcript, Word


def from_relay(answer: RelayTranscript, duration_ms: int, model: str) -> Transcript:
    """Our :class:`Transcript` from a normalised ``verbose_json`` answer.

    The relay puts words beside the segments; each word goes to the segment it starts in.
    """
    words = sorted(answer.words, key=lambda w: w.start_ms)
    segments: list[Segment] = []
    ordered = sorted(answer.segments, key=lambda s: (s.start_ms, s.index))
    for i, seg in enumerate(ordered):
        end = ordered[i + 1].start_ms if i + 1 < len(ordered) else None
        mine = tuple(
            Word(text=w.text.strip(), start_ms=w.start_ms, end_ms=w.end_ms, confidence=None)
            for w in words
            if w.start_ms >= (seg.start_ms if i else 0) and (end is None or w.start_ms < end)
        )
        segments.append(
            Segment(
                start_ms=seg.start_ms,
                end_ms=seg.end_ms,
                text=seg.text.strip(),
                confidence=seg.confidence,
                words=mine,
            )
        )
    if not segments and answer.text.strip():
        segments.append(
            Segment(start_ms=0, end_ms=duration_ms, text=answer.text.strip(), confidence=None)
        )
    return Transcript(
        segments=tuple(segments),
        language=answer.language,
        duration_ms=duration_ms,
        backend="B",
        node_id=None,
        engine=model,
    )


async def transcribe_on_relay(
    relay: RelayClient,
    pcm: Pcm,
    options: TranscribeOptions,
    *,
    original: OriginalAudio | None,
    max_upload_bytes: int,
    word_timestamps: bool,
) -> Transcript:
    """Transcribe on the relay: the original bytes when it takes them, else WAV pieces.

    The original goes as it is when its container is one the relay accepts and it is under
    ``max_upload_bytes``; otherwise the decoded audio is cut into pieces of at most ten minutes
    at quiet frames, each sent as a 16 kHz mono WAV, and the answers joined.
    """

    async def send(data: bytes, content_type: str, ext: str) -> RelayTranscript:
        return await relay.transcribe(
            data,
            content_type,
            ext,
            language=options.language_hint,
            temperature=options.temperature,
            prompt=options.prompt,
            word_timestamps=word_timestamps,
        )

    if (
        original is not None
        and original.ext in RELAY_CONTAINERS
        and original.size <= max_upload_bytes
    ):
        data = await asyncio.to_thread(original.path.read_bytes)
        answer = await send(data, original.content_type, original.ext)
        return from_relay(answer, pcm.duration_ms, relay.model)
    parts: list[Transcript] = []
    for offset_ms, piece in split_pcm(pcm, max_piece_ms=MAX_PIECE_MS):
        answer = await send(wav_bytes(piece), "audio/wav", "wav")
        parts.append(from_relay(answer, piece.duration_ms, relay.model).offset(offset_ms))
    return Transcript.join(parts, pcm.duration_ms)
