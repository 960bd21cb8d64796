"""What the node's gRPC and HTTP layers need from each engine.

Engines are plain, synchronous Python objects that compute on numpy arrays; the servers run
them in worker threads and own admission, cancellation and the wire format. Audio inside the
node is int16 mono PCM at 16 kHz unless a name says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

# ----- speech-to-text ---------------------------------------------------------------------


@dataclass(frozen=True)
class WordResult:
    """One recognised word with its times (ms from the start of the audio)."""

    text: str
    start_ms: int
    end_ms: int
    confidence: float | None = None


@dataclass(frozen=True)
class SegmentResult:
    """One recognised segment."""

    start_ms: int
    end_ms: int
    text: str
    confidence: float | None = None
    no_speech_probability: float | None = None
    words: tuple[WordResult, ...] = ()


@dataclass(frozen=True)
class TranscriptResult:
    """A whole-file transcription."""

    text: str
    language: str
    language_probability: float | None
    duration_ms: int
    segments: tuple[SegmentResult, ...]
    model: str


@dataclass(frozen=True)
class StreamOptions:
    """The parts of ``StreamTranscribeConfig`` the recogniser uses."""

    language: str | None = None
    temperature: float | None = None
    word_timestamps: bool = False
    partials: bool = True
    vad_events: bool = True
    endpointing_ms: int = 500
    prompt: str | None = None


@dataclass(frozen=True)
class TranscriptUpdate:
    """A partial (``is_final`` False) or final of one segment; ``text`` is the whole text."""

    segment_id: str
    revision: int
    is_final: bool
    text: str
    start_ms: int
    end_ms: int
    confidence: float | None = None
    words: tuple[WordResult, ...] = ()
    language: str = ""
    from_finalize: bool = False


@dataclass(frozen=True)
class SpeechStarted:
    """Voice activity began at ``at_ms``."""

    at_ms: int


@dataclass(frozen=True)
class UtteranceEnd:
    """Silence after speech that ended at ``at_ms``."""

    at_ms: int
    last_segment_id: str


StreamEvent = TranscriptUpdate | SpeechStarted | UtteranceEnd


class StreamingRecognizer(Protocol):
    """One live stream's state. Every method returns the events it produced, in order."""

    def push(self, pcm: bytes) -> list[StreamEvent]:
        """Add PCM16 16 kHz mono audio (20..1000 ms)."""
        ...

    def finalize(self) -> list[StreamEvent]:
        """Finalise everything received so far (finals carry ``from_finalize``)."""
        ...

    @property
    def audio_ms(self) -> int:
        """Total audio received."""
        ...

    @property
    def finals(self) -> int:
        """Finals emitted so far."""
        ...

    @property
    def language(self) -> str:
        """Detected (or hinted) language."""
        ...


class SpeechToText(Protocol):
    """Engine kind ``audio.transcribe``."""

    name: str
    model: str
    capabilities: Sequence[str]
    languages: Sequence[str]

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
        """Transcribe int16 16 kHz mono audio."""
        ...

    def open_stream(self, options: StreamOptions) -> StreamingRecognizer:
        """A new live recogniser."""
        ...


# ----- text-to-speech ---------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceProfile:
    """Synthesis parameters a voice source maps to (cached per tenant/voice/reference)."""

    voice_id: str
    length_scale: float = 1.0
    pitch_factor: float = 1.0
    noise_scale: float | None = None
    noise_w_scale: float | None = None
    description: str = ""


class TextToSpeech(Protocol):
    """Engine kind ``audio.synthesize``."""

    name: str
    model: str
    capabilities: Sequence[str]
    languages: Sequence[str]
    builtin_voices: Sequence[str]
    sample_rate: int

    def builtin_profile(self, name: str) -> VoiceProfile:
        """The profile of a built-in voice; ``KeyError`` for an unknown name."""
        ...

    def profile_from_reference(self, voice_id: str, audio: np.ndarray) -> VoiceProfile:
        """Adapt toward the speaker of a 16 kHz int16 reference clip (pitch, rate)."""
        ...

    def profile_from_design(self, voice_id: str, prompt: str) -> VoiceProfile:
        """Map a voice description (gender, pace, pitch words) to parameters."""
        ...

    def sentences(self, text: str) -> list[str]:
        """Split text at sentence boundaries (the unit of streaming)."""
        ...

    def synthesize(
        self, text: str, profile: VoiceProfile, *, speed: float = 1.0
    ) -> Iterator[np.ndarray]:
        """int16 mono audio at :attr:`sample_rate`, one array per sentence, as produced."""
        ...


# ----- speaker analysis -------------------------------------------------------------------


@dataclass(frozen=True)
class DiarizedTurn:
    """One speaker turn."""

    start_ms: int
    end_ms: int
    speaker_id: str
    label: str
    similarity: float | None


@dataclass
class SpeakerEntry:
    """One enrolled speaker held in memory."""

    tenant_id: str
    speaker_id: str
    embedding: np.ndarray
    enrolled_at_unix_ms: int
    model: str
    extra: dict[str, str] = field(default_factory=dict)


class SpeakerAnalysis(Protocol):
    """Engine kind ``audio.analyze.pyannote``."""

    name: str
    model: str
    capabilities: Sequence[str]
    dims: int

    def embed(self, audio: np.ndarray) -> tuple[np.ndarray, int]:
        """L2-normalised embedding of the speech in 16 kHz int16 audio and the speech ms used.

        ``ValueError`` when less than 1 s of speech remains after VAD.
        """
        ...

    def diarize(
        self,
        audio: np.ndarray,
        candidates: Mapping[str, np.ndarray],
        *,
        min_speakers: int = 0,
        max_speakers: int = 0,
        match_threshold: float = 0.5,
    ) -> list[DiarizedTurn]:
        """Speaker turns in time order, matched to candidates as scaiinfer.proto.md §3.10."""
        ...
