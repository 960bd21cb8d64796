"""ScaiKey JWT verification against a real JWKS served over HTTP (platform §4.5, §4.10)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed

from scaicommon.auth import Authenticator, ws_authenticate
from scaicommon.errors import ScaiError
from scaicommon.jwks import JwksCache
from scaicommon.principal import ModulePermissions, Principal
from scaicommon.testing.inloop import serving
from scaidevstack._jose import JsonWebKey, JsonWebToken
from scaidevstack.scaikey.keys import (
    KeyStore,
    SigningKey,
    forge_unsigned,
    generate_signing_key,
    sign_hs256,
)
from scaidevstack.scaikey.tokens import build_user_claims

ISSUER = "https://scaikey.example.test"
ECHO = ModulePermissions(
    "scaiecho",
    frozenset({"scaiecho:transcribe", "scaiecho:diarize", "scaiecho:enroll", "scaiecho:admin"}),
    frozenset({"scaiecho:transcribe"}),
)


class JwksServer:
    """Serves the key store's JWKS and counts the requests; ``failing`` makes it answer 500."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self.hits = 0
        self.failing = False
        self.only: list[str] | None = None  # serve only these kids

    async def jwks(self, _request: Request) -> Response:
        self.hits += 1
        if self.failing:
            return Response("boom", status_code=500)
        keys = self.store.jwks()["keys"]
        if self.only is not None:
            keys = [k for k in keys if k["kid"] in self.only]
        return JSONResponse({"keys": keys})


@pytest.fixture(scope="module")
def keystore(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    store = KeyStore(tmp_path_factory.mktemp("scaikey"))
    store.ensure()
    return store


MakeAuth = Callable[..., Authenticator]


@contextlib.asynccontextmanager
async def _jwks_stack(store: KeyStore) -> AsyncIterator[tuple[JwksServer, str]]:
    server = JwksServer(store)
    app = Starlette(routes=[Route("/jwks.json", server.jwks)])
    async with serving(app) as base:
        yield server, f"{base}/jwks.json"


@pytest.fixture
async def jwks(keystore: KeyStore) -> AsyncIterator[tuple[JwksServer, str]]:
    async with _jwks_stack(keystore) as pair:
        yield pair


@pytest.fixture
async def make_auth() -> AsyncIterator[MakeAuth]:
    made: list[Authenticator] = []

    def make(**kwargs: Any) -> Authenticator:
        kwargs.setdefault("issuer", ISSUER)
        auth = Authenticator(ECHO, **kwargs)
        made.append(auth)
        return auth

    yield make
    for auth in made:
        await auth.aclose()


def _claims(**overrides: Any) -> dict[str, Any]:
    claims = build_user_claims(
        tenant="tnt_demo",
        user="usr_demo",
        partner="prt_demo",
        roles=["tenant_user", "tenant_viewer"],
        permissions=["scaiecho:diarize"],
        scope="files:read files:write",
        audience="scaiecho",
        email="demo@example.test",
        issuer_base=ISSUER,
    )
    for key, value in overrides.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


async def _refused(auth: Authenticator, token: str, code: str = "AUTH_TOKEN_INVALID") -> ScaiError:
    with pytest.raises(ScaiError) as info:
        await auth.authenticate(token, request_id="req_t")
    assert info.value.code == code, info.value.message
    return info.value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _header(token: str) -> dict[str, Any]:
    head = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))))


def _sign_raw(key: SigningKey, claims: dict[str, Any], header: dict[str, Any]) -> str:
    """Sign with ``key`` but exactly ``header`` (authlib would otherwise insert the key's kid)."""
    bare = JsonWebKey.import_key({k: v for k, v in key.private_jwk().items() if k != "kid"})
    return str(JsonWebToken([header["alg"]]).encode(dict(header), claims, bare).decode())


