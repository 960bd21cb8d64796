"""Key store, minting and forging helpers, without a server."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from scaidevstack.jwtcheck import TokenError, unverified_claims, unverified_header, verify_jwt
from scaidevstack.scaikey import (
    KeyStore,
    build_user_claims,
    forge_unsigned,
    generate_signing_key,
    sign_hs256,
)


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint computed independently of authlib."""
    members = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: jwk[k] for k in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_store_has_rsa_and_ec_keys_with_thumbprint_kids(tmp_path: Path) -> None:
    jwks = KeyStore(tmp_path).jwks()
    by_alg = {k["alg"]: k for k in jwks["keys"]}
    assert set(by_alg) == {"RS256", "ES256"}
    assert by_alg["ES256"]["crv"] == "P-256"
    assert len(base64.urlsafe_b64decode(by_alg["RS256"]["n"] + "==")) == 256  # RSA-2048
    for key in jwks["keys"]:
        assert key["kid"] == _thumbprint(key)[:16]
        assert "d" not in key  # public halves only
    assert (tmp_path / "scaikey" / "keys.json").stat().st_mode & 0o077 == 0


def test_mint_claims_match_the_contract(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    token = store.mint(
        tenant="tnt_a",
        user="usr_a",
        partner="prt_a",
        roles=["tenant_admin", "tenant_user"],
        permissions=["scaiecho:transcribe"],
        scope="files:read files:write",
        audience="scaigrid",
        email="a@example.test",
        ttl=600,
        issuer_base="http://127.0.0.1:8091",
    )
    claims = store.verify(token, issuer="http://127.0.0.1:8091")
    assert claims["iss"] == "http://127.0.0.1:8091/tenants/tnt_a"
    assert claims["sub"] == "usr_a"
    assert claims["tenant_id"] == "tnt_a"
    assert claims["partner_id"] == "prt_a"
    assert claims["role"] == "tenant_admin"
    assert claims["roles"] == ["tenant_admin", "tenant_user"]
    assert claims["module_permissions"] == ["scaiecho:transcribe"]
    assert claims["scope"] == "files:read files:write"
    assert claims["email"] == "a@example.test"
    assert claims["aud"] == "scaigrid"
    assert claims["client_id"] == "devstack-cli"
    assert claims["exp"] - claims["iat"] == 600
    assert claims["jti"]
    assert unverified_header(token)["kid"] == store.current("RS256").kid


def test_expired_and_forged_tokens_are_refused(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    base = "http://127.0.0.1:8091"
    good = build_user_claims(tenant="tnt_a", user="usr_a", issuer_base=base)
    expired = store.mint(tenant="tnt_a", user="usr_a", expired=True, issuer_base=base)
    assert unverified_claims(expired)["exp"] < time.time() - 3500
    outsider = generate_signing_key("RS256")
    forged = {
        "expired": expired,
        "unknown kid": outsider.sign(good),
        "known kid, wrong key": outsider.sign(good, headers={"kid": store.current().kid}),
        "hs256": sign_hs256(good, "secret"),
        "none": forge_unsigned(good),
        "wrong issuer": store.sign({**good, "iss": "http://127.0.0.1:8091.evil/tenants/x"}),
        "no exp": store.sign({k: v for k, v in good.items() if k != "exp"}),
    }
    for label, token in forged.items():
        with pytest.raises(TokenError):
            verify_jwt(token, store.jwks(), issuer=base)
            pytest.fail(label)
    assert verify_jwt(store.sign(good), store.jwks(), issuer=base)["sub"] == "usr_a"


def test_rotate_keeps_old_keys_and_switches_signer(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    old = store.current("RS256")
    old_token = store.sign({"sub": "u", "exp": int(time.time()) + 60})
    new = store.rotate()
    assert new.kid != old.kid
    assert store.current("RS256").kid == new.kid
    kids = [k["kid"] for k in store.jwks()["keys"]]
    assert old.kid in kids and new.kid in kids
    new_token = store.sign({"sub": "u", "exp": int(time.time()) + 60})
    assert unverified_header(new_token)["kid"] == new.kid
    for token in (old_token, new_token):
        assert verify_jwt(token, store.jwks(), issuer=None)["sub"] == "u"
    # A second store object (another process in real life) sees the rotation.
    assert KeyStore(tmp_path).current("RS256").kid == new.kid


def test_cli_mint_prints_only_the_jwt_and_es256_works(tmp_path: Path, cli: Any) -> None:
    result = cli.run(
        "scaikey", "mint", "--tenant", "tnt_b", "--user", "usr_b", "--alg", "ES256",
        "--role", "tenant_user", "--permission", "scaiecho:transcribe", "scaiecho:diarize",
        "--scope", "files:read", "--state-dir", str(tmp_path),
        "--issuer-base", "http://dev.test:1",
    )  # fmt: skip
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    assert unverified_header(token)["alg"] == "ES256"
    claims = KeyStore(tmp_path).verify(token, issuer="http://dev.test:1")
    assert claims["iss"] == "http://dev.test:1/tenants/tnt_b"
    assert claims["module_permissions"] == ["scaiecho:transcribe", "scaiecho:diarize"]


def test_two_processes_creating_the_store_agree_on_one_key(tmp_path: Path, cli: Any) -> None:
    mint = ("scaikey", "mint", "--tenant", "t", "--user", "u", "--state-dir", str(tmp_path))
    procs = [cli.popen(*mint) for _ in range(3)]
    tokens = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    kids = {unverified_header(t)["kid"] for t in tokens}
    assert len(kids) == 1
    assert len(KeyStore(tmp_path).jwks()["keys"]) == 2
