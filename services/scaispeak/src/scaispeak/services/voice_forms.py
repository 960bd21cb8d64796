"""The request of ``POST /voices``: the clone form (§7.4) and the design form or JSON (§7.5).

Parsing only: every field is checked with the rules of ``PATCH /voices`` and every bad field
is named in one 422. The audio itself is checked by :mod:`scaispeak.services.intake`.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import msgspec

from scaicommon.bodies import RequestBody
from scaicommon.errors import ScaiError
from scaicommon.uploads import MultipartForm, UploadedFile
from scaispeak.services.voices import (
    Details,
    check_description,
    check_display_name,
    check_enum,
    check_language,
    check_languages,
    check_style_tags,
    with_primary,
)
from scaispeak.store.consent import normalise_consent_text
from scaispeak.store.voices import AGES, GENDERS

_CLONE_INPUTS: Final = (
    "reference",
    "reference_scaidrive_json",
    "consent",
    "consent_scaidrive_json",
)
#: The form fields that carry a JSON array, named without their ``_json`` suffix.
_JSON_LISTS: Final = ("language_supported", "style_tags")
_INVALID: Final = object()


@dataclass(frozen=True)
class VoiceFields:
    """The descriptive fields both creation modes share, validated."""

    display_name: str
    language_primary: str
    language_supported: tuple[str, ...] = ()
    gender_hint: str = "unspecified"
    age_hint: str = "unspecified"
    style_tags: tuple[str, ...] = ()
    description: str | None = None


@dataclass(frozen=True)
class ConsentFields:
    """The consent statement (NFC, trimmed) and who made it for what (§7.4)."""

    text: str
    full_name: str
    purpose: str


@dataclass(frozen=True)
class AudioPart:
    """One audio input of the form: an uploaded file or a ScaiDrive reference (raw JSON)."""

    field: str
    upload: UploadedFile | None = None
    drive_json: str | None = None


@dataclass(frozen=True)
class CloneRequest:
    """A valid clone-mode form (§7.4)."""

    fields: VoiceFields
    consent: ConsentFields
    reference: AudioPart
    consent_audio: AudioPart


@dataclass(frozen=True)
class DesignRequest:
    """A valid design-mode request (§7.5)."""

    fields: VoiceFields
    prompt: str


class DesignBody(RequestBody):
    """``POST /voices`` as JSON (design mode only); presence is checked after decoding."""

    voice_design_prompt: str | None = None
    display_name: str | None = None
    language_primary: str | None = None
    language_supported: list[str] | None = None
    gender_hint: str | None = None
    age_hint: str | None = None
    style_tags: list[str] | None = None
    description: str | None = None


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _required_text(details: Details, field: str, value: str | None, *, low: int, high: int) -> str:
    """``low``–``high`` code points after NFC and trimming; ``""`` when missing or bad."""
    if value is None or not value.strip():
        details.append({"field": field, "message": "is required"})
        return ""
    text = unicodedata.normalize("NFC", value).strip()
    if not low <= len(text) <= high:
        details.append({"field": field, "message": f"must be {low}-{high} characters"})
        return ""
    return text


def _json_text(details: Details, field: str, raw: str | None) -> object:
    """The JSON value of a ``*_json`` form field (``None`` when absent, ``_INVALID`` when bad)."""
    if raw is None or not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        details.append({"field": field, "message": "is not valid JSON"})
        return _INVALID


def _voice_fields(details: Details, values: Mapping[str, object], *, suffix: str) -> VoiceFields:
    """Validated with the same rules as ``PATCH /voices`` (placeholders where one failed).

    ``suffix`` ends the names the list fields are reported under (``_json`` in a form).
    """
    display_name = values.get("display_name")
    language_primary = values.get("language_primary")
    if _blank(display_name):
        details.append({"field": "display_name", "message": "is required"})
        name = None
    else:
        name = check_display_name(details, display_name)
    if _blank(language_primary):
        details.append({"field": "language_primary", "message": "is required"})
        primary = None
    else:
        primary = check_language(details, language_primary, "language_primary")
    language_supported = values.get("language_supported")
    supported: list[str] = []
    if language_supported is not None and language_supported is not _INVALID:
        field = f"language_supported{suffix}"
        supported = check_languages(details, language_supported, field) or []
    style_tags = values.get("style_tags")
    tags: list[str] = []
    if style_tags is not None and style_tags is not _INVALID:
        tags = check_style_tags(details, style_tags, f"style_tags{suffix}") or []
    gender_hint, age_hint = values.get("gender_hint"), values.get("age_hint")
    description = values.get("description")
    gender = (
        None if _blank(gender_hint) else check_enum(details, gender_hint, "gender_hint", GENDERS)
    )
    age = None if _blank(age_hint) else check_enum(details, age_hint, "age_hint", AGES)
    text = None if _blank(description) else check_description(details, description)
    return VoiceFields(
        display_name=name or "",
        language_primary=primary or "",
        language_supported=tuple(with_primary(primary, supported)) if primary else (),
        gender_hint=gender or "unspecified",
        age_hint=age or "unspecified",
        style_tags=tuple(tags),
        description=text,
    )


def _prompt(details: Details, value: str | None) -> str:
    """``voice_design_prompt``: 10–1000 characters."""
    return _required_text(details, "voice_design_prompt", value, low=10, high=1000)


def _form_text(form: MultipartForm, name: str) -> str | None:
    value = form.fields.get(name)
    return value if value is not None and value.strip() else None


def _form_voice_fields(details: Details, form: MultipartForm) -> VoiceFields:
    values: dict[str, object] = dict(form.fields)
    for name in _JSON_LISTS:
        field = f"{name}_json"
        values[name] = _json_text(details, field, form.fields.get(field))
    return _voice_fields(details, values, suffix="_json")


def _audio_part(details: Details, form: MultipartForm, name: str) -> AudioPart:
    """Exactly one of the file ``name`` and the field ``name_scaidrive_json``."""
    upload = form.files.get(name)
    drive_field = f"{name}_scaidrive_json"
    drive = _form_text(form, drive_field)
    if upload is not None and drive is not None:
        message = f"give either {name} or {drive_field}, not both"
        details.extend(
            [{"field": name, "message": message}, {"field": drive_field, "message": message}]
        )
    elif upload is None and drive is None:
        details.append({"field": name, "message": f"a file (or {drive_field}) is required"})
    elif upload is not None and upload.size == 0:
        details.append({"field": name, "message": "the file is empty"})
    return AudioPart(name, upload, drive)


def _raise_if_bad(details: Details, code: str, summary: str) -> None:
    if details:
        first = details[0]
        message = f"{first['field']}: {first['message']}" if len(details) == 1 else summary
        raise ScaiError(code, message, details=details)


def parse_voice_form(form: MultipartForm) -> CloneRequest | DesignRequest:
    """A multipart ``POST /voices``: design mode when ``voice_design_prompt`` is given.

    Field problems are one 422 ``VALIDATION_ERROR``. In clone mode, problems with the
    consent inputs (``consent``/``consent_scaidrive_json``, ``consent_text``,
    ``consent_user_full_name``, ``consent_stated_purpose``) are then one 422
    ``SCAISPEAK_CONSENT_INVALID``. Both list every bad field in ``details``.
    """
    if _form_text(form, "voice_design_prompt") is not None:
        return _design_form(form)
    return _clone_form(form)


def _design_form(form: MultipartForm) -> DesignRequest:
    details: Details = []
    for name in _CLONE_INPUTS:
        if name in form.files or _form_text(form, name) is not None:
            details.append({"field": name, "message": "not allowed with voice_design_prompt"})
    prompt = _prompt(details, form.fields.get("voice_design_prompt"))
    fields = _form_voice_fields(details, form)
    _raise_if_bad(details, "VALIDATION_ERROR", "invalid voice design request")
    return DesignRequest(fields, prompt)


def _clone_form(form: MultipartForm) -> CloneRequest:
    details: Details = []
    fields = _form_voice_fields(details, form)
    reference = _audio_part(details, form, "reference")
    _raise_if_bad(details, "VALIDATION_ERROR", "invalid voice request")
    consent_details: Details = []
    consent_audio = _audio_part(consent_details, form, "consent")
    raw_text = form.fields.get("consent_text")
    consent = ConsentFields(
        text=_required_text(
            consent_details,
            "consent_text",
            None if raw_text is None else normalise_consent_text(raw_text),
            low=20,
            high=2000,
        ),
        full_name=_required_text(
            consent_details,
            "consent_user_full_name",
            form.fields.get("consent_user_full_name"),
            low=1,
            high=200,
        ),
        purpose=_required_text(
            consent_details,
            "consent_stated_purpose",
            form.fields.get("consent_stated_purpose"),
            low=1,
            high=1000,
        ),
    )
    _raise_if_bad(consent_details, "SCAISPEAK_CONSENT_INVALID", "the consent inputs are not usable")
    return CloneRequest(fields, consent, reference, consent_audio)


def parse_design_json(body: DesignBody) -> DesignRequest:
    """A JSON ``POST /voices`` (design mode only): every bad field in one 422."""
    details: Details = []
    prompt = _prompt(details, body.voice_design_prompt)
    fields = _voice_fields(details, msgspec.structs.asdict(body), suffix="")
    _raise_if_bad(details, "VALIDATION_ERROR", "invalid voice design request")
    return DesignRequest(fields, prompt)
