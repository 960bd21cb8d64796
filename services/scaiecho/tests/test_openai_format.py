"""The OpenAI-compatible response bodies (scaiecho.md §11), byte for byte."""

from __future__ import annotations

import json

import pytest

from scaiecho.openai_format import (
    LANGUAGE_NAMES,
    MODELS,
    RESPONSE_FORMATS,
    language_name,
    models_body,
    preference_for_model,
    render,
)
from scaiecho.transcript import Segment, Transcript, Word


def _transcript(
    *segments: Segment, language: str | None = "en", duration_ms: int = 12_500
) -> Transcript:
    return Transcript(
        segments=segments,
        language=language,
        duration_ms=duration_ms,
        backend="B",
        node_id=None,
        engine="whisper-1",
    )


MEETING = _transcript(
    Segment(
        start_ms=0,
        end_ms=4_800,
        text=" Thanks everyone for joining.",
        confidence=0.94,
        words=(Word("Thanks", 0, 320, 0.97), Word("everyone", 320, 800, 0.9)),
    ),
    Segment(
        start_ms=5_100,
        end_ms=12_500,
        text="Let's start with the release status.",
        confidence=0.91,
        words=(Word("Let's", 5_100, 5_400, None),),
    ),
)
LONG = _transcript(
    Segment(start_ms=3_725_042, end_ms=3_727_500, text="Über eine Stunde später.", confidence=None),
    Segment(start_ms=359_999_999, end_ms=360_000_000, text="Hundert.", confidence=None),
    language="de",
    duration_ms=360_000_000,
)
EMPTY = _transcript(language=None, duration_ms=0)


def _render(transcript: Transcript, fmt: str, *, words: bool = False) -> tuple[str, str]:
    body, media_type = render(transcript, fmt, words=words, temperature=0.0)
    return body.decode("utf-8"), media_type


def test_json() -> None:
    assert _render(MEETING, "json") == (
        '{"text":"Thanks everyone for joining. Let\'s start with the release status."}',
        "application/json",
    )


def test_json_keeps_utf8() -> None:
    body, _ = render(LONG, "json", words=False, temperature=0.0)
    assert body == '{"text":"Über eine Stunde später. Hundert."}'.encode()


def test_text() -> None:
    assert _render(MEETING, "text") == (
        "Thanks everyone for joining. Let's start with the release status.\n",
        "text/plain; charset=utf-8",
    )


def test_srt() -> None:
    assert _render(MEETING, "srt") == (
        "1\n"
        "00:00:00,000 --> 00:00:04,800\n"
        "Thanks everyone for joining.\n"
        "\n"
        "2\n"
        "00:00:05,100 --> 00:00:12,500\n"
        "Let's start with the release status.\n"
        "\n",
        "application/x-subrip",
    )


def test_srt_past_an_hour() -> None:
    assert _render(LONG, "srt")[0] == (
        "1\n"
        "01:02:05,042 --> 01:02:07,500\n"
        "Über eine Stunde später.\n"
        "\n"
        "2\n"
        "99:59:59,999 --> 100:00:00,000\n"
        "Hundert.\n"
        "\n"
    )


def test_vtt() -> None:
    assert _render(MEETING, "vtt") == (
        "WEBVTT\n"
        "\n"
        "00:00:00.000 --> 00:00:04.800\n"
        "Thanks everyone for joining.\n"
        "\n"
        "00:00:05.100 --> 00:00:12.500\n"
        "Let's start with the release status.\n"
        "\n",
        "text/vtt",
    )


def test_vtt_past_an_hour() -> None:
    assert _render(LONG, "vtt")[0] == (
        "WEBVTT\n"
        "\n"
        "01:02:05.042 --> 01:02:07.500\n"
        "Über eine Stunde später.\n"
        "\n"
        "99:59:59.999 --> 100:00:00.000\n"
        "Hundert.\n"
        "\n"
    )


def test_cues_skip_empty_segments_and_flatten_lines() -> None:
    odd = _transcript(
        Segment(0, 1_000, "  ", 0.5),
        Segment(1_000, 2_000, "one\n\ntwo  <b>&</b> -->", 0.5),
    )
    assert _render(odd, "srt")[0] == ("1\n00:00:01,000 --> 00:00:02,000\none two <b>&</b> -->\n\n")
    assert _render(odd, "vtt")[0] == (
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\none two &lt;b&gt;&amp;&lt;/b&gt; --&gt;\n\n"
    )


def test_verbose_json() -> None:
    body, media_type = render(MEETING, "verbose_json", words=False, temperature=0.2)
    assert media_type == "application/json"
    assert body.decode() == (
        '{"task":"transcribe","language":"english","duration":12.5,'
        '"text":"Thanks everyone for joining. Let\'s start with the release status.",'
        '"segments":['
        '{"id":0,"seek":0,"start":0.0,"end":4.8,"text":"Thanks everyone for joining.",'
        '"tokens":[],"temperature":0.2,"avg_logprob":0.0,"compression_ratio":0.0,'
        '"no_speech_prob":0.0},'
        '{"id":1,"seek":0,"start":5.1,"end":12.5,"text":"Let\'s start with the release status.",'
        '"tokens":[],"temperature":0.2,"avg_logprob":0.0,"compression_ratio":0.0,'
        '"no_speech_prob":0.0}]}'
    )


