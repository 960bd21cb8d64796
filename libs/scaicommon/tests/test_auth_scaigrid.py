"""ScaiGrid mode: API keys and JWT grants resolved through a real ``/v1/me`` server (§4.4, §4.6)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed

from scaicommon.auth import Authenticator, ws_authenticate
from scaicommon.errors import ScaiError
from scaicommon.scaigrid import ScaiGridClient
from scaicommon.testing.inloop import serving
from scaidevstack.scaikey.keys import KeyStore
from scaidevstack.scaikey.tokens import build_user_claims
from scaispeak.permissions import PERMISSIONS as SPEAK

ISSUER = "https://scaikey.example.test"
KEY_A = "sgk_" + "A" * 36
KEY_B = "sgk_" + "B" * 100
ME = {
    "user_id": "usr_grid",
    "tenant_id": "tnt_grid",
    "partner_id": "prt_grid",
    "email": "grid@example.test",
    "roles": ["tenant_user"],
    "role": "tenant_viewer",
    "permissions": ["files:read"],
    "module_permissions": {"scaispeak": ["scaispeak:synthesize"], "scaiecho": ["x"]},
    "api_key_id": "key_grid_1",
    "enabled_modules": ["scaiecho", "scaispeak"],
}


class FakeScaiGrid:
    """``/v1/me`` answering per bearer from ``answers`` (status, body); records every call."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self.answers: dict[str, tuple[int, Any]] = {}
        self.calls: list[dict[str, str]] = []
        self.release = asyncio.Event()

    def hits(self, token: str) -> int:
        return sum(1 for c in self.calls if c["authorization"] == f"Bearer {token}")

    async def me(self, request: Request) -> Response:
        self.calls.append(dict(request.headers))
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        status, body = self.answers.get(token, (401, {"status": "error"}))
        if status == 0:  # hang until released: the client must time out
            await self.release.wait()
            status = 200
        if isinstance(body, str):
            return Response(body, status_code=status)
        return JSONResponse(body, status_code=status)

    async def jwks(self, _request: Request) -> Response:
        return JSONResponse(self.store.jwks())


