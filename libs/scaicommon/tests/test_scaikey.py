"""RFC 8693 token exchange against the real dev ScaiKey process (platform §13.2, §18)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from structlog.testing import capture_logs

from scaicommon.principal import ModulePermissions, Principal
from scaicommon.scaikey import (
    SCAIDRIVE_SCOPES,
    ExchangedToken,
    TokenExchanger,
    TokenExchangeRefused,
    TokenExchangeRequiresJwt,
    TokenExchangeUnavailable,
    TokenExchangeUnconfigured,
    parse_peer_error,
    seal_token,
    unseal_token,
)
from scaicommon.settings import CommonSettings, Secret
from scaicommon.testing import DevServer, free_port, start_scaikey
from scaicommon.testing.inloop import serving
from scaidevstack.scaikey import KeyStore

# A secret that needs RFC 6749 form-encoding inside the Basic credentials.
ODD_SECRET = "s3cr:t/+ %&é"
CLIENTS_TOML = f"""
[[clients]]
client_id = "scaispeak"
client_secret = "scaispeak-dev-secret"
allowed_scopes = ["files:read", "files:write"]
token_exchange_allowed = ["scaidrive"]

[[clients]]
client_id = "odd:client"
client_secret = "{ODD_SECRET}"
token_exchange_allowed = ["scaidrive"]

