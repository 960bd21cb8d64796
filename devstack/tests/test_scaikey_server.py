"""Dev ScaiKey over HTTP: JWKS, discovery, rotation, client_credentials and token exchange."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from scaidevstack._jose import JsonWebKey, JsonWebToken
from scaidevstack.jwtcheck import unverified_header
from scaidevstack.scaikey import KeyStore, build_user_claims, generate_signing_key

TOKEN_PATH = "/api/v1/platform/oauth/token"
JWKS_PATH = "/api/v1/platform/.well-known/jwks.json"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
SCAISPEAK = ("scaispeak", "scaispeak-dev-secret")

_VERIFIER = JsonWebToken(["RS256", "ES256"])


def verify_with_served_jwks(http: httpx.Client, base_url: str, token: str) -> dict[str, Any]:
    """Verify ``token`` with authlib against the JWKS the server publishes right now."""
    jwks = http.get(base_url + JWKS_PATH).json()
    claims = _VERIFIER.decode(token, JsonWebKey.import_key_set(jwks))
    claims.validate()
    return dict(claims)


def exchange(
    http: httpx.Client,
    base_url: str,
    subject: str,
    *,
    auth: tuple[str, str] | None = SCAISPEAK,
    audience: str = "scaidrive",
    scope: str | None = "files:read files:write",
    path: str = TOKEN_PATH,
) -> httpx.Response:
    """POST an RFC 8693 exchange request."""
    form = {
        "grant_type": EXCHANGE,
        "subject_token": subject,
        "subject_token_type": ACCESS,
        "requested_token_type": ACCESS,
        "audience": audience,
    }
    if scope is not None:
        form["scope"] = scope
    if auth is None:
        return http.post(base_url + path, data=form)
    return http.post(base_url + path, data=form, auth=auth)


@pytest.fixture
def user_token(keystore: KeyStore, issuer_base: str) -> str:
    return keystore.mint(
        tenant="tnt_x",
        user="usr_x",
        partner="prt_x",
        email="x@example.test",
        roles=["tenant_user"],
        scope="files:read files:write",
        issuer_base=issuer_base,
    )


def test_jwks_served_at_both_paths(http: httpx.Client, scaikey: Any, keystore: KeyStore) -> None:
    platform = http.get(scaikey.base_url + JWKS_PATH)
    tenant = http.get(scaikey.base_url + "/api/v1/auth/tenants/tnt_x/.well-known/jwks.json")
    assert platform.status_code == tenant.status_code == 200
    assert platform.json() == tenant.json()
    keys = platform.json()["keys"]
    assert {k["alg"] for k in keys} >= {"RS256", "ES256"}
    assert all({"kid", "kty", "use"} <= set(k) and "d" not in k for k in keys)


def test_discovery_documents(http: httpx.Client, scaikey: Any) -> None:
    base = scaikey.base_url
    platform = http.get(base + "/api/v1/platform/oauth/.well-known/openid-configuration").json()
    assert platform["issuer"] == base
    assert platform["jwks_uri"] == base + JWKS_PATH
    assert platform["token_endpoint"] == base + TOKEN_PATH
    assert set(platform["grant_types_supported"]) == {"client_credentials", EXCHANGE}
    assert set(platform["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
    }
    assert platform["id_token_signing_alg_values_supported"] == ["RS256", "ES256"]
    tenant = http.get(base + "/api/v1/auth/tenants/tnt_x/.well-known/openid-configuration").json()
    assert tenant["issuer"] == base + "/tenants/tnt_x"
    assert tenant["jwks_uri"] == base + "/api/v1/auth/tenants/tnt_x/.well-known/jwks.json"
    assert tenant["token_endpoint"] == base + "/api/v1/auth/tenants/tnt_x/oauth/token"


def test_minted_token_verifies_against_served_jwks(
    http: httpx.Client, scaikey: Any, keystore: KeyStore, issuer_base: str
) -> None:
    for alg in ("RS256", "ES256"):
        token = keystore.mint(tenant="tnt_x", user="usr_x", alg=alg, issuer_base=issuer_base)
        claims = verify_with_served_jwks(http, scaikey.base_url, token)
        assert claims["iss"] == f"{issuer_base}/tenants/tnt_x"


def test_rotate_cli_publishes_new_kid_and_both_tokens_verify(
    http: httpx.Client, scaikey: Any, keystore: KeyStore, issuer_base: str, state_dir: Any, cli: Any
) -> None:
    before = keystore.mint(tenant="tnt_x", user="usr_x", issuer_base=issuer_base)
    old_kid = unverified_header(before)["kid"]
    rotated = cli.run("scaikey", "rotate", "--state-dir", str(state_dir)).stdout
    new_kid = rotated.split('"kid": "')[1].split('"')[0]
    kids = [k["kid"] for k in http.get(scaikey.base_url + JWKS_PATH).json()["keys"]]
    assert old_kid in kids and new_kid in kids and new_kid != old_kid
    after = keystore.mint(tenant="tnt_x", user="usr_x", issuer_base=issuer_base)
    assert unverified_header(after)["kid"] == new_kid
    for token in (before, after):
        assert verify_with_served_jwks(http, scaikey.base_url, token)["sub"] == "usr_x"
    # The server signs with the rotated key too.
    answer = exchange(http, scaikey.base_url, after)
    assert unverified_header(answer.json()["access_token"])["kid"] == new_kid


def test_client_credentials(http: httpx.Client, scaikey: Any, issuer_base: str) -> None:
    answer = http.post(
        scaikey.base_url + TOKEN_PATH,
        data={
            "grant_type": "client_credentials",
            "client_id": "scaiecho",
            "client_secret": "scaiecho-dev-secret",
            "scope": "files:read",
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "files:read"
    claims = verify_with_served_jwks(http, scaikey.base_url, body["access_token"])
    assert claims["iss"] == issuer_base
    assert claims["sub"] == claims["client_id"] == "scaiecho"
    assert claims["token_type"] == "client_credentials"
    assert claims["scope"] == "files:read"
    refused = http.post(
        scaikey.base_url + TOKEN_PATH,
        data={"grant_type": "client_credentials", "scope": "tenant:admin"},
        auth=("scaiecho", "scaiecho-dev-secret"),
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_scope"


def test_token_exchange_success(
    http: httpx.Client, scaikey: Any, keystore: KeyStore, user_token: str, issuer_base: str
) -> None:
    answer = exchange(http, scaikey.base_url, user_token)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["issued_token_type"] == ACCESS
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "files:read files:write"
    assert 0 < body["expires_in"] <= 300
    claims = verify_with_served_jwks(http, scaikey.base_url, body["access_token"])
    assert claims["iss"] == f"{issuer_base}/tenants/tnt_x"
    assert claims["sub"] == "usr_x"
    assert claims["tenant_id"] == "tnt_x"
    assert claims["partner_id"] == "prt_x"
    assert claims["email"] == "x@example.test"
    assert claims["aud"] == "scaidrive"
    assert claims["scope"] == "files:read files:write"
    assert claims["act"] == {"sub": "scaispeak", "client_id": "scaispeak"}
    assert claims["exp"] - claims["iat"] <= 300
    assert "roles" not in claims


def test_token_exchange_form_auth_scope_subset_and_short_subject(
    http: httpx.Client, scaikey: Any, keystore: KeyStore, issuer_base: str
) -> None:
    short = keystore.mint(
        tenant="tnt_x", user="usr_x", scope="files:read files:write", ttl=60,
        issuer_base=issuer_base,
    )  # fmt: skip
    answer = http.post(
        scaikey.base_url + "/api/v1/auth/tenants/tnt_x/oauth/token",
        data={
            "grant_type": EXCHANGE,
            "subject_token": short,
            "subject_token_type": ACCESS,
            "audience": "scaidrive",
            "scope": "files:read",
            "client_id": "scaiecho",
            "client_secret": "scaiecho-dev-secret",
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["scope"] == "files:read"
    assert body["expires_in"] <= 60
    claims = verify_with_served_jwks(http, scaikey.base_url, body["access_token"])
    assert claims["act"]["client_id"] == "scaiecho"


@pytest.mark.parametrize(
    ("auth", "status"),
    [(None, 401), (("scaispeak", "wrong"), 401), (("nobody", "x"), 401)],
)
def test_exchange_refuses_bad_client(
    http: httpx.Client, scaikey: Any, user_token: str, auth: Any, status: int
) -> None:
    answer = exchange(http, scaikey.base_url, user_token, auth=auth)
    assert answer.status_code == status
    assert answer.json()["error"] == "invalid_client"
    assert answer.json()["error_description"]


def test_exchange_refuses_audience_not_allowed(
    http: httpx.Client, scaikey: Any, user_token: str
) -> None:
    answer = exchange(http, scaikey.base_url, user_token, audience="scaigrid")
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_target"
    # scaidrive is a registered client but may not exchange at all.
    answer = exchange(
        http, scaikey.base_url, user_token, auth=("scaidrive", "scaidrive-dev-secret")
    )
    assert answer.json()["error"] == "invalid_target"


def test_exchange_refuses_bad_subject_tokens(
    http: httpx.Client, scaikey: Any, keystore: KeyStore, issuer_base: str
) -> None:
    good = build_user_claims(tenant="tnt_x", user="usr_x", issuer_base=issuer_base)
    subjects = {
        "expired": keystore.mint(
            tenant="tnt_x", user="usr_x", expired=True, issuer_base=issuer_base
        ),
        "foreign key": generate_signing_key("RS256").sign(good),
        "wrong issuer": keystore.sign({**good, "iss": "http://elsewhere.test/tenants/tnt_x"}),
        "garbage": "not-a-jwt",
    }
    for label, subject in subjects.items():
        answer = exchange(http, scaikey.base_url, subject)
        assert answer.status_code == 400, label
        assert answer.json()["error"] == "invalid_grant", label


def test_exchange_refuses_scope_beyond_subject(
    http: httpx.Client, scaikey: Any, keystore: KeyStore, issuer_base: str
) -> None:
    read_only = keystore.mint(
        tenant="tnt_x", user="usr_x", scope="files:read", issuer_base=issuer_base
    )
    answer = exchange(http, scaikey.base_url, read_only, scope="files:read files:write")
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_scope"
    # Without a scope claim on the subject, any requested scope is granted.
    unscoped = keystore.mint(tenant="tnt_x", user="usr_x", issuer_base=issuer_base)
    answer = exchange(http, scaikey.base_url, unscoped, scope="files:write")
    assert answer.status_code == 200
    assert answer.json()["scope"] == "files:write"


def test_token_endpoint_request_errors(http: httpx.Client, scaikey: Any) -> None:
    url = scaikey.base_url + TOKEN_PATH
    basic = "Basic " + base64.b64encode(b"scaispeak:scaispeak-dev-secret").decode()
    answer = http.post(url, data={"grant_type": "password"}, headers={"Authorization": basic})
    assert answer.status_code == 400
    assert answer.json()["error"] == "unsupported_grant_type"
    answer = http.post(url, json={"grant_type": "client_credentials"}, auth=SCAISPEAK)
    assert answer.json()["error"] == "invalid_request"
    answer = http.post(url, data={"grant_type": EXCHANGE, "audience": "scaidrive"}, auth=SCAISPEAK)
    assert answer.json()["error"] == "invalid_request"
