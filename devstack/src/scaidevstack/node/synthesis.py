"""Synthesis plumbing shared by the gRPC servicer and the relay: option checks, voice
resolution with the voice cache, and re-chunking of per-sentence audio.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaidevstack.node import errors
from scaidevstack.node.audio import resample_int16
from scaidevstack.node.engines.base import TextToSpeech, VoiceProfile
from scaidevstack.node.inputs import Limits, check_input_shape, decode_input
from scaidevstack.node.languages import check_language
from scaidevstack.node.voices import VoiceCache

MAX_TEXT = 10_000
MAX_TRIM_MS = 2000
OUTPUT_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})
CHUNK_MAX_MS = 200  # chunks are 100–200 ms (shorter only for sentences under 100 ms)
REFERENCE_LIMITS = Limits(
    max_bytes=8 * 1024 * 1024,
    max_ms=30_000,
    too_long_code="VOICE_REFERENCE_INVALID",
    invalid_code="VOICE_REFERENCE_INVALID",
    min_ms=1000,
)

T = TypeVar("T")


def check_text(text: str, *, field_name: str = "text") -> str:
    """``TEXT_EMPTY`` / ``TEXT_TOO_LONG`` checks; returns the text unchanged."""
    if len(text) > MAX_TEXT:
        raise errors.invalid("TEXT_TOO_LONG", f"{field_name} is over {MAX_TEXT} characters")
    if not text.strip():
        raise errors.invalid("TEXT_EMPTY", f"{field_name} is empty")
    return text


@dataclass(frozen=True)
class SynthParams:
    """Validated ``SynthesisOptions``."""

    speed: float
    sample_rate: int
    trim_ms: int
    ignored: tuple[str, ...] = ()


def synth_params(tts: TextToSpeech, options: pb.SynthesisOptions) -> SynthParams:
    """Check ``options`` against the engine (§3.5 error table)."""
    caps = tts.capabilities
    speed = options.speed or 1.0
    if not (0.25 <= speed <= 4.0) or math.isnan(speed):
        raise errors.bad_param("speed must be within 0.25..4.0")
    if options.warmup_trim_ms > MAX_TRIM_MS:
        raise errors.bad_param(f"warmup_trim_ms must be at most {MAX_TRIM_MS}")
    rate = options.sample_rate_hz or int(tts.sample_rate)
    if rate not in OUTPUT_RATES:
        raise errors.invalid(
            "UNSUPPORTED_SAMPLE_RATE", f"output rate {rate} Hz; allowed {sorted(OUTPUT_RATES)}"
        )
    check_language(options.language, tts.languages)
    ignored: list[str] = []
    if options.instructions and "instructions" not in caps:
        ignored.append("instructions")
    if options.HasField("cfg_value") and "cloning" not in caps:
        ignored.append("cfg_value")
    if options.model and options.model != tts.model:
        ignored.append("model")
    return SynthParams(
        speed=float(speed), sample_rate=rate, trim_ms=options.warmup_trim_ms, ignored=tuple(ignored)
    )


async def resolve_voice(
    tts: TextToSpeech, cache: VoiceCache, tenant_id: str, voice: pb.VoiceSpec
) -> tuple[VoiceProfile, bool]:
    """The profile for ``voice`` and whether it came from the cache (may decode in a thread)."""
    source = voice.WhichOneof("source")
    caps = tts.capabilities
    if source is None:
        raise errors.bad_param("voice has no source (reference, design_prompt or builtin)")
    if source == "builtin":
        if "builtin_voices" not in caps:
            raise errors.unsupported("this engine has no built-in voices")
        try:
            return tts.builtin_profile(voice.builtin), False
        except KeyError:
            raise errors.bad_param(f"unknown builtin voice {voice.builtin!r}") from None
    if not voice.voice_id or not tenant_id:
        raise errors.bad_param(f"voice_id and tenant_id are required for a {source} voice")
    if source == "design_prompt":
        if "voice_design" not in caps:
            raise errors.unsupported("this engine has no voice design")
        if not voice.design_prompt.strip():
            raise errors.bad_param("design_prompt is empty")
        key = "design:" + hashlib.sha256(voice.design_prompt.encode()).hexdigest()
        cached = cache.get(tenant_id, voice.voice_id, key)
        if cached is not None:
            return cached, True
        profile = await asyncio.to_thread(
            tts.profile_from_design, voice.voice_id, voice.design_prompt
        )
        cache.put(tenant_id, voice.voice_id, key, profile)
        return profile, False
    return await _reference_voice(tts, cache, tenant_id, voice)


async def _reference_voice(
    tts: TextToSpeech, cache: VoiceCache, tenant_id: str, voice: pb.VoiceSpec
) -> tuple[VoiceProfile, bool]:
    caps = tts.capabilities
    if "cloning" not in caps:
        raise errors.unsupported("this engine cannot clone voices")
    ref = voice.reference
    given_sha = ref.content_sha256.strip().lower()
    if not ref.audio.data:
        cached = cache.get(tenant_id, voice.voice_id, given_sha) if given_sha else None
        if cached is None:
            raise errors.NodeError(
                errors.S.FAILED_PRECONDITION,
                "VOICE_NOT_CACHED",
                "reference audio omitted and not cached on this node",
            )
        return cached, True
    sha = hashlib.sha256(ref.audio.data).hexdigest()
    if given_sha and given_sha != sha:
        raise errors.bad_param("content_sha256 does not match the reference audio")
    cached = cache.get(tenant_id, voice.voice_id, sha)
    if cached is not None:
        return cached, True
    check_input_shape(ref.audio, REFERENCE_LIMITS, caps)
    audio = await asyncio.to_thread(decode_input, ref.audio, REFERENCE_LIMITS, caps)
    try:
        profile = await asyncio.to_thread(tts.profile_from_reference, voice.voice_id, audio)
    except ValueError as exc:
        raise errors.invalid("VOICE_REFERENCE_INVALID", str(exc)[:200]) from None
    cache.put(tenant_id, voice.voice_id, sha, profile)
    return profile, False


class Chunker:
    """Per-sentence audio → output-rate chunks of 100–200 ms, after the warm-up trim."""

    def __init__(self, native_rate: int, out_rate: int, trim_ms: int) -> None:
        self.native_rate = native_rate
        self.out_rate = out_rate
        self.trim_total = trim_ms * out_rate // 1000
        self.trim_left = self.trim_total
        self.max_samples = out_rate * CHUNK_MAX_MS // 1000

    def restart(self) -> None:
        """A new utterance: the warm-up trim applies again."""
        self.trim_left = self.trim_total

    def split(self, audio: np.ndarray) -> list[np.ndarray]:
        """Resample, trim and cut one sentence's audio."""
        out = resample_int16(np.asarray(audio, dtype=np.int16), self.native_rate, self.out_rate)
        if self.trim_left:
            cut = min(self.trim_left, out.size)
            out = out[cut:]
            self.trim_left -= cut
        if out.size == 0:
            return []
        pieces = math.ceil(out.size / self.max_samples)
        return list(np.array_split(out, pieces))


