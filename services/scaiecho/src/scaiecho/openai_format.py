"""Response bodies of the OpenAI-compatible routes (scaiecho.md §11, platform §3.5).

Pure functions: :func:`render` turns a :class:`Transcript` into the body and media type of a
``response_format``; :func:`models_body` is the ``GET …/v1/models`` list.
"""

from __future__ import annotations

from typing import Any

import msgspec

from scaicommon.relay import _LANGUAGE_NAMES, normalize_language
from scaiecho.transcript import Segment, Transcript, seconds

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")

#: Model ids served by ``GET /v1/modules/scaiecho/v1/models``.
MODELS = ("whisper-1", "scaiecho-self-hosted", "scaiecho-relay")

_PREFERENCES = {"scaiecho-self-hosted": "prefer_self_hosted", "scaiecho-relay": "prefer_relay"}

# The name OpenAI reports for codes that have aliases in the relay's name → code table.
_CANONICAL = {
    "ca": "catalan", "es": "spanish", "he": "hebrew", "ht": "haitian creole",
    "lb": "luxembourgish", "my": "burmese", "nl": "dutch", "pa": "punjabi", "ps": "pashto",
    "ro": "romanian", "si": "sinhala", "zh": "chinese",
}  # fmt: skip


def _invert(names: dict[str, str]) -> dict[str, str]:
    """Code → name from name → code; aliased codes take :data:`_CANONICAL`, else the first name."""
    out: dict[str, str] = {}
    for name, code in sorted(names.items()):
        out.setdefault(code, name)
    for code, name in _CANONICAL.items():
        if names.get(name) == code:
            out[code] = name
    return dict(sorted(out.items()))


#: ISO 639-1 → lowercase English name, as OpenAI's ``verbose_json`` reports it.
LANGUAGE_NAMES: dict[str, str] = _invert(_LANGUAGE_NAMES)

_MEDIA_TYPES = {
    "json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "verbose_json": "application/json",
}
_encoder = msgspec.json.Encoder()


def language_name(code: str | None) -> str | None:
    """The OpenAI language name of an ISO 639-1 code (``en`` → ``english``), else ``None``."""
    normalized = normalize_language(code)
    return LANGUAGE_NAMES.get(normalized) if normalized else None


def preference_for_model(model: str | None) -> str:
    """The backend preference an OpenAI ``model`` asks for (§11): ``any`` unless ours."""
    return _PREFERENCES.get((model or "").strip(), "any")


def models_body() -> dict[str, Any]:
    """The body of ``GET …/v1/models`` in OpenAI's list shape."""
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": 0, "owned_by": "scaiecho"}
            for model in MODELS
        ],
    }


def render(
    transcript: Transcript, response_format: str, *, words: bool, temperature: float
) -> tuple[bytes, str]:
    """Body and media type of ``transcript`` in ``response_format`` (one of RESPONSE_FORMATS).

    ``words`` adds the top-level ``words`` list to ``verbose_json``; ``temperature`` is echoed
    in its segments. Raises ``ValueError`` for an unknown format (the route validates first).
    """
    if response_format == "json":
        body = _encoder.encode({"text": transcript.text})
    elif response_format == "text":
        body = (transcript.text + "\n").encode()
    elif response_format == "srt":
        body = _srt(transcript).encode()
    elif response_format == "vtt":
        body = _vtt(transcript).encode()
    elif response_format == "verbose_json":
        body = _encoder.encode(_verbose(transcript, words=words, temperature=temperature))
    else:
        raise ValueError(f"unknown response_format {response_format!r}")
    return body, _MEDIA_TYPES[response_format]


def _verbose(transcript: Transcript, *, words: bool, temperature: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "task": "transcribe",
        "language": language_name(transcript.language),
        "duration": seconds(transcript.duration_ms),
        "text": transcript.text,
        "segments": [
            {
                "id": index,
                "seek": 0,
                "start": seconds(seg.start_ms),
                "end": seconds(seg.end_ms),
                "text": seg.text.strip(),
                "tokens": [],
                "temperature": float(temperature),
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
            for index, seg in enumerate(transcript.segments)
        ],
    }
    if words:
        out["words"] = [
            {"word": w.text.strip(), "start": seconds(w.start_ms), "end": seconds(w.end_ms)}
            for seg in transcript.segments
            for w in seg.words
        ]
    return out


def _timestamp(ms: int, separator: str) -> str:
    hours, rest = divmod(max(ms, 0), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cues(transcript: Transcript) -> list[tuple[Segment, str]]:
    # A cue's text is one line: a blank line inside it would end the cue early.
    cues = [(seg, " ".join(seg.text.split())) for seg in transcript.segments]
    return [(seg, text) for seg, text in cues if text]


def _srt(transcript: Transcript) -> str:
    return "".join(
        f"{number}\n{_timestamp(seg.start_ms, ',')} --> {_timestamp(seg.end_ms, ',')}\n{text}\n\n"
        for number, (seg, text) in enumerate(_cues(transcript), start=1)
    )


def _vtt_escape(text: str) -> str:
    # WebVTT cue text is markup: '&' and '<' must be escaped, and '-->' may not appear.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _vtt(transcript: Transcript) -> str:
    cues = "".join(
        f"{_timestamp(seg.start_ms, '.')} --> {_timestamp(seg.end_ms, '.')}\n"
        f"{_vtt_escape(text)}\n\n"
        for seg, text in _cues(transcript)
    )
    return "WEBVTT\n\n" + cues
