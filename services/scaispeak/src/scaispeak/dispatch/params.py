"""What a synthesis asks of a backend, independent of the backend (scaispeak.md §3.4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

#: Engine defaults; values merge as engine default < voice ``defaults`` < request.
DEFAULT_SPEED: Final = 1.0
DEFAULT_CFG_VALUE: Final = 2.0
DEFAULT_WARMUP_TRIM_MS: Final = 0


@dataclass(frozen=True)
class SynthesisParams:
    """Merged synthesis parameters of one request.

    ``sample_rate`` is the rate asked of backend A (the relay always answers 24 kHz);
    ``cfg_value`` and ``warmup_trim_ms`` apply on A only.
    """

    sample_rate: int
    language: str | None = None
    speed: float = DEFAULT_SPEED
    instructions: str | None = None
    cfg_value: float = DEFAULT_CFG_VALUE
    warmup_trim_ms: int = DEFAULT_WARMUP_TRIM_MS

    @classmethod
    def merge(
        cls,
        voice_defaults: Mapping[str, Any],
        language_primary: str | None,
        *,
        sample_rate: int,
        language: str | None = None,
        speed: float | None = None,
        instructions: str | None = None,
        cfg_value: float | None = None,
        warmup_trim_ms: int | None = None,
    ) -> SynthesisParams:
        """Engine default < the voice's ``defaults`` (``None`` members skipped) < request."""

        def pick(requested: Any, key: str, engine: Any) -> Any:
            if requested is not None:
                return requested
            value = voice_defaults.get(key)
            return engine if value is None else value

        return cls(
            sample_rate=sample_rate,
            language=language or language_primary or None,
            speed=float(pick(speed, "speed", DEFAULT_SPEED)),
            instructions=pick(instructions, "instructions", None) or None,
            cfg_value=float(pick(cfg_value, "cfg_value", DEFAULT_CFG_VALUE)),
            warmup_trim_ms=int(pick(warmup_trim_ms, "warmup_trim_ms", DEFAULT_WARMUP_TRIM_MS)),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON object for the job row's ``params`` column."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SynthesisParams:
        """Read back :meth:`to_json` output (unknown keys ignored)."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass
class SynthesisProgress:
    """What a synthesis has done so far, readable after it failed or was cancelled.

    ``chars_done`` counts the characters of text pieces whose audio is complete;
    ``started`` turns true with the first audio, after which nothing fails over.
    """

    backend: str | None = None
    node_id: str | None = None
    engine: str | None = None
    chars_done: int = 0
    audio_ms: int = 0
    started: bool = False