[[clients]]
client_id = "scaidrive"
client_secret = "scaidrive-dev-secret"
"""
SPEAK_SECRET = "scaispeak-dev-secret"
MODULE = ModulePermissions("scaispeak", frozenset({"scaispeak:synthesize"}), frozenset())


@pytest.fixture(scope="module")
def scaikey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevServer, KeyStore]]:
    state = tmp_path_factory.mktemp("scaikey")
    clients = Path(state) / "clients.toml"
    clients.write_text(CLIENTS_TOML, encoding="utf-8")
    server = start_scaikey(state, extra_args=["--clients", str(clients)])
    try:
        yield server, KeyStore(state)
    finally:
        server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def exchanger(
    server: DevServer,
    http: httpx.AsyncClient,
    *,
    client_id: str = "scaispeak",
    secret: str = SPEAK_SECRET,
    token_url: str | None = None,
) -> TokenExchanger:
    settings = CommonSettings(
        scaikey_base_url=server.base_url,
        scaikey_token_url=token_url or "",
        scaikey_client_id=client_id,
        scaikey_client_secret=Secret(secret),
    )
    return TokenExchanger.from_settings(settings, http)


def mint(keys: KeyStore, server: DevServer, **kwargs: object) -> str:
    options: dict[str, object] = {
        "tenant": "tnt_x",
        "user": "usr_x",
        "scope": "files:read files:write",
        "email": "x@example.test",
        "issuer_base": server.base_url,
    }
    options.update(kwargs)
    return keys.mint(**options)  # type: ignore[arg-type]


def principal(token: str, kind: str = "jwt", expires_at: datetime | None = None) -> Principal:
    return Principal(
        user_id="usr_x",
        tenant_id="tnt_x",
        module=MODULE,
        auth_kind=kind,  # type: ignore[arg-type]
        request_id="req_test",
        token=token,
        token_expires_at=expires_at,
    )


async def test_exchange_issues_a_scaidrive_token(
    scaikey: tuple[DevServer, KeyStore], http: httpx.AsyncClient
) -> None:
    server, keys = scaikey
    subject = mint(keys, server)
    before = time.time()
    token = await exchanger(server, http).exchange(
        principal(subject), audience="scaidrive", scopes=["files:write", "files:read"]
    )
    claims = keys.verify(token.access_token)
    assert claims["aud"] == "scaidrive"
    assert claims["sub"] == "usr_x" and claims["tenant_id"] == "tnt_x"
    assert claims["act"] == {"sub": "scaispeak", "client_id": "scaispeak"}
    assert claims["scope"] == "files:read files:write"
    assert claims["iss"] == f"{server.base_url}/tenants/tnt_x"
    assert token.scopes == ("files:read", "files:write")
    assert token.audience == "scaidrive"
    assert before + 299 <= token.expires_at <= time.time() + 300
    assert "access_token" not in repr(token) and token.access_token not in repr(token)


async def test_answers_are_cached_per_subject_audience_and_scopes(
    scaikey: tuple[DevServer, KeyStore], http: httpx.AsyncClient
) -> None:
    server, keys = scaikey
    ex = exchanger(server, http)
    subject = mint(keys, server)
    first = await ex.exchange_token(subject, audience="scaidrive", scopes=SCAIDRIVE_SCOPES)
    again = await ex.exchange_token(
        subject, audience="scaidrive", scopes=["files:write", "files:read", "files:read"]
    )
    assert again is first
    narrower = await ex.exchange_token(subject, audience="scaidrive", scopes=["files:read"])
    assert narrower.access_token != first.access_token
    assert keys.verify(narrower.access_token)["scope"] == "files:read"
    other = await ex.exchange_token(
        mint(keys, server), audience="scaidrive", scopes=SCAIDRIVE_SCOPES
    )
    assert other.access_token != first.access_token


async def test_no_caching_past_the_subject_expiry_margin(
    scaikey: tuple[DevServer, KeyStore], http: httpx.AsyncClient
) -> None:
    """A subject expiring within 30 s is never served from the cache."""
    server, keys = scaikey
    ex = exchanger(server, http)
    subject = mint(keys, server, ttl=25)
    expires = datetime.fromtimestamp(time.time() + 25, UTC)
    first = await ex.exchange(
        principal(subject, expires_at=expires), audience="scaidrive", scopes=SCAIDRIVE_SCOPES
    )
    second = await ex.exchange(
        principal(subject, expires_at=expires), audience="scaidrive", scopes=SCAIDRIVE_SCOPES
    )
    assert first.access_token != second.access_token
    assert first.expires_at <= time.time() + 26  # ScaiKey caps it at the subject's expiry


@pytest.mark.parametrize("kind", ["api_key", "service"])
async def test_only_jwts_are_exchanged(
    scaikey: tuple[DevServer, KeyStore], http: httpx.AsyncClient, kind: str
) -> None:
    server, _ = scaikey
    with pytest.raises(TokenExchangeRequiresJwt):
        await exchanger(server, http).exchange(
            principal("sgk_whatever_key_value", kind), audience="scaidrive", scopes=["files:read"]
        )


async def test_refusals_carry_the_oauth_reason_and_description(
    scaikey: tuple[DevServer, KeyStore], http: httpx.AsyncClient
) -> None:
    server, keys = scaikey
    ex = exchanger(server, http)

    with pytest.raises(TokenExchangeRefused) as expired:
        await ex.exchange_token(
            mint(keys, server, expired=True), audience="scaidrive", scopes=SCAIDRIVE_SCOPES
        )
    assert expired.value.reason == "invalid_grant"
    assert expired.value.upstream_message and "expired" in expired.value.upstream_message
    assert expired.value.extras() == {
        "reason": "invalid_grant",
        "upstream_message": expired.value.upstream_message,
    }

    with pytest.raises(TokenExchangeRefused) as scope:
        await ex.exchange_token(
            mint(keys, server, scope="files:read"), audience="scaidrive", scopes=SCAIDRIVE_SCOPES
        )
    assert scope.value.reason == "invalid_scope"

    with pytest.raises(TokenExchangeRefused) as target:
        await ex.exchange_token(mint(keys, server), audience="scaigrid", scopes=SCAIDRIVE_SCOPES)
    assert target.value.reason == "invalid_target"

    not_allowed = exchanger(server, http, client_id="scaidrive", secret="scaidrive-dev-secret")
    with pytest.raises(TokenExchangeRefused) as client:
        await not_allowed.exchange_token(
            mint(keys, server), audience="scaidrive", scopes=SCAIDRIVE_SCOPES
        )
    assert client.value.reason == "invalid_target"
    assert "scaidrive" in (client.value.upstream_message or "")

    wrong_secret = exchanger(server, http, secret="not-the-secret")
    with pytest.raises(TokenExchangeRefused) as secret:
        await wrong_secret.exchange_token(
            mint(keys, server), audience="scaidrive", scopes=SCAIDRIVE_SCOPES
        )
    assert secret.value.reason == "invalid_client"


async def test_basic_credentials_are_form_encoded(
    scaikey: tuple[DevServer, KeyStore], http: httpx.AsyncClient
) -> None:
    server, keys = scaikey
    ex = exchanger(server, http, client_id="odd:client", secret=ODD_SECRET)
    token = await ex.exchange_token(mint(keys, server), audience="scaidrive", scopes=["files:read"])
    assert keys.verify(token.access_token)["act"]["client_id"] == "odd:client"


@pytest.mark.parametrize(
    ("client_id", "secret", "audience", "missing"),
    [
        ("", "scaispeak-dev-secret", "scaidrive", "client id"),
        ("scaispeak", "", "scaidrive", "client secret"),
        ("scaispeak", "scaispeak-dev-secret", "", "audience"),
    ],
)
async def test_unconfigured_exchange_never_calls_scaikey(
    http: httpx.AsyncClient, client_id: str, secret: str, audience: str, missing: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/api/v1/platform/oauth/token"
    ex = TokenExchanger(token_url=dead, client_id=client_id, client_secret=secret, http=http)
    with pytest.raises(TokenExchangeUnconfigured) as caught:
        await ex.exchange_token("eyJ.x.y", audience=audience, scopes=["files:read"])
    assert caught.value.reason == "not_configured"
    assert missing in caught.value.message


async def test_no_token_url_without_a_base_url(http: httpx.AsyncClient) -> None:
    settings = CommonSettings(scaikey_client_id="scaispeak", scaikey_client_secret=Secret("s"))
    assert settings.token_url == ""
    with pytest.raises(TokenExchangeUnconfigured):
        await TokenExchanger.from_settings(settings, http).exchange_token(
            "eyJ.x.y", audience="scaidrive", scopes=["files:read"]
        )


async def test_unreachable_scaikey(http: httpx.AsyncClient) -> None:
    dead = f"http://127.0.0.1:{free_port()}/api/v1/platform/oauth/token"
    ex = TokenExchanger(token_url=dead, client_id="c", client_secret="s", http=http)
    with pytest.raises(TokenExchangeUnavailable) as caught:
        await ex.exchange_token("eyJ.x.y", audience="scaidrive", scopes=["files:read"])
    assert caught.value.reason == "scaikey_unreachable"


async def test_a_non_oauth_refusal_is_an_invalid_response(
    scaikey: tuple[DevServer, KeyStore], http: httpx.AsyncClient
) -> None:
    """The JWKS route answers a POST with 405 and no OAuth error."""
    server, keys = scaikey
    ex = exchanger(
        server, http, token_url=f"{server.base_url}/api/v1/platform/.well-known/jwks.json"
    )
    with pytest.raises(TokenExchangeUnavailable) as caught:
        await ex.exchange_token(mint(keys, server), audience="scaidrive", scopes=["files:read"])
    assert caught.value.reason == "invalid_response"


@dataclass
class Seen:
    headers: dict[str, str]
    form: dict[str, str]


def _peer_app(answers: list[Response]) -> tuple[Starlette, list[Seen]]:
    """An HTTP peer that plays ``answers`` in turn (for shapes ScaiKey itself never sends)."""
    seen: list[Seen] = []

    async def token(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        seen.append(Seen(dict(request.headers), form))
        return answers[min(len(seen), len(answers)) - 1]

    return Starlette(routes=[Route("/token", token, methods=["POST"])]), seen


async def test_one_retry_after_a_5xx(http: httpx.AsyncClient) -> None:
    ok = JSONResponse(
        {"access_token": "abc.def.ghi", "token_type": "Bearer", "scope": "files:read"}
    )
    app, seen = _peer_app([PlainTextResponse("busy", status_code=503), ok])
    async with serving(app) as base:
        ex = TokenExchanger(token_url=f"{base}/token", client_id="c", client_secret="s", http=http)
        token = await ex.exchange_token("subj", audience="scaidrive", scopes=["files:read"])
    assert len(seen) == 2
    assert token.access_token == "abc.def.ghi"
    assert 299 <= token.expires_at - time.time() <= 300  # missing expires_in = 300 s
    form = seen[0].form
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
    assert form["subject_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert form["requested_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert form["audience"] == "scaidrive" and form["scope"] == "files:read"
    assert form["subject_token"] == "subj"
    assert seen[0].headers["authorization"] == "Basic Yzpz"  # base64("c:s")
    assert seen[0].headers["x-request-id"]


async def test_two_5xx_answers_are_unreachable(http: httpx.AsyncClient) -> None:
    app, seen = _peer_app([PlainTextResponse("down", status_code=502)])
    async with serving(app) as base:
        ex = TokenExchanger(token_url=f"{base}/token", client_id="c", client_secret="s", http=http)
        with pytest.raises(TokenExchangeUnavailable) as caught:
            await ex.exchange_token("subj", audience="scaidrive", scopes=["files:read"])
    assert caught.value.reason == "scaikey_unreachable"
    assert len(seen) == 2


async def test_an_answer_without_access_token_is_an_invalid_response(
    http: httpx.AsyncClient,
) -> None:
    app, _ = _peer_app([JSONResponse({"token_type": "Bearer", "expires_in": 300})])
    async with serving(app) as base:
        ex = TokenExchanger(token_url=f"{base}/token", client_id="c", client_secret="s", http=http)
        with pytest.raises(TokenExchangeUnavailable) as caught:
            await ex.exchange_token("subj", audience="scaidrive", scopes=["files:read"])
    assert caught.value.reason == "invalid_response"


async def test_tokens_never_reach_the_logs(
    scaikey: tuple[DevServer, KeyStore], http: httpx.AsyncClient
) -> None:
    server, keys = scaikey
    subject = mint(keys, server)
    ex = exchanger(server, http)
    with capture_logs() as logs:
        token = await ex.exchange_token(subject, audience="scaidrive", scopes=SCAIDRIVE_SCOPES)
        with pytest.raises(TokenExchangeRefused):
            await ex.exchange_token(
                mint(keys, server, expired=True), audience="scaidrive", scopes=SCAIDRIVE_SCOPES
            )
    assert any(entry["event"] == "scaikey_exchanged" for entry in logs)
    assert any(entry["event"] == "scaikey_exchange_refused" for entry in logs)
    text = repr(logs)
    assert subject not in text and token.access_token not in text
    assert "scaispeak-dev-secret" not in text


def test_sealing_round_trip_and_tamper_detection() -> None:
    token = ExchangedToken("eyJ.secret.token", 1_900_000_000.5, "scaidrive", SCAIDRIVE_SCOPES)
    sealed = seal_token(token, Secret("client-secret"))
    assert "eyJ" not in sealed and "secret" not in sealed
    assert seal_token(token, "client-secret") != sealed  # fresh nonce each time
    assert unseal_token(sealed, "client-secret") == token
    with pytest.raises(ValueError):
        unseal_token(sealed, "another-secret")
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    with pytest.raises(ValueError):
        unseal_token(flipped, "client-secret")
    with pytest.raises(ValueError):
        unseal_token("garbage", "client-secret")
    with pytest.raises(ValueError):
        seal_token(token, "")


def test_expiry_check() -> None:
    token = ExchangedToken("t", 1000.0, "scaidrive", ())
    assert not token.expired(now=999.0)
    assert token.expired(now=1000.0)
    assert token.expired(now=990.0, margin_s=30)


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            b'{"status":"error","error":{"code":"NAME_CONFLICT","message":"exists"}}',
            "NAME_CONFLICT",
            "exists",
        ),
        (b'{"error":{"code":"X_Y","message":"bare"}}', "X_Y", "bare"),
        (b'{"error":"invalid_grant","error_description":"expired"}', "invalid_grant", "expired"),
        (b'{"error":"invalid_client"}', "invalid_client", ""),
        (b'{"detail":"Share not found"}', None, "Share not found"),
        (
            b'{"detail":[{"loc":["body","name"],"msg":"field required","type":"missing"}]}',
            None,
            "body.name: field required",
        ),
        (b"upstream exploded", None, "upstream exploded"),
        (b"", None, ""),
    ],
)  # fmt: skip
def test_peer_error_shapes(body: bytes, code: str | None, message: str) -> None:
    peer = parse_peer_error(418, body)
    assert (peer.status, peer.code, peer.message) == (418, code, message)


def test_peer_error_messages_are_scrubbed_and_short() -> None:
    body = b'{"detail":"bad token eyJhbGciOi.eyJzdWIiOiJ4In0.c2lnbmF0dXJl ' + b"x" * 500 + b'"}'
    peer = parse_peer_error(401, body)
    assert "eyJhbGciOi" not in peer.message
    assert len(peer.message) == 300
