"""Ids (§1.1) and timestamps (§1.2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from scaicommon.ids import is_valid_external_id, is_valid_id, new_id, new_ulid
from scaicommon.timefmt import format_ts, parse_ts


def test_ids_have_prefix_and_sort_by_creation() -> None:
    ids = [new_id("job") for _ in range(2000)]
    assert all(is_valid_id(i, "job") for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert len(ids[0]) == len("job_") + 26
    assert ids[0][4:] == ids[0][4:].upper()


def test_unknown_prefix_is_refused() -> None:
    with pytest.raises(ValueError):
        new_id("spk")


def test_ulid_alphabet_is_crockford() -> None:
    value = new_ulid()
    assert not set(value) & set("ILOU")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("tnt_demo", True),
        ("usr.a@b-c", True),
        ("a:b", False),
        ("", False),
        ("_x", False),
        ("x" * 128, True),
        ("x" * 129, False),
    ],
)
def test_external_ids(value: str, ok: bool) -> None:
    assert is_valid_external_id(value) is ok


def test_format_is_utc_millis_with_z() -> None:
    stamp = datetime(2026, 4, 22, 16, 30, 1, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert format_ts(stamp) == "2026-04-22T14:30:01.123Z"
    assert format_ts(None) is None


def test_parse_normalises_offsets_and_refuses_naive() -> None:
    assert parse_ts("2026-04-22T16:30:01+02:00") == datetime(2026, 4, 22, 14, 30, 1, tzinfo=UTC)
    assert parse_ts("2026-04-22T14:30:01.5Z").microsecond == 500000
    with pytest.raises(ValueError):
        parse_ts("2026-04-22T14:30:01")


def test_word_error_rate() -> None:
    from scaicommon.testing.wer import word_error_rate

    assert word_error_rate("Hello, world!", "hello world") == 0.0
    assert word_error_rate("the cat sat", "the cat sat down") == 1 / 3
    assert word_error_rate("the cat sat", "a cat") == 2 / 3
    assert word_error_rate("", "") == 0.0
    assert word_error_rate("open at nine, five books", "open at 9, 5 books") == 0.0
    assert word_error_rate("twenty one", "21") == 0.0
    assert word_error_rate("four", "5") == 1.0