@dataclass
class OutputCounter:
    """Sequence numbers and output time of one call's chunks."""

    rate: int
    sequence: int = 0
    samples: int = 0
    first_chunk_at: float | None = None
    ignored: Sequence[str] = field(default_factory=tuple)

    @property
    def last_sequence(self) -> int | None:
        """Sequence of the last chunk sent, ``None`` before the first."""
        return self.sequence - 1 if self.sequence else None

    @property
    def audio_ms(self) -> int:
        """Output audio so far."""
        return self.samples * 1000 // self.rate

    def chunk(self, pcm: np.ndarray, now: float) -> pb.AudioChunk:
        """The next ``AudioChunk`` (advances the counters)."""
        data = np.asarray(pcm, dtype="<i2").tobytes()
        out = pb.AudioChunk(
            sequence=self.sequence,
            pcm=data,
            sample_rate_hz=self.rate,
            start_ms=self.samples * 1000 // self.rate,
            duration_ms=pcm.size * 1000 // self.rate,
        )
        self.sequence += 1
        self.samples += int(pcm.size)
        if self.first_chunk_at is None:
            self.first_chunk_at = now
        return out


_DONE = object()


async def iterate_in_thread(iterator: Iterator[T]) -> AsyncIterator[T]:
    """Advance a blocking iterator one item at a time in worker threads."""
    while True:
        item = await asyncio.to_thread(next, iterator, _DONE)
        if item is _DONE:
            return
        yield item  # type: ignore[misc]