def _hs256(claims: dict[str, Any], secret: bytes, kid: str | None) -> str:
    """An HS256 token whose HMAC secret is ``secret`` (the key-confusion attack)."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


# ----- accepted tokens ---------------------------------------------------------------------


async def test_good_rs256_token_maps_claims(
    keystore: KeyStore, jwks: tuple[JwksServer, str], make_auth: MakeAuth
) -> None:
    _, url = jwks
    auth = make_auth(jwks_url=url)
    claims = _claims(
        permissions="scaiecho:enroll core:read",
        act={"sub": "scaiecho", "client_id": "scaiecho"},
    )
    token = keystore.sign(claims, alg="RS256")
    principal = await auth.authenticate(token, request_id="req_1")
    assert principal.user_id == "usr_demo"
    assert principal.tenant_id == "tnt_demo"
    assert principal.partner_id == "prt_demo"
    assert principal.email == "demo@example.test"
    assert principal.roles == {"tenant_user", "tenant_viewer"}
    assert principal.module_permissions == {"scaiecho:diarize", "scaiecho:enroll"}
    assert principal.core_permissions == {"core:read"}
    assert principal.scopes == {"files:read", "files:write"}
    assert principal.client_id == "devstack-cli"
    assert principal.actor == {"sub": "scaiecho", "client_id": "scaiecho"}
    assert principal.auth_kind == "jwt"
    assert principal.token == token
    assert principal.request_id == "req_1"
    assert principal.api_key_id is None
    assert principal.token_expires_at is not None
    assert principal.token_expires_at.timestamp() == claims["exp"]
    assert principal.has("scaiecho:transcribe") and principal.has("scaiecho:diarize")
    assert not principal.has("scaiecho:admin")


async def test_good_es256_service_token(
    keystore: KeyStore, jwks: tuple[JwksServer, str], make_auth: MakeAuth
) -> None:
    _, url = jwks
    auth = make_auth(jwks_url=url, audience=["scaiecho"])
    claims = _claims(
        sub="scaiecho", client_id="scaiecho", tenant_id=None, iss=ISSUER + "/tenants/tnt_iss"
    )
    principal = await auth.authenticate(keystore.sign(claims, alg="ES256"), request_id="req_2")
    assert principal.auth_kind == "service"
    assert principal.tenant_id == "tnt_iss"


async def test_leeway_of_30_seconds(
    keystore: KeyStore, jwks: tuple[JwksServer, str], make_auth: MakeAuth
) -> None:
    _, url = jwks
    auth = make_auth(jwks_url=url)
    now = int(time.time())
    for claims in (_claims(exp=now - 20), _claims(nbf=now + 20), _claims(iat=now + 20)):
        await auth.authenticate(keystore.sign(claims), request_id="req_l")


# ----- refused tokens ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"exp": int(time.time()) - 3600}, id="expired"),
        pytest.param({"exp": None}, id="no-exp"),
        pytest.param({"exp": "soon"}, id="exp-not-number"),
        pytest.param({"nbf": int(time.time()) + 600}, id="nbf-future"),
        pytest.param({"iat": int(time.time()) + 600}, id="iat-future"),
        pytest.param({"sub": None}, id="no-sub"),
        pytest.param({"sub": ""}, id="empty-sub"),
        pytest.param({"iss": "https://other.example.test"}, id="wrong-issuer"),
        pytest.param({"iss": ISSUER + ".evil/tenants/tnt_demo"}, id="issuer-prefix-trick"),
        pytest.param({"iss": None}, id="no-issuer"),
        pytest.param({"tenant_id": "tnt:demo"}, id="tenant-with-colon"),
        pytest.param({"sub": "usr:demo"}, id="user-with-colon"),
        pytest.param({"partner_id": "prt demo"}, id="bad-partner"),
    ],
)
async def test_refused_claims(
    overrides: dict[str, Any],
    keystore: KeyStore,
    jwks: tuple[JwksServer, str],
    make_auth: MakeAuth,
) -> None:
    _, url = jwks
    auth = make_auth(jwks_url=url)
    await _refused(auth, keystore.sign(_claims(**overrides)))


async def test_audience_checked_only_when_configured(
    keystore: KeyStore, jwks: tuple[JwksServer, str], make_auth: MakeAuth
) -> None:
    _, url = jwks
    strict = make_auth(jwks_url=url, audience=["scaiecho", "speech"])
    lax = make_auth(jwks_url=url)
    accepted: list[Any] = ["scaiecho", ["x", "speech"]]
    for aud in accepted:
        await strict.authenticate(keystore.sign(_claims(aud=aud)), request_id="r")
    refused: list[Any] = ["scaidrive", ["x", "y"], None]
    for aud in refused:
        token = keystore.sign(_claims(aud=aud))
        await _refused(strict, token)
        await lax.authenticate(token, request_id="r")


async def test_required_scope(
    keystore: KeyStore, jwks: tuple[JwksServer, str], make_auth: MakeAuth
) -> None:
    _, url = jwks
    auth = make_auth(jwks_url=url, required_scope="speech")
    await auth.authenticate(keystore.sign(_claims(scope="files:read speech")), request_id="r")
    error = await _refused(auth, keystore.sign(_claims()), "AUTH_INSUFFICIENT_SCOPE")
    assert error.http_status == 403
    assert error.extras == {"required_scope": "speech"}
    # An otherwise invalid token is still a 401, not a scope error.
    await _refused(auth, keystore.sign(_claims(exp=1)))


async def test_alg_none_and_hs256_with_the_public_key(
    keystore: KeyStore, jwks: tuple[JwksServer, str], make_auth: MakeAuth
) -> None:
    server, url = jwks
    auth = make_auth(jwks_url=url)
    rsa = keystore.current("RS256")
    public_pem = rsa.jwk.as_pem(is_private=False).decode()
    forged = [
        forge_unsigned(_claims(), headers={"kid": rsa.kid}),
        forge_unsigned(_claims(), headers={"kid": rsa.kid, "alg": "None"}),
        _hs256(_claims(), public_pem.encode(), rsa.kid),
        _hs256(_claims(), rsa.jwk.as_pem(is_private=False), None),
        sign_hs256(_claims(), json.dumps(rsa.public_jwk()), headers={"kid": rsa.kid}),
    ]
    for token in forged:
        await _refused(auth, token)
    assert server.hits == 0  # refused on the header alone, before any key was looked up
    # RS256 in the header but the kid of the EC key: the key does not fit the algorithm.
    ec = keystore.current("ES256")
    mixed = _sign_raw(rsa, _claims(), {"alg": "RS256", "kid": ec.kid})
    assert _header(mixed)["kid"] == ec.kid
    await _refused(auth, mixed)


async def test_bad_signature_and_malformed_tokens(
    keystore: KeyStore, jwks: tuple[JwksServer, str], make_auth: MakeAuth
) -> None:
    _, url = jwks
    auth = make_auth(jwks_url=url)
    good = keystore.sign(_claims())
    head, body, sig = good.split(".")
    stranger = generate_signing_key("RS256")
    forged = _sign_raw(stranger, _claims(), {"alg": "RS256", "kid": keystore.current().kid})
    assert _header(forged)["kid"] == keystore.current().kid
    error = await _refused(auth, forged)
    assert "signature" in error.message
    tampered_body = _b64(json.dumps(_claims(sub="usr_other")).encode())
    await _refused(auth, f"{head}.{tampered_body}.{sig}")
    await _refused(auth, f"{head}.{body}.{sig[:-4]}AAAA")
    await _refused(auth, f"{head}.{_b64(b'[1]')}.{sig}")
    await _refused(auth, f"{_b64(b'not json')}.{body}.{sig}")
    await _refused(auth, "just-garbage")


async def test_unknown_kid_triggers_exactly_one_refetch(
    keystore: KeyStore, jwks: tuple[JwksServer, str], make_auth: MakeAuth
) -> None:
    server, url = jwks
    auth = make_auth(jwks_url=url)
    await auth.authenticate(keystore.sign(_claims()), request_id="r")
    assert server.hits == 1
    stranger = generate_signing_key("RS256")
    error = await _refused(auth, stranger.sign(_claims()))
    assert "unknown key" in error.message
    assert server.hits == 2
    # Refetches are rate-limited: a second unknown kid within 30 s does not fetch again.
    await _refused(auth, generate_signing_key("ES256").sign(_claims()))
    assert server.hits == 2
    await auth.authenticate(keystore.sign(_claims(), alg="ES256"), request_id="r")
    assert server.hits == 2


async def test_kid_required_unless_the_jwks_has_one_key(
    keystore: KeyStore, jwks: tuple[JwksServer, str], make_auth: MakeAuth
) -> None:
    server, url = jwks
    rsa = keystore.current("RS256")
    no_kid = _sign_raw(rsa, _claims(), {"alg": "RS256"})
    assert "kid" not in _header(no_kid)
    await _refused(make_auth(jwks_url=url), no_kid)
    server.only = [rsa.kid]
    principal = await make_auth(jwks_url=url).authenticate(no_kid, request_id="r")
    assert principal.user_id == "usr_demo"


async def test_key_rotation_is_picked_up_after_refetch(tmp_path: Path, make_auth: MakeAuth) -> None:
    store = KeyStore(tmp_path)
    store.ensure()
    async with _jwks_stack(store) as (server, url):
        auth = make_auth(jwks_url=url)
        await auth.authenticate(store.sign(_claims()), request_id="r")
        old_kid = store.current().kid
        new_key = store.rotate("RS256")
        assert new_key.kid != old_kid
        principal = await auth.authenticate(store.sign(_claims()), request_id="r")
        assert principal.user_id == "usr_demo"
        assert server.hits == 2
        # Tokens signed by the old key still verify (it stays published), without a fetch.
        await auth.authenticate(store.get(old_kid).sign(_claims()), request_id="r")  # type: ignore[union-attr]
        assert server.hits == 2


async def test_jwks_down_before_first_fetch(keystore: KeyStore, make_auth: MakeAuth) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    auth = make_auth(jwks_url=f"http://127.0.0.1:{port}/jwks.json")
    error = await _refused(auth, keystore.sign(_claims()), "AUTH_PROVIDER_UNAVAILABLE")
    assert error.http_status == 503
    assert error.retry_after == 5


async def test_stale_jwks_is_used_when_refresh_fails(
    keystore: KeyStore, jwks: tuple[JwksServer, str]
) -> None:
    server, url = jwks
    now = [1000.0]
    async with httpx.AsyncClient() as http:
        cache = JwksCache(url, http, clock=lambda: now[0])
        kid = keystore.current().kid
        assert (await cache.key_for(kid))["kid"] == kid
        now[0] += 599
        await cache.key_for(kid)
        assert server.hits == 1  # still within the 600 s TTL
        server.failing = True
        now[0] += 2
        with structlog.testing.capture_logs() as logs:
            assert (await cache.key_for(kid))["kid"] == kid  # refresh failed: stale set used
        assert server.hits == 2
        assert [e["log_level"] for e in logs if e["event"] == "jwks_fetch_failed"] == ["warning"]
        now[0] += 10
        await cache.key_for(kid)
        assert server.hits == 2  # the next refresh waits for the 30 s refetch interval
        now[0] += 30
        await cache.key_for(kid)
        assert server.hits == 3
        now[0] = 1000.0 + 86400 + 1  # older than 24 h: no longer usable
        with pytest.raises(ScaiError) as info:
            await cache.key_for(kid)
        assert info.value.code == "AUTH_PROVIDER_UNAVAILABLE"
        server.failing = False
        now[0] += 30
        assert (await cache.key_for(kid))["kid"] == kid  # and recovers once the fetch works


async def test_jwt_not_configured(keystore: KeyStore, make_auth: MakeAuth) -> None:
    error = await _refused(make_auth(), keystore.sign(_claims()))
    assert error.message == "JWT authentication is not configured"


async def test_concurrent_first_requests_fetch_once(
    keystore: KeyStore, jwks: tuple[JwksServer, str], make_auth: MakeAuth
) -> None:
    server, url = jwks
    auth = make_auth(jwks_url=url)
    token = keystore.sign(_claims())
    await asyncio.gather(*(auth.authenticate(token, request_id="r") for _ in range(10)))
    assert server.hits == 1


async def test_tokens_never_reach_the_logs(
    keystore: KeyStore, jwks: tuple[JwksServer, str], make_auth: MakeAuth
) -> None:
    _, url = jwks
    auth = make_auth(jwks_url=url, required_scope="speech")
    tokens = [keystore.sign(_claims()), keystore.sign(_claims(exp=1)), "sgk_" + "x" * 40]
    with structlog.testing.capture_logs() as logs:
        for token in tokens:
            with contextlib.suppress(ScaiError):
                await auth.authenticate(token, request_id="r")
    assert logs, "failures are logged"
    dumped = json.dumps(logs, default=str)
    for token in tokens:
        assert token not in dumped
        assert token.split(".")[-1] not in dumped


# ----- §4.10 WebSocket authentication -----------------------------------------------------------


@contextlib.asynccontextmanager
async def _ws_app(auth: Authenticator, permission: str | None) -> AsyncIterator[str]:
    failures: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        async def count(error: ScaiError) -> None:
            failures.append(error.code)

        principal = await ws_authenticate(
            websocket, auth, permission=permission, request_id="req_ws", on_failure=count
        )
        if principal is None:
            return
        await websocket.send_json(
            {"type": "ready", "user_id": principal.user_id, "tenant_id": principal.tenant_id}
        )
        await websocket.close(1000)

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    async with serving(app) as base:
        yield base.replace("http://", "ws://") + "/ws"


async def _ws_exchange(
    url: str, headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], int]:
    async with websockets.connect(url, additional_headers=headers) as conn:
        frame = json.loads(await conn.recv())
        with pytest.raises(ConnectionClosed):
            await conn.recv()
        assert conn.close_code is not None
        return frame, conn.close_code


WsCase = Callable[[], Awaitable[None]]


async def test_ws_authenticate(
    keystore: KeyStore, jwks: tuple[JwksServer, str], make_auth: MakeAuth
) -> None:
    _, url = jwks
    auth = make_auth(jwks_url=url, required_scope="files:read")
    good = keystore.sign(_claims())
    async with _ws_app(auth, "scaiecho:diarize") as ws_url:
        frame, code = await _ws_exchange(ws_url)
        assert (frame["type"], frame["code"], code) == ("error", "AUTH_TOKEN_MISSING", 4401)
        assert frame["request_id"] == "req_ws"

        frame, code = await _ws_exchange(ws_url, {"Authorization": "Bearer nope"})
        assert (frame["code"], code) == ("AUTH_TOKEN_INVALID", 4401)

        frame, code = await _ws_exchange(f"{ws_url}?token={good}")
        assert frame == {"type": "ready", "user_id": "usr_demo", "tenant_id": "tnt_demo"}
        assert code == 1000

        # The header wins over the query parameter.
        frame, code = await _ws_exchange(f"{ws_url}?token={good}", {"Authorization": "Bearer x"})
        assert (frame["code"], code) == ("AUTH_TOKEN_INVALID", 4401)

        no_scope = keystore.sign(_claims(scope="other"))
        frame, code = await _ws_exchange(ws_url, {"Authorization": f"Bearer {no_scope}"})
        assert (frame["code"], frame["required_scope"], code) == (
            "AUTH_INSUFFICIENT_SCOPE",
            "files:read",
            4403,
        )

        viewer = keystore.sign(_claims(module_permissions=[]))
        frame, code = await _ws_exchange(ws_url, {"Authorization": f"Bearer {viewer}"})
        assert (frame["code"], frame["required_permission"], code) == (
            "AUTHZ_PERMISSION_DENIED",
            "scaiecho:diarize",
            4403,
        )

        frame, code = await _ws_exchange(
            ws_url, {"Authorization": f"Bearer {good}", "X-Tenant-ID": "tnt_other"}
        )
        assert (frame["code"], code) == ("AUTHZ_PERMISSION_DENIED", 4403)


async def test_ws_provider_unavailable_closes_1011(keystore: KeyStore, make_auth: MakeAuth) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    auth = make_auth(jwks_url=f"http://127.0.0.1:{port}/jwks.json")
    async with _ws_app(auth, None) as ws_url:
        token = keystore.sign(_claims())
        frame, code = await _ws_exchange(ws_url, {"Authorization": f"Bearer {token}"})
    assert (frame["code"], frame["retry_after"], code) == ("AUTH_PROVIDER_UNAVAILABLE", 5, 1011)


async def test_shared_http_client_is_not_closed(
    keystore: KeyStore, jwks: tuple[JwksServer, str]
) -> None:
    _, url = jwks
    async with httpx.AsyncClient() as http:
        auth = Authenticator(ECHO, jwks_url=url, issuer=ISSUER, http=http)
        principal: Principal = await auth.authenticate(keystore.sign(_claims()), request_id="r")
        await auth.aclose()
        assert principal.user_id == "usr_demo"
        assert not http.is_closed
