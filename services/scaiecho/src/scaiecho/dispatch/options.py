"""What a transcription asks of a backend, independent of the backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Audio pieces are cut at most this long, both for node messages and for relay uploads.
MAX_PIECE_MS = 600_000


@dataclass(frozen=True)
class TranscribeOptions:
    """The caller's transcription options (validated by the service layer)."""

    language_hint: str | None = None
    temperature: float | None = None
    timestamps: str = "segment"
    prompt: str | None = None
    diarize: bool = False
    backend_preference: str = "any"

    def to_json(self) -> dict[str, Any]:
        """A JSON object for the job row's ``options`` column."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TranscribeOptions:
        """Read back :meth:`to_json` output (unknown keys ignored)."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass(frozen=True)
class OriginalAudio:
    """The uploaded bytes on disk, sent to the relay as they are when it takes them."""

    path: Path
    ext: str
    content_type: str
    size: int
