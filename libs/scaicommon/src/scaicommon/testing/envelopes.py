"""Assertions on the platform's response envelopes (platform §4), for tests over real HTTP."""

from __future__ import annotations

from typing import Any

import httpx


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The ``data`` of a success envelope with ``status`` (fails with the body otherwise)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert body["meta"]["request_id"] == response.headers["x-request-id"]
    return body["data"]


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The ``error`` object of an error envelope with this status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == code, body
    err: dict[str, Any] = body["error"]
    return err


def fields(err: dict[str, Any]) -> list[str]:
    """The ``details`` fields of a validation error."""
    return [d["field"] for d in err.get("details") or []]
