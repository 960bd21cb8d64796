"""Token scrubbing (§4.11)."""

from __future__ import annotations

import io
import json

import structlog

from scaicommon.logging import REDACTED, configure_logging, scrub

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c3JfYSJ9.c2lnbmF0dXJlLXZhbHVl"
KEY = "sgk_" + "A" * 40


def test_scrub_patterns() -> None:
    assert KEY not in scrub(f"key is {KEY}")
    assert JWT not in scrub(f"/stream?token={JWT}&x=1")
    assert scrub("/p?token=abc&other=1") == f"/p?token={REDACTED}&other=1"
    assert scrub("/p?api_key=abc") == f"/p?api_key={REDACTED}"
    assert scrub("Authorization: Bearer abc.def") == f"Authorization: Bearer {REDACTED}"
    assert scrub("monkey=1") == "monkey=1"


def test_log_lines_carry_context_and_never_tokens() -> None:
    stream = io.StringIO()
    configure_logging("scaiecho", "0.1.0", fmt="json", stream=stream)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id="req_1")
    structlog.get_logger("t").info(
        "event_x", path=f"/a?token={JWT}", authorization=f"Bearer {KEY}", nested={"k": KEY}
    )
    import logging

    logging.getLogger("hypercorn.error").warning("client sent %s", KEY)
    structlog.contextvars.clear_contextvars()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert JWT not in stream.getvalue() and KEY not in stream.getvalue()
    first = lines[0]
    assert first["event"] == "event_x" and first["request_id"] == "req_1"
    assert first["service"] == "scaiecho" and first["tenant_id"] is None
    assert first["timestamp"].endswith("Z")
    assert lines[1]["event"] == f"client sent {REDACTED}"
