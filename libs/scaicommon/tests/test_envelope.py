"""The envelope and code table round-tripped through a Starlette app (§2, §3)."""

from __future__ import annotations

import asyncio
import re

import httpx
import msgspec
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from scaicommon.bodies import RequestBody, read_json
from scaicommon.envelope import CatchAllMiddleware, listing, scai_exception_handler, success
from scaicommon.errors import ScaiError, register_module_codes, ws_close_for
from scaicommon.requestid import RequestIdMiddleware

register_module_codes("scaitest", {"SCAITEST_THING_NOT_FOUND": 404})


class Policy(RequestBody):
    language_hint: str
    count: int = 0


class Outer(RequestBody):
    inner: Policy


async def ok(_: Request) -> Response:
    return success({"x": 1}, status_code=201, headers={"Location": "/x"})


async def items(_: Request) -> Response:
    return listing([{"id": 1}], has_more=True, next_cursor="abc")


async def body(request: Request) -> Response:
    parsed = await read_json(request, Outer)
    return success({"hint": parsed.inner.language_hint})


async def denied(_: Request) -> Response:
    raise ScaiError("AUTHZ_PERMISSION_DENIED", "no", required_permission="scaitest:x")


async def missing(_: Request) -> Response:
    raise ScaiError("SCAITEST_THING_NOT_FOUND", "no such thing")


async def limited(_: Request) -> Response:
    raise ScaiError("RATE_LIMITED", "slow down", retry_after=7, limit_level="user", limit=3)


async def boom(_: Request) -> Response:
    raise RuntimeError("secret internal detail at /srv/db")


async def stream_boom(_: Request) -> Response:
    async def gen():  # type: ignore[no-untyped-def]
        yield b"partial"
        raise RuntimeError("cut")

    return StreamingResponse(gen())


APP = Starlette(
    routes=[
        Route("/ok", ok, methods=["GET"]),
        Route("/items", items),
        Route("/body", body, methods=["POST"]),
        Route("/denied", denied),
        Route("/missing", missing),
        Route("/limited", limited),
        Route("/boom", boom),
        Route("/stream", stream_boom),
        Route("/v1/modules/scaitest/v1/audio/x", body, methods=["POST"]),
    ],
    middleware=[Middleware(RequestIdMiddleware), Middleware(CatchAllMiddleware)],
    exception_handlers={
        ScaiError: scai_exception_handler,
        msgspec.ValidationError: scai_exception_handler,
        msgspec.DecodeError: scai_exception_handler,
        404: scai_exception_handler,
        405: scai_exception_handler,
    },
)


@pytest.fixture
async def client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=APP, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


