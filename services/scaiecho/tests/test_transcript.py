"""The internal transcript: text, offset/join and the §4.2 segment objects."""

from __future__ import annotations

import pytest

from scaiecho.transcript import Segment, Transcript, Word


def _transcript(
    *segments: Segment, language: str | None = "en", node_id: str | None = "node_a"
) -> Transcript:
    return Transcript(
        segments=segments,
        language=language,
        duration_ms=12_500,
        backend="A",
        node_id=node_id,
        engine="faster-whisper",
    )


FIRST = Segment(
    start_ms=0,
    end_ms=4_800,
    text=" Thanks everyone for joining. ",
    confidence=0.94,
    words=(
        Word("Thanks", 0, 320, 0.97),
        Word(" everyone", 320, 800, None),
    ),
)
SECOND = Segment(
    start_ms=5_100,
    end_ms=12_500,
    text="Let's start with the release status.",
    confidence=None,
    words=(Word("Let's", 5_100, 5_400, 1.5),),
)
MEETING = _transcript(FIRST, SECOND)


def test_text_joins_trimmed_segments_and_skips_empty_ones() -> None:
    blank = Segment(start_ms=4_800, end_ms=5_100, text="   ", confidence=0.1)
    assert _transcript(FIRST, blank, SECOND).text == (
        "Thanks everyone for joining. Let's start with the release status."
    )


def test_text_of_an_empty_transcript_is_empty() -> None:
    assert _transcript().text == ""


def test_offset_shifts_segments_and_words_but_not_duration() -> None:
    shifted = MEETING.offset(600_000)
    assert [(s.start_ms, s.end_ms) for s in shifted.segments] == [
        (600_000, 604_800),
        (605_100, 612_500),
    ]
    assert [(w.start_ms, w.end_ms) for w in shifted.segments[0].words] == [
        (600_000, 600_320),
        (600_320, 600_800),
    ]
    assert shifted.segments[1].words[0].start_ms == 605_100
    assert shifted.duration_ms == 12_500
    assert shifted.segments[0].text == FIRST.text
    assert MEETING.segments[0].start_ms == 0  # the original is untouched


def test_join_concatenates_in_order() -> None:
    first = _transcript(FIRST, language=None, node_id=None)
    second = _transcript(SECOND, language="de", node_id="node_b").offset(600_000)
    joined = Transcript.join([first, second], 612_500)
    assert [s.start_ms for s in joined.segments] == [0, 605_100]
    assert joined.duration_ms == 612_500
    assert joined.language == "de"
    assert joined.node_id == "node_b"
    assert joined.backend == "A"
    assert joined.engine == "faster-whisper"
    assert joined.text == "Thanks everyone for joining. Let's start with the release status."


def test_join_takes_the_first_language() -> None:
    joined = Transcript.join(
        [_transcript(FIRST, language="en"), _transcript(SECOND, language="nl")], 1
    )
    assert joined.language == "en"


def test_join_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        Transcript.join([], 0)


def test_api_segments_none() -> None:
    assert MEETING.api_segments("none", diarized=False) == []


def test_api_segments_segment() -> None:
    assert MEETING.api_segments("segment", diarized=False) == [
        {"id": 0, "start": 0.0, "end": 4.8, "text": "Thanks everyone for joining.",
         "confidence": 0.94},
        {"id": 1, "start": 5.1, "end": 12.5, "text": "Let's start with the release status.",
         "confidence": 0.0},
    ]  # fmt: skip


def test_api_segments_word() -> None:
    assert MEETING.api_segments("word", diarized=False) == [
        {"id": 0, "start": 0.0, "end": 4.8, "text": "Thanks everyone for joining.",
         "confidence": 0.94,
         "words": [{"word": "Thanks", "start": 0.0, "end": 0.32, "confidence": 0.97},
                   {"word": "everyone", "start": 0.32, "end": 0.8, "confidence": 0.0}]},
        {"id": 1, "start": 5.1, "end": 12.5, "text": "Let's start with the release status.",
         "confidence": 0.0,
         "words": [{"word": "Let's", "start": 5.1, "end": 5.4, "confidence": 1.0}]},
    ]  # fmt: skip


def test_api_segments_diarized_forces_segments_for_none() -> None:
    spoken = _transcript(
        Segment(0, 1_234, "Hello.", 0.5, speaker_label="Alice", speaker_id="spkr_01"),
        Segment(1_234, 2_001, "Hi.", -0.2, speaker_label="spk_1"),
    )
    expected = [
        {"id": 0, "start": 0.0, "end": 1.234, "text": "Hello.", "confidence": 0.5,
         "speaker_label": "Alice", "speaker_id": "spkr_01"},
        {"id": 1, "start": 1.234, "end": 2.001, "text": "Hi.", "confidence": 0.0,
         "speaker_label": "spk_1", "speaker_id": None},
    ]  # fmt: skip
    assert spoken.api_segments("none", diarized=True) == expected
    assert spoken.api_segments("segment", diarized=True) == expected


def test_api_segments_diarized_with_words() -> None:
    spoken = _transcript(
        Segment(0, 900, "Hello", 0.5, words=(Word("Hello", 0, 900, 0.8),), speaker_label="spk_0")
    )
    assert spoken.api_segments("word", diarized=True) == [
        {"id": 0, "start": 0.0, "end": 0.9, "text": "Hello", "confidence": 0.5,
         "speaker_label": "spk_0", "speaker_id": None,
         "words": [{"word": "Hello", "start": 0.0, "end": 0.9, "confidence": 0.8}]},
    ]  # fmt: skip


def test_api_segments_clamp_odd_confidences() -> None:
    odd = _transcript(Segment(0, 1, "a", float("nan")), Segment(1, 2, "b", 7.0))
    assert [s["confidence"] for s in odd.api_segments("segment", diarized=False)] == [0.0, 1.0]


def test_api_segments_of_an_empty_transcript() -> None:
    assert _transcript().api_segments("word", diarized=True) == []
