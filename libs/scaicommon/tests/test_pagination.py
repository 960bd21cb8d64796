"""``limit``/``cursor`` parsing and the cursor codec (platform §2.5)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from scaicommon.errors import ScaiError
from scaicommon.pagination import (
    FilterSpec,
    Page,
    decode_cursor,
    encode_cursor,
    filter_hash,
    keyset_select,
    parse_limit,
    parse_log_limit,
)

WHEN = datetime(2026, 4, 22, 14, 30, 1, 123456, tzinfo=UTC)


def _field(error: ScaiError) -> str:
    assert error.code == "VALIDATION_ERROR"
    assert error.http_status == 422
    assert error.details is not None
    return error.details[0]["field"]


def test_limit_defaults_and_bounds() -> None:
    assert parse_limit(None) == 50
    assert parse_limit("1") == 1
    assert parse_limit("200") == 200
    assert parse_limit(" 7 ") == 7
    assert parse_log_limit(None) == 100
    assert parse_log_limit("1000") == 1000


@pytest.mark.parametrize("raw", ["0", "201", "-1", "abc", "1.5", "", "1e2", "+-3", "²"])
def test_limit_out_of_range_or_garbage_is_rejected_not_clamped(raw: str) -> None:
    with pytest.raises(ScaiError) as info:
        parse_limit(raw)
    assert _field(info.value) == "limit"


def test_log_limit_rejects_1001() -> None:
    with pytest.raises(ScaiError) as info:
        parse_log_limit("1001")
    assert _field(info.value) == "limit"


def test_cursor_round_trip_keeps_microseconds_and_format() -> None:
    filters = {"tenant_id": "tnt_a", "action": "scaiecho.speaker.read"}
    cursor = encode_cursor(WHEN, "audit_01ABC", filters)
    assert "=" not in cursor and "+" not in cursor and "/" not in cursor
    body = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    assert body == {
        "v": 1,
        "k": ["2026-04-22T14:30:01.123456Z", "audit_01ABC"],
        "f": filter_hash(filters),
    }
    assert len(body["f"]) == 8
    # Key order and None-valued filters do not change the filter set.
    same = {"action": "scaiecho.speaker.read", "tenant_id": "tnt_a", "since": None}
    assert decode_cursor(cursor, same) == (WHEN, "audit_01ABC")


def test_cursor_filter_mismatch_is_a_validation_error() -> None:
    cursor = encode_cursor(WHEN, "audit_1", {"tenant_id": "tnt_a"})
    for other in ({"tenant_id": "tnt_b"}, {"tenant_id": "tnt_a", "action": "x.y.read"}):
        with pytest.raises(ScaiError) as info:
            decode_cursor(cursor, other)
        assert _field(info.value) == "cursor"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!!",
        "x" * 5000,
        _b64(b"not json"),
        _b64(b"[1,2]"),
        _b64(json.dumps({"v": 2, "k": ["2026-04-22T14:30:01Z", "a"], "f": "00000000"}).encode()),
        _b64(json.dumps({"v": 1, "k": ["yesterday", "a"], "f": "00000000"}).encode()),
        _b64(json.dumps({"v": 1, "k": ["2026-04-22T14:30:01", "a"], "f": "0"}).encode()),
        _b64(json.dumps({"v": 1, "k": ["2026-04-22T14:30:01Z"], "f": "0"}).encode()),
        _b64(b"\xff\xfe"),
    ],
)
def test_garbage_cursor_is_a_validation_error(cursor: str) -> None:
    with pytest.raises(ScaiError) as info:
        decode_cursor(cursor, {})
    assert _field(info.value) == "cursor"


def test_page_from_limit_plus_one_rows() -> None:
    rows = [(datetime(2026, 1, 1, 0, 0, i, tzinfo=UTC), f"id_{i}") for i in (5, 4, 3)]
    page = Page.from_rows(rows, 2, key=lambda r: r, filters={"t": 1})
    assert page.items == rows[:2]
    assert page.has_more
    assert page.next_cursor is not None
    assert decode_cursor(page.next_cursor, {"t": 1}) == rows[1]
    assert page.pagination() == {"has_more": True, "next_cursor": page.next_cursor}

    last = Page.from_rows(rows[:2], 2, key=lambda r: r, filters={})
    assert (last.has_more, last.next_cursor) == (False, None)
    assert last.map(lambda r: r[1]).items == ["id_5", "id_4"]


def test_keyset_select_refuses_unknown_filters() -> None:
    with pytest.raises(ValueError, match="unknown filter"):
        keyset_select(
            "audit_log",
            conditions={},
            filters={"evil": 1},
            specs={"action": FilterSpec("action")},
            after=None,
            limit=5,
        )
    with pytest.raises(ValueError):
        FilterSpec("x; DROP TABLE y")