REQ_ID = re.compile(r"^req_[0-9a-f]{24}$")


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert body["status"] == "error" and body["error"]["code"] == code
    assert body["meta"]["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return body


async def test_success_and_listing_shapes(client: httpx.AsyncClient) -> None:
    r = await client.get("/ok")
    assert r.status_code == 201 and r.headers["location"] == "/x"
    assert r.json()["data"] == {"x": 1}
    assert REQ_ID.match(r.json()["meta"]["request_id"])
    page = (await client.get("/items")).json()
    assert page["pagination"] == {"has_more": True, "next_cursor": "abc"}
    assert page["data"]["items"] == [{"id": 1}]


async def test_request_id_is_echoed_or_minted(client: httpx.AsyncClient) -> None:
    r = await client.get("/ok", headers={"X-Request-ID": "client-id.1:2"})
    assert r.headers["x-request-id"] == "client-id.1:2"
    assert r.json()["meta"]["request_id"] == "client-id.1:2"
    r = await client.get("/ok", headers={"X-Request-ID": "bad id with spaces"})
    assert REQ_ID.match(r.headers["x-request-id"])


async def test_error_codes(client: httpx.AsyncClient) -> None:
    body = assert_error(await client.get("/denied"), 403, "AUTHZ_PERMISSION_DENIED")
    assert body["error"]["required_permission"] == "scaitest:x"  # type: ignore[index]
    assert_error(await client.get("/missing"), 404, "SCAITEST_THING_NOT_FOUND")
    assert_error(await client.get("/nowhere"), 404, "NOT_FOUND")
    r = await client.post("/ok")
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in r.headers["allow"]
    r = await client.get("/limited")
    body = assert_error(r, 429, "RATE_LIMITED")
    assert r.headers["retry-after"] == "7"
    assert body["error"] == {
        "code": "RATE_LIMITED",
        "message": "slow down",
        "retry_after": 7,
        "limit_level": "user",
        "limit": 3,
    }
    body = assert_error(await client.get("/boom"), 500, "INTERNAL_ERROR")
    assert body["error"]["message"] == "internal error"  # type: ignore[index]


async def test_validation_errors_name_fields(client: httpx.AsyncClient) -> None:
    r = await client.post("/body", json={"inner": {"langauge_hint": "en"}})
    body = assert_error(r, 422, "VALIDATION_ERROR")
    assert body["error"]["details"] == [
        {"field": "inner.langauge_hint", "message": "unknown field"}
    ]  # type: ignore[index]
    r = await client.post("/body", json={"inner": {"language_hint": "en", "count": "1"}})
    body = assert_error(r, 422, "VALIDATION_ERROR")
    assert body["error"]["details"][0]["field"] == "inner.count"  # type: ignore[index]
    r = await client.post(
        "/body", content=b'{"inner":', headers={"content-type": "application/json"}
    )
    body = assert_error(r, 422, "VALIDATION_ERROR")
    assert body["error"]["details"][0]["field"] == "body"  # type: ignore[index]
    r = await client.post("/body", content=b"x", headers={"content-type": "text/plain"})
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    r = await client.post("/body", json={"inner": {"language_hint": "en"}})
    assert r.json()["data"] == {"hint": "en"}


async def test_openai_routes_use_openai_error_shape(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/modules/scaitest/v1/audio/x", json={"nope": 1})
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "unknown field 'nope'",
            "type": "invalid_request_error",
            "param": "nope",
            "code": "VALIDATION_ERROR",
        }
    }


async def test_streamed_body_failure_is_cut_not_rewritten() -> None:
    sent: list[dict[str, object]] = []
    requested = False

    async def receive() -> dict[str, object]:
        nonlocal requested
        if requested:
            await asyncio.Event().wait()  # no disconnect: the client stays
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/stream",
        "raw_path": b"/stream",
        "query_string": b"",
        "headers": [],
        "root_path": "",
        "scheme": "http",
        "server": ("test", 80),
        "client": ("127.0.0.1", 1),
        "http_version": "1.1",
    }
    await CatchAllMiddleware(APP.router)(scope, receive, send)  # type: ignore[arg-type]
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1 and starts[0]["status"] == 200
    bodies = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")  # type: ignore[misc]
    assert bodies == b"partial"


@pytest.mark.parametrize(
    ("code", "status", "started", "close"),
    [
        ("AUTH_TOKEN_MISSING", 401, False, 4401),
        ("AUTHZ_PERMISSION_DENIED", 403, False, 4403),
        ("VALIDATION_ERROR", 422, False, 4400),
        ("UNSUPPORTED_MEDIA_TYPE", 415, False, 4400),
        ("RATE_LIMITED", 429, False, 4429),
        ("BUDGET_EXCEEDED", 402, False, 4429),
        ("SCAIECHO_CAPACITY_EXHAUSTED", 503, False, 4429),
        ("SCAIECHO_BACKEND_UNAVAILABLE", 502, False, 4502),
        ("SCAIECHO_BACKEND_UNAVAILABLE", 502, True, 1011),
        ("AUTH_PROVIDER_UNAVAILABLE", 503, False, 1011),
        ("CONFLICT", 409, False, 4409),
        ("SCAIECHO_JOB_NOT_FOUND", 404, False, 4404),
        ("PAYLOAD_TOO_LARGE", 413, False, 1009),
        ("protocol_error", 400, True, 4400),
        ("idle_timeout", 408, True, 4408),
        ("BACKEND_ERROR", 502, True, 1011),
    ],
)
def test_websocket_close_codes(code: str, status: int, started: bool, close: int) -> None:
    assert ws_close_for(code, status, session_started=started) == close
