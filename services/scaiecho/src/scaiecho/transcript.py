"""The transcript ScaiEcho computes, whatever the backend, and its §4.2 segment objects."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any


def seconds(ms: int) -> float:
    """Milliseconds as float seconds with three decimals."""
    return round(ms / 1000, 3)


def clamp_confidence(value: float | None) -> float:
    """A confidence for the API: ``None`` (and NaN) become 0.0, the rest is clamped to 0..1."""
    if value is None or math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, value))


@dataclass(frozen=True)
class Word:
    """One recognised word; times in milliseconds from the start of the audio."""

    text: str
    start_ms: int
    end_ms: int
    confidence: float | None


@dataclass(frozen=True)
class Segment:
    """One segment; the speaker fields are set only when diarization ran."""

    start_ms: int
    end_ms: int
    text: str
    confidence: float | None
    words: tuple[Word, ...] = ()
    speaker_label: str | None = None
    speaker_id: str | None = None

    def offset(self, ms: int) -> Segment:
        """This segment and its words shifted by ``ms``."""
        return replace(
            self,
            start_ms=self.start_ms + ms,
            end_ms=self.end_ms + ms,
            words=tuple(
                replace(w, start_ms=w.start_ms + ms, end_ms=w.end_ms + ms) for w in self.words
            ),
        )


@dataclass(frozen=True)
class Transcript:
    """A whole transcription: segments in time order plus what the backend reported.

    ``language`` is ISO 639-1 or ``None``; ``backend`` is ``"A"`` (node) or ``"B"`` (relay).
    """

    segments: tuple[Segment, ...]
    language: str | None
    duration_ms: int
    backend: str
    node_id: str | None
    engine: str | None

    @property
    def text(self) -> str:
        """The segment texts, trimmed, empty ones skipped, joined by single spaces."""
        return " ".join(t for t in (s.text.strip() for s in self.segments) if t)

    def offset(self, ms: int) -> Transcript:
        """Every segment and word time shifted by ``ms`` (``duration_ms`` is a length, kept)."""
        return replace(self, segments=tuple(s.offset(ms) for s in self.segments))

    @staticmethod
    def join(parts: Sequence[Transcript], duration_ms: int) -> Transcript:
        """The pieces of one audio, in order, as one transcript of ``duration_ms``.

        Segments are concatenated; ``backend`` comes from the first piece, and ``language``,
        ``node_id`` and ``engine`` from the first piece that has one. Raises ``ValueError``
        for no pieces (there is no backend to report).
        """
        if not parts:
            raise ValueError("Transcript.join needs at least one part")
        return Transcript(
            segments=tuple(s for p in parts for s in p.segments),
            language=next((p.language for p in parts if p.language), None),
            duration_ms=duration_ms,
            backend=parts[0].backend,
            node_id=next((p.node_id for p in parts if p.node_id), None),
            engine=next((p.engine for p in parts if p.engine), None),
        )

    def api_segments(self, timestamps: str, diarized: bool) -> list[dict[str, Any]]:
        """The ``segments`` of §4.2 for ``timestamps`` (``none``/``segment``/``word``).

        ``none`` gives ``[]`` unless ``diarized``, which forces segment granularity. ``words``
        appear only for ``word``; ``speaker_label``/``speaker_id`` only when ``diarized``.
        """
        if timestamps == "none" and not diarized:
            return []
        out: list[dict[str, Any]] = []
        for index, seg in enumerate(self.segments):
            item: dict[str, Any] = {
                "id": index,
                "start": seconds(seg.start_ms),
                "end": seconds(seg.end_ms),
                "text": seg.text.strip(),
                "confidence": clamp_confidence(seg.confidence),
            }
            if diarized:
                item["speaker_label"] = seg.speaker_label
                item["speaker_id"] = seg.speaker_id
            if timestamps == "word":
                item["words"] = [
                    {
                        "word": w.text.strip(),
                        "start": seconds(w.start_ms),
                        "end": seconds(w.end_ms),
                        "confidence": clamp_confidence(w.confidence),
                    }
                    for w in seg.words
                ]
            out.append(item)
        return out
