"""Backend B: the relay's ``/v1/audio/speech`` (platform §8.3)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Final, cast

from scaicommon.audio import AudioDecodeError, Pcm, decode_pcm16
from scaicommon.relay import RelayClient, shape_mismatch
from scaispeak.dispatch.params import SynthesisParams, SynthesisProgress
from scaispeak.dispatch.reference import Reference
from scaispeak.store.voices import Voice

#: The relay answers s16le mono at 24 kHz (``pcm``); ``wav``/``mp3`` are decoded to it.
RELAY_RATE: Final = 24_000
#: Raw relay bytes are handed on in pieces of at least this many (100 ms at 24 kHz).
_MIN_CHUNK_BYTES: Final = 4_800


async def synthesize_on_relay(
    relay: RelayClient,
    voice: Voice,
    pieces: Sequence[str],
    params: SynthesisParams,
    load_reference: Callable[[], Awaitable[Reference]],
    *,
    tts_format: str,
    progress: SynthesisProgress,
) -> AsyncGenerator[Pcm, None]:
    """24 kHz PCM of every piece, as the relay sends it (decoded first for ``wav``/``mp3``).

    A voice with a relay voice name sends that name; a reference voice sends its id with the
    clip (the cloning extension). ``cfg_value`` and ``warmup_trim_ms`` do not apply on B.
    Raises :class:`scaicommon.relay.RelayError`.
    """
    reference = None if voice.relay_voice else await load_reference()
    name = voice.relay_voice or voice.id
    for piece in pieces:
        body = cast(
            AsyncGenerator[bytes, None],
            relay.speech(
                piece,
                name,
                response_format=tts_format,
                speed=params.speed,
                instructions=params.instructions,
                reference_wav_b64=reference.wav if reference else None,
                reference_text=reference.text if reference else None,
            ),
        )
        async with contextlib.aclosing(body):
            if tts_format == "pcm":
                async with contextlib.aclosing(_reframe(body, progress)) as chunks:
                    async for pcm in chunks:
                        yield pcm
            else:
                pcm = await _decode(b"".join([chunk async for chunk in body]))
                progress.started = True
                progress.audio_ms += pcm.duration_ms
                yield pcm
        progress.chars_done += len(piece)


async def _reframe(
    body: AsyncIterator[bytes], progress: SynthesisProgress
) -> AsyncGenerator[Pcm, None]:
    """Whole samples in chunks of at least 100 ms (the relay has no fixed chunk boundaries)."""
    buffer = bytearray()
    async for data in body:
        buffer += data
        if len(buffer) >= _MIN_CHUNK_BYTES:
            size = len(buffer) - len(buffer) % 2
            pcm = Pcm(bytes(buffer[:size]), RELAY_RATE)
            del buffer[:size]
            progress.started = True
            progress.audio_ms += pcm.duration_ms
            yield pcm
    size = len(buffer) - len(buffer) % 2
    if size:
        pcm = Pcm(bytes(buffer[:size]), RELAY_RATE)
        progress.started = True
        progress.audio_ms += pcm.duration_ms
        yield pcm


async def _decode(data: bytes) -> Pcm:
    try:
        return await asyncio.to_thread(decode_pcm16, data, sample_rate=RELAY_RATE)
    except AudioDecodeError as exc:
        raise shape_mismatch(f"speech audio does not decode ({exc})") from None
