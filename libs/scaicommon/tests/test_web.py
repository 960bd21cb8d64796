"""The app factory served by a real Hypercorn: auth, envelope, WebSocket closes, logs."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from scaicommon.apikeys import ApiKeyStore
from scaicommon.bodies import RequestBody, read_json
from scaicommon.envelope import success
from scaicommon.logging import configure_logging
from scaicommon.middleware import principal_of, ws_open
from scaicommon.principal import ModulePermissions
from scaicommon.runtime import Runtime, ServiceSpec
from scaicommon.settings import CommonSettings
from scaicommon.store import library_migrations, migrate
from scaicommon.testing import S3Endpoint, start_scaikey
from scaicommon.testing.inloop import serving
from scaicommon.tracing import build_tracer_provider
from scaicommon.web import create_service_app
from scaidevstack.scaikey import KeyStore

PERMS = ModulePermissions(
    "scaitest", frozenset({"scaitest:use", "scaitest:admin"}), frozenset({"scaitest:use"})
)
SPEC = ServiceSpec("scaitest", "0.0.1", PERMS)
MOUNT = "/v1/modules/scaitest"


class TestSettings(CommonSettings, kw_only=True):
    ENV_PREFIX = "SCAITEST"
    MODULE = "scaitest"


class Body(RequestBody):
    name: str


async def admin_only(request: Request) -> Response:
    principal_of(request).require("scaitest:admin")
    return success({"ok": True})


async def echo_body(request: Request) -> Response:
    principal_of(request).require("scaitest:use")
    body = await read_json(request, Body)
    return success({"name": body.name, "tenant_id": principal_of(request).tenant_id})


async def explode(_: Request) -> Response:
    raise RuntimeError("database password is hunter2")


def routes(runtime: Runtime) -> list[Route | WebSocketRoute]:
    async def stream(websocket: WebSocket) -> None:
        principal = await ws_open(websocket, runtime, "scaitest:use")
        if principal is None:
            return
        await websocket.send_json({"type": "ready", "user_id": principal.user_id})
        await websocket.close(1000)

    return [
        Route(f"{MOUNT}/admin", admin_only, methods=["GET"]),
        Route(f"{MOUNT}/echo", echo_body, methods=["POST"]),
        Route(f"{MOUNT}/explode", explode, methods=["GET"]),
        WebSocketRoute(f"{MOUNT}/stream", stream),
    ]


@dataclass
class Env:
    base: str
    keys: KeyStore
    issuer: str
    api_keys: ApiKeyStore
    logs: io.StringIO
    spans: InMemorySpanExporter

    @property
    def ws(self) -> str:
        return self.base.replace("http://", "ws://")

    def jwt(self, **kwargs: object) -> str:
        return self.keys.mint(issuer_base=self.issuer, tenant="tnt_a", user="usr_a", **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def env(
    pg_dsn: str, redis_url: str, s3_endpoint: S3Endpoint, tmp_path: Path
) -> AsyncIterator[Env]:
    scaikey = start_scaikey(tmp_path)
    await migrate(pg_dsn, "scaitest", [("scaicommon", library_migrations())])
    settings = TestSettings(
        database_url=pg_dsn,
        redis_url=redis_url,
        s3_endpoint_url=s3_endpoint.url,
        s3_access_key=s3_endpoint.access_key,
        scaikey_base_url=scaikey.base_url,
        rate_limit_per_user=4,
        env="development",
    )
    logs = io.StringIO()
    configure_logging("scaitest", "0.0.1", fmt="json", stream=logs)
    exporter = InMemorySpanExporter()
    provider = build_tracer_provider("scaitest", "0.0.1", processor=SimpleSpanProcessor(exporter))
    runtime = Runtime(SPEC, settings, tracer_provider=provider)
    app = create_service_app(runtime, routes(runtime))
    try:
        async with serving(app, wait_path="/healthz") as base:
            yield Env(
                base,
                KeyStore(tmp_path),
                scaikey.base_url,
                ApiKeyStore(runtime.pool),
                logs,
                exporter,
            )
    finally:
        scaikey.stop()


async def ws_result(
    url: str, headers: dict[str, str] | None = None
) -> tuple[list[dict[str, object]], int | None]:
    frames: list[dict[str, object]] = []
    async with websockets.connect(url, additional_headers=headers) as socket:
        try:
            async for message in socket:
                frames.append(json.loads(message))
        except websockets.ConnectionClosed:
            pass
        code = socket.close_code
    return frames, code


async def test_websocket_auth_closes_after_an_error_frame(env: Env) -> None:
    frames, code = await ws_result(f"{env.ws}{MOUNT}/stream")
    assert code == 4401 and frames[0]["code"] == "AUTH_TOKEN_MISSING"
    assert frames[0]["type"] == "error" and str(frames[0]["request_id"]).startswith("req_")
    frames, code = await ws_result(f"{env.ws}{MOUNT}/stream?token=garbage")
    assert code == 4401 and frames == [frames[0]] and frames[0]["code"] == "AUTH_TOKEN_INVALID"
    viewer_less = env.jwt(roles=["tenant_user"])
    frames, code = await ws_result(f"{env.ws}{MOUNT}/stream?token={viewer_less}")
    assert code == 4403 and frames[0]["code"] == "AUTHZ_PERMISSION_DENIED"
    assert frames[0]["required_permission"] == "scaitest:use"
    granted = env.jwt(roles=["tenant_viewer"])
    frames, code = await ws_result(f"{env.ws}{MOUNT}/stream?token={granted}")
    assert code == 1000 and frames == [{"type": "ready", "user_id": "usr_a"}]
    frames, code = await ws_result(
        f"{env.ws}{MOUNT}/stream", headers={"Authorization": f"Bearer {granted}"}
    )
    assert code == 1000


async def test_websocket_handshake_counts_against_the_rate_limit(env: Env) -> None:
    token = env.jwt(roles=["tenant_admin"])
    codes = [(await ws_result(f"{env.ws}{MOUNT}/stream?token={token}"))[1] for _ in range(5)]
    assert codes == [1000, 1000, 1000, 1000, 4429]


async def test_no_token_reaches_the_logs(env: Env) -> None:
    jwt = env.jwt(roles=["tenant_admin"])
    _, key = await env.api_keys.create(
        tenant_id="tnt_a",
        user_id="usr_k",
        roles=["tenant_admin"],
        module_permissions=[],
        created_by="test",
    )
    await ws_result(f"{env.ws}{MOUNT}/stream?token={jwt}")
    await ws_result(f"{env.ws}{MOUNT}/stream?token={key}")
    await ws_result(f"{env.ws}{MOUNT}/stream?token=sgk_{'x' * 40}")
    async with httpx.AsyncClient() as client:
        await client.get(
            f"{env.base}{MOUNT}/admin?token={jwt}", headers={"Authorization": f"Bearer {key}"}
        )
    text = env.logs.getvalue()
    assert "ws_connect" in text and "http_request" in text
    assert jwt not in text and key not in text and "sgk_xxxxxxxx" not in text


async def test_http_errors_are_envelopes_with_request_ids(env: Env) -> None:
    user = env.jwt(roles=["tenant_viewer"])
    admin = env.jwt(roles=["tenant_admin"])
    async with httpx.AsyncClient(base_url=env.base) as client:

        def check(r: httpx.Response, status: int, code: str) -> dict[str, object]:
            assert r.status_code == status, r.text
            body = r.json()
            assert body["error"]["code"] == code
            assert body["meta"]["request_id"] == r.headers["x-request-id"]
            return dict(body["error"])

        check(await client.get(f"{MOUNT}/admin"), 401, "AUTH_TOKEN_MISSING")
        err = check(
            await client.get(f"{MOUNT}/admin", headers={"Authorization": f"Bearer {user}"}),
            403,
            "AUTHZ_PERMISSION_DENIED",
        )
        assert err["required_permission"] == "scaitest:admin"
        check(
            await client.get(f"{MOUNT}/missing", headers={"Authorization": f"Bearer {user}"}),
            404,
            "NOT_FOUND",
        )
        err = check(
            await client.post(
                f"{MOUNT}/echo", json={"nmae": "x"}, headers={"Authorization": f"Bearer {admin}"}
            ),
            422,
            "VALIDATION_ERROR",
        )
        assert err["details"] == [{"field": "nmae", "message": "unknown field"}]
        err = check(
            await client.get(f"{MOUNT}/explode", headers={"Authorization": f"Bearer {admin}"}),
            500,
            "INTERNAL_ERROR",
        )
        assert err["message"] == "internal error"
        r = await client.get(f"{MOUNT}/explode", headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "RATE_LIMITED"
    assert "hunter2" in env.logs.getvalue()  # the detail goes to the log, never to the client


async def test_inbound_traceparent_is_honoured_and_logged(env: Env) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = f"00-{trace_id}-00f067aa0ba902b7-01"
    headers = {"Authorization": f"Bearer {env.jwt(roles=['tenant_admin'])}", "traceparent": parent}
    async with httpx.AsyncClient(base_url=env.base) as client:
        r = await client.get(f"{MOUNT}/admin", headers=headers)
    assert r.status_code == 200
    spans = [s for s in env.spans.get_finished_spans() if s.name == f"GET {MOUNT}/admin"]
    assert len(spans) == 1
    assert format(spans[0].context.trace_id, "032x") == trace_id
    assert spans[0].attributes is not None
    assert spans[0].attributes["http.response.status_code"] == 200
    lines = [json.loads(line) for line in env.logs.getvalue().splitlines()]
    access = [x for x in lines if x["event"] == "http_request" and x["route"] == f"{MOUNT}/admin"]
    assert access[-1]["trace_id"] == trace_id
    assert access[-1]["user_id"] == "usr_a" and access[-1]["tenant_id"] == "tnt_a"
