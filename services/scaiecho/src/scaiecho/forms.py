"""Multipart fields of ``POST /transcribe`` and the OpenAI route, parsed and validated.

Every bad field is reported at once, as ``details`` of one ``VALIDATION_ERROR``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from scaicommon.errors import ScaiError
from scaicommon.policy import PREFERENCES
from scaicommon.uploads import MultipartForm, UploadedFile
from scaiecho.dispatch import TranscribeOptions
from scaiecho.openai_format import RESPONSE_FORMATS, preference_for_model

TIMESTAMPS: Final = ("none", "segment", "word")
GRANULARITIES: Final = ("segment", "word")
_LANGUAGE_RE: Final = re.compile(r"^[A-Za-z]{2}$")
_TRUE: Final = ("true", "1")
_FALSE: Final = ("false", "0")


@dataclass
class _Fields:
    """Collects problems while reading fields."""

    form: MultipartForm
    problems: list[dict[str, str]] = field(default_factory=list)

    def text(self, name: str) -> str | None:
        value = self.form.fields.get(name)
        return value.strip() if value is not None and value.strip() != "" else None

    def bad(self, name: str, message: str) -> None:
        self.problems.append({"field": name, "message": message})

    def file(self, name: str) -> UploadedFile | None:
        upload = self.form.files.get(name)
        if upload is None:
            self.bad(name, "a file is required")
        elif upload.size == 0:
            self.bad(name, "the file is empty")
        return upload

    def boolean(self, name: str) -> bool:
        raw = self.text(name)
        if raw is None:
            return False
        if raw.lower() in _TRUE:
            return True
        if raw.lower() not in _FALSE:
            self.bad(name, f"expected true/false/1/0, got {raw[:40]!r}")
        return False

    def language(self, name: str) -> str | None:
        raw = self.text(name)
        if raw is None:
            return None
        if not _LANGUAGE_RE.match(raw):
            self.bad(name, f"expected 2 letters, got {raw[:40]!r}")
            return None
        return raw.lower()

    def temperature(self, name: str) -> float | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            self.bad(name, f"expected a number from 0.0 to 1.0, got {raw[:40]!r}")
            return None
        if not 0.0 <= value <= 1.0:
            self.bad(name, f"must be from 0.0 to 1.0, got {value:g}")
            return None
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        raw = self.text(name)
        if raw is None:
            return default
        if raw not in allowed:
            self.bad(name, f"expected one of {', '.join(allowed)}, got {raw[:40]!r}")
            return default
        return raw

    def raise_if_bad(self, summary: str) -> None:
        if self.problems:
            first = self.problems[0]
            message = summary if len(self.problems) > 1 else f"{first['field']}: {first['message']}"
            raise ScaiError("VALIDATION_ERROR", message, details=self.problems)


@dataclass(frozen=True)
class TranscribeForm:
    """A valid ``POST /transcribe`` form."""

    upload: UploadedFile
    options: TranscribeOptions
    force_async: bool


def wants_diarization(form: MultipartForm) -> bool:
    """Whether the form asks for ``diarize`` (checked before validation, for the 403)."""
    raw = (form.fields.get("diarize") or "").strip().lower()
    return raw in _TRUE


def parse_transcribe_form(form: MultipartForm) -> TranscribeForm:
    """Validate the fields of §4 (unknown fields are ignored)."""
    f = _Fields(form)
    upload = f.file("file")
    options = TranscribeOptions(
        language_hint=f.language("language_hint"),
        temperature=f.temperature("temperature"),
        timestamps=f.choice("timestamps", TIMESTAMPS, "segment"),
        diarize=f.boolean("diarize"),
        backend_preference=f.choice("backend_preference", PREFERENCES, "any"),
    )
    force_async = f.boolean("force_async")
    f.raise_if_bad("invalid transcription request")
    assert upload is not None
    return TranscribeForm(upload, options, force_async)


@dataclass(frozen=True)
class OpenAIForm:
    """A valid OpenAI ``audio/transcriptions`` form."""

    upload: UploadedFile
    options: TranscribeOptions
    response_format: str
    word_timestamps: bool


def parse_openai_form(form: MultipartForm) -> OpenAIForm:
    """Validate the OpenAI fields of §11 (``stream=true`` is refused)."""
    f = _Fields(form)
    upload = f.file("file")
    stream = f.boolean("stream")
    if stream:
        f.bad("stream", "streaming transcription is not supported on this route")
    response_format = f.choice("response_format", RESPONSE_FORMATS, "json")
    granularities = form.multi.get("timestamp_granularities[]", []) + form.multi.get(
        "timestamp_granularities", []
    )
    for value in granularities:
        if value.strip() not in GRANULARITIES:
            f.bad("timestamp_granularities[]", f"expected segment or word, got {value[:40]!r}")
    words = any(v.strip() == "word" for v in granularities)
    if granularities and response_format != "verbose_json":
        f.bad("timestamp_granularities[]", "only supported with response_format=verbose_json")
    options = TranscribeOptions(
        language_hint=f.language("language"),
        temperature=f.temperature("temperature"),
        timestamps="word" if words else "segment",
        prompt=f.text("prompt"),
        backend_preference=preference_for_model(f.text("model")),
    )
    f.raise_if_bad("invalid transcription request")
    assert upload is not None
    return OpenAIForm(upload, options, response_format, words)