@pytest.fixture(scope="module")
def keystore(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    store = KeyStore(tmp_path_factory.mktemp("scaikey"))
    store.ensure()
    return store


@pytest.fixture
async def grid(keystore: KeyStore) -> AsyncIterator[tuple[FakeScaiGrid, str]]:
    fake = FakeScaiGrid(keystore)
    app = Starlette(routes=[Route("/v1/me", fake.me), Route("/jwks.json", fake.jwks)])
    async with serving(app) as base:
        yield fake, base
        fake.release.set()


MakeAuth = Callable[..., Authenticator]


@pytest.fixture
async def make_auth(grid: tuple[FakeScaiGrid, str]) -> AsyncIterator[MakeAuth]:
    _, base = grid
    made: list[Authenticator] = []

    def make(**kwargs: Any) -> Authenticator:
        kwargs.setdefault("scaigrid_base_url", base + "/")
        auth = Authenticator(SPEAK, **kwargs)
        made.append(auth)
        return auth

    yield make
    for auth in made:
        await auth.aclose()


async def _refused(auth: Authenticator, token: str, code: str) -> ScaiError:
    with pytest.raises(ScaiError) as info:
        await auth.authenticate(token, request_id="req_g")
    assert info.value.code == code, info.value.message
    return info.value


@pytest.mark.parametrize("shape", ["envelope", "bare"])
async def test_api_key_resolved_by_scaigrid(
    shape: str, grid: tuple[FakeScaiGrid, str], make_auth: MakeAuth
) -> None:
    fake, _ = grid
    fake.answers[KEY_A] = (200, {"status": "ok", "data": ME} if shape == "envelope" else ME)
    principal = await make_auth().authenticate(KEY_A, request_id="req_42")
    assert principal.auth_kind == "api_key"
    assert principal.user_id == "usr_grid"
    assert principal.tenant_id == "tnt_grid"
    assert principal.partner_id == "prt_grid"
    assert principal.email == "grid@example.test"
    assert principal.api_key_id == "key_grid_1"
    assert principal.roles == {"tenant_user", "tenant_viewer"}
    assert principal.core_permissions == {"files:read"}
    assert principal.module_permissions == {"scaispeak:synthesize"}
    assert principal.effective_permissions() == {"scaispeak:synthesize", "scaispeak:voice.read"}
    assert principal.token == KEY_A
    (call,) = fake.calls
    assert call["authorization"] == f"Bearer {KEY_A}"
    assert call["x-request-id"] == "req_42"


async def test_success_is_cached(grid: tuple[FakeScaiGrid, str], make_auth: MakeAuth) -> None:
    fake, _ = grid
    fake.answers[KEY_A] = (200, ME)
    fake.answers[KEY_B] = (200, ME)
    auth = make_auth()
    for _ in range(2):
        await auth.authenticate(KEY_A, request_id="r")
    assert fake.hits(KEY_A) == 1
    uncached = make_auth(apikey_cache_ttl_s=0.0)
    for _ in range(2):
        await uncached.authenticate(KEY_B, request_id="r")
    assert fake.hits(KEY_B) == 2


@pytest.mark.parametrize("status", [401, 403])
async def test_rejections_are_invalid_and_cached_briefly(
    status: int, grid: tuple[FakeScaiGrid, str], make_auth: MakeAuth
) -> None:
    fake, _ = grid
    fake.answers[KEY_A] = (status, {"status": "error"})
    auth = make_auth()
    for _ in range(2):
        await _refused(auth, KEY_A, "AUTH_TOKEN_INVALID")
    assert fake.hits(KEY_A) == 1


async def test_server_errors_are_provider_unavailable_and_not_cached(
    grid: tuple[FakeScaiGrid, str], make_auth: MakeAuth
) -> None:
    fake, _ = grid
    auth = make_auth()
    for answer in [
        (500, {"x": 1}),
        (502, "bad gateway"),
        (200, "not json"),
        (200, {"a": 1}),
        (200, {"status": "ok", "data": {"tenant_id": "t"}}),
        (404, {}),
    ]:
        fake.answers[KEY_A] = answer
        error = await _refused(auth, KEY_A, "AUTH_PROVIDER_UNAVAILABLE")
        assert error.retry_after == 5
        assert error.http_status == 503
    assert fake.hits(KEY_A) == 6


async def test_module_not_enabled(grid: tuple[FakeScaiGrid, str], make_auth: MakeAuth) -> None:
    fake, _ = grid
    fake.answers[KEY_A] = (200, {**ME, "enabled_modules": ["scaiecho"]})
    fake.answers[KEY_B] = (200, {k: v for k, v in ME.items() if k != "enabled_modules"})
    auth = make_auth()
    for _ in range(2):
        error = await _refused(auth, KEY_A, "MODULE_NOT_ENABLED")
        assert error.http_status == 403
    assert fake.hits(KEY_A) == 1  # the answer is cached; the check runs on every use
    assert (await auth.authenticate(KEY_B, request_id="r")).user_id == "usr_grid"


async def test_malformed_keys_never_reach_scaigrid(
    grid: tuple[FakeScaiGrid, str], make_auth: MakeAuth
) -> None:
    fake, _ = grid
    auth = make_auth()
    for key in ("sgk_" + "a" * 31, "sgk_" + "a" * 129, "sgk_" + "a" * 35 + "!"):
        await _refused(auth, key, "AUTH_TOKEN_INVALID")
    assert fake.calls == []


async def test_bad_ids_from_scaigrid_are_invalid(
    grid: tuple[FakeScaiGrid, str], make_auth: MakeAuth
) -> None:
    fake, _ = grid
    fake.answers[KEY_A] = (200, {**ME, "tenant_id": "tnt:x"})
    await _refused(make_auth(), KEY_A, "AUTH_TOKEN_INVALID")


async def test_scaigrid_unreachable(make_auth: MakeAuth) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    auth = make_auth(scaigrid_base_url=f"http://127.0.0.1:{port}")
    error = await _refused(auth, KEY_A, "AUTH_PROVIDER_UNAVAILABLE")
    assert error.retry_after == 5


async def test_timeout_is_provider_unavailable(grid: tuple[FakeScaiGrid, str]) -> None:
    fake, base = grid
    fake.answers[KEY_A] = (0, ME)
    async with httpx.AsyncClient() as http:
        client = ScaiGridClient(base, http, module="scaispeak", timeout_s=0.2)
        with pytest.raises(ScaiError) as info:
            await client.me(KEY_A, request_id="r")
    assert info.value.code == "AUTH_PROVIDER_UNAVAILABLE"


async def test_cache_is_bounded_lru(grid: tuple[FakeScaiGrid, str]) -> None:
    fake, base = grid
    keys = [f"sgk_{c * 40}" for c in "xyz"]
    for key in keys:
        fake.answers[key] = (200, ME)
    async with httpx.AsyncClient() as http:
        client = ScaiGridClient(base, http, module="scaispeak", max_entries=2)
        for key in (keys[0], keys[1], keys[0], keys[2], keys[0], keys[1]):
            await client.me(key, request_id="r")
    # x stays (recently used); y is evicted by z and fetched again.
    assert [fake.hits(k) for k in keys] == [1, 2, 1]


# ----- JWTs with ScaiGrid configured -----------------------------------------------------------


def _jwt(store: KeyStore, **extra: Any) -> str:
    claims = build_user_claims(
        tenant="tnt_claims",
        user="usr_claims",
        roles=["super_admin"],
        permissions=["scaispeak:admin"],
        issuer_base=ISSUER,
    )
    claims.update(extra)
    return store.sign(claims)


async def test_jwt_grants_come_from_scaigrid_identity_from_claims(
    keystore: KeyStore, grid: tuple[FakeScaiGrid, str], make_auth: MakeAuth
) -> None:
    fake, base = grid
    auth = make_auth(jwks_url=base + "/jwks.json", issuer=ISSUER)
    token = _jwt(keystore)
    fake.answers[token] = (200, {**ME, "user_id": "usr_other", "tenant_id": "tnt_other"})
    for _ in range(2):
        principal = await auth.authenticate(token, request_id="r")
    assert fake.hits(token) == 1
    assert principal.auth_kind == "jwt"
    assert principal.user_id == "usr_claims"
    assert principal.tenant_id == "tnt_claims"
    assert principal.roles == {"tenant_user", "tenant_viewer"}  # not the token's super_admin
    assert principal.module_permissions == {"scaispeak:synthesize"}
    assert principal.core_permissions == {"files:read"}
    assert principal.partner_id == "prt_grid"  # not in the token: taken from /v1/me
    assert not principal.has("scaispeak:admin")


async def test_jwt_refused_by_scaigrid(
    keystore: KeyStore, grid: tuple[FakeScaiGrid, str], make_auth: MakeAuth
) -> None:
    fake, base = grid
    auth = make_auth(jwks_url=base + "/jwks.json", issuer=ISSUER)
    token = _jwt(keystore)
    fake.answers[token] = (401, {})
    await _refused(auth, token, "AUTH_TOKEN_INVALID")
    disabled = _jwt(keystore, jti="other")
    fake.answers[disabled] = (200, {**ME, "enabled_modules": []})
    await _refused(auth, disabled, "MODULE_NOT_ENABLED")


async def test_jwt_is_verified_before_scaigrid_is_asked(
    keystore: KeyStore, grid: tuple[FakeScaiGrid, str], make_auth: MakeAuth, tmp_path: Path
) -> None:
    fake, base = grid
    other = KeyStore(tmp_path)
    auth = make_auth(jwks_url=base + "/jwks.json", issuer=ISSUER)
    await _refused(auth, _jwt(keystore, exp=1), "AUTH_TOKEN_INVALID")
    await _refused(auth, _jwt(other), "AUTH_TOKEN_INVALID")
    assert fake.calls == []


async def test_ws_module_not_enabled_closes_4403(
    grid: tuple[FakeScaiGrid, str], make_auth: MakeAuth
) -> None:
    fake, _ = grid
    fake.answers[KEY_A] = (200, {**ME, "enabled_modules": ["scaiecho"]})
    auth = make_auth()

    async def endpoint(websocket: WebSocket) -> None:
        await ws_authenticate(websocket, auth, permission=None, request_id="req_ws")

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    async with serving(app) as base:
        url = base.replace("http://", "ws://") + "/ws?token=" + KEY_A
        async with websockets.connect(url) as conn:
            frame = json.loads(await conn.recv())
            with pytest.raises(ConnectionClosed):
                await conn.recv()
    assert frame["code"] == "MODULE_NOT_ENABLED"
    assert conn.close_code == 4403