def test_verbose_json_with_words() -> None:
    body, _ = render(MEETING, "verbose_json", words=True, temperature=0.0)
    parsed = json.loads(body)
    assert parsed["words"] == [
        {"word": "Thanks", "start": 0.0, "end": 0.32},
        {"word": "everyone", "start": 0.32, "end": 0.8},
        {"word": "Let's", "start": 5.1, "end": 5.4},
    ]
    assert list(parsed) == ["task", "language", "duration", "text", "segments", "words"]
    assert body.decode().endswith(
        ',"words":[{"word":"Thanks","start":0.0,"end":0.32},'
        '{"word":"everyone","start":0.32,"end":0.8},{"word":"Let\'s","start":5.1,"end":5.4}]}'
    )


def test_verbose_json_long_audio() -> None:
    parsed = json.loads(render(LONG, "verbose_json", words=False, temperature=1.0)[0])
    assert parsed["language"] == "german"
    assert parsed["duration"] == 360000.0
    assert [(s["start"], s["end"]) for s in parsed["segments"]] == [
        (3725.042, 3727.5),
        (359999.999, 360000.0),
    ]
    assert {s["temperature"] for s in parsed["segments"]} == {1.0}


def test_empty_transcript() -> None:
    assert _render(EMPTY, "json") == ('{"text":""}', "application/json")
    assert _render(EMPTY, "text")[0] == "\n"
    assert _render(EMPTY, "srt")[0] == ""
    assert _render(EMPTY, "vtt")[0] == "WEBVTT\n\n"
    assert _render(EMPTY, "verbose_json", words=True)[0] == (
        '{"task":"transcribe","language":null,"duration":0.0,"text":"","segments":[],"words":[]}'
    )


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError):
        render(MEETING, "tsv", words=False, temperature=0.0)


def test_every_format_renders() -> None:
    assert RESPONSE_FORMATS == ("json", "text", "srt", "vtt", "verbose_json")
    for fmt in RESPONSE_FORMATS:
        body, media_type = render(MEETING, fmt, words=True, temperature=0.0)
        assert body and media_type


# Whisper's languages as ISO 639-1 (its "jw" is "jv"; "haw" and "yue" have no 2-letter code).
WHISPER_CODES = {
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv",
    "it", "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no",
    "th", "ur", "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr",
    "az", "sl", "kn", "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw",
    "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu",
    "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl",
    "mg", "as", "tt", "ln", "ha", "ba", "jv", "su",
}  # fmt: skip


def test_language_names_cover_whisper() -> None:
    assert set(LANGUAGE_NAMES) == WHISPER_CODES
    assert all(name == name.lower() for name in LANGUAGE_NAMES.values())
    assert len(set(LANGUAGE_NAMES.values())) == len(LANGUAGE_NAMES)


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("en", "english"), ("de", "german"), ("nl", "dutch"), ("es", "spanish"),
        ("zh", "chinese"), ("ca", "catalan"), ("ro", "romanian"), ("pa", "punjabi"),
        ("ps", "pashto"), ("si", "sinhala"), ("lb", "luxembourgish"), ("ht", "haitian creole"),
        ("my", "burmese"), ("he", "hebrew"), ("jv", "javanese"), ("nn", "nynorsk"),
    ],
)  # fmt: skip
def test_language_names(code: str, name: str) -> None:
    assert LANGUAGE_NAMES[code] == name
    assert language_name(code) == name


def test_language_name_edge_cases() -> None:
    assert language_name(None) is None
    assert language_name("xx") is None
    assert language_name("en-US") == "english"
    assert language_name("iw") == "hebrew"


def test_models_body() -> None:
    assert MODELS == ("whisper-1", "scaiecho-self-hosted", "scaiecho-relay")
    assert models_body() == {
        "object": "list",
        "data": [
            {"id": "whisper-1", "object": "model", "created": 0, "owned_by": "scaiecho"},
            {"id": "scaiecho-self-hosted", "object": "model", "created": 0, "owned_by": "scaiecho"},
            {"id": "scaiecho-relay", "object": "model", "created": 0, "owned_by": "scaiecho"},
        ],
    }


@pytest.mark.parametrize(
    ("model", "preference"),
    [
        ("scaiecho-self-hosted", "prefer_self_hosted"),
        ("scaiecho-relay", "prefer_relay"),
        ("whisper-1", "any"),
        ("gpt-4o-transcribe", "any"),
        ("", "any"),
        (None, "any"),
    ],
)
def test_preference_for_model(model: str | None, preference: str) -> None:
    assert preference_for_model(model) == preference
