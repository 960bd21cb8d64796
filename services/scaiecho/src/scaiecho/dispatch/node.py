"""Backend A: ``Transcribe`` on a ScaiInfer node, piece by piece for long audio."""

from __future__ import annotations

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaicommon.audio import Pcm, split_pcm
from scaicommon.grpcclient import NodeClient
from scaicommon.nodes import NodeInfo
from scaiecho.dispatch.options import MAX_PIECE_MS, TranscribeOptions
from scaiecho.transcript import Segment, Transcript, Word

_GRANULARITY = {
    "none": pb.TIMESTAMP_GRANULARITY_NONE,
    "segment": pb.TIMESTAMP_GRANULARITY_SEGMENT,
    "word": pb.TIMESTAMP_GRANULARITY_WORD,
}


def _request(piece: Pcm, options: TranscribeOptions) -> pb.TranscribeRequest:
    request = pb.TranscribeRequest(
        audio=pb.AudioInput(
            data=piece.data,
            pcm=pb.PcmSpec(
                sample_rate_hz=piece.sample_rate,
                channels=1,
                sample_format=pb.SAMPLE_FORMAT_S16LE,
            ),
        ),
        language_hint=options.language_hint or "",
        timestamps=_GRANULARITY.get(options.timestamps, pb.TIMESTAMP_GRANULARITY_SEGMENT),
        prompt=options.prompt or "",
    )
    if options.temperature is not None:
        request.temperature = options.temperature
    return request


def _confidence(message: pb.Segment | pb.Word) -> float | None:
    return message.confidence if message.HasField("confidence") else None


def from_response(response: pb.TranscribeResponse, node: NodeInfo, duration_ms: int) -> Transcript:
    """Our :class:`Transcript` from a node's ``TranscribeResponse``."""
    segments = tuple(
        Segment(
            start_ms=s.start_ms,
            end_ms=s.end_ms,
            text=s.text.strip(),
            confidence=_confidence(s),
            words=tuple(
                Word(
                    text=w.text.strip(),
                    start_ms=w.start_ms,
                    end_ms=w.end_ms,
                    confidence=_confidence(w),
                )
                for w in s.words
            ),
        )
        for s in sorted(response.segments, key=lambda s: (s.start_ms, s.index))
    )
    engine = node.engine("audio.transcribe")
    return Transcript(
        segments=segments,
        language=(response.language or None),
        duration_ms=duration_ms,
        backend="A",
        node_id=node.node_id,
        engine=response.model or (engine.name if engine else None),
    )


async def transcribe_on_node(
    client: NodeClient,
    node: NodeInfo,
    pcm: Pcm,
    options: TranscribeOptions,
    *,
    tenant_id: str,
    user_id: str,
) -> Transcript:
    """Transcribe ``pcm`` on ``node`` (retries per platform §7.4 live in the client).

    Audio longer than :data:`MAX_PIECE_MS` goes as several calls, cut at quiet frames, so no
    message nears the 64 MiB limit; the pieces' times are offset and joined.
    """
    parts: list[Transcript] = []
    target = node
    for offset_ms, piece in split_pcm(pcm, max_piece_ms=MAX_PIECE_MS):
        result = await client.unary(
            "Transcribe",
            _request(piece, options),
            node=target,
            tenant_id=tenant_id,
            user_id=user_id,
            audio_ms=piece.duration_ms,
        )
        target = result.node
        parts.append(from_response(result.value, result.node, piece.duration_ms).offset(offset_ms))
    return Transcript.join(parts, pcm.duration_ms)
