"""Dev ScaiKey signing keys: generation, the on-disk key store, JWKS and signing helpers.

The key store lives in ``<state_dir>/scaikey/keys.json``. Creation and rotation hold an exclusive
``flock`` on ``keys.lock`` and replace the file atomically, so several processes (the server, the
``mint`` CLI, a test) can share one store and never create two different first keys.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scaidevstack._jose import JsonWebKey, JsonWebToken
from scaidevstack.jwtcheck import verify_jwt
from scaidevstack.scaikey.tokens import build_user_claims

SUPPORTED_ALGS: tuple[str, ...] = ("RS256", "ES256")
DEFAULT_ALG = "RS256"

_SIGNER = JsonWebToken(["RS256", "ES256", "HS256"])


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    """One private signing key with its ``kid`` and algorithm."""

    kid: str
    alg: str
    jwk: Any
    created_at: str

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK dict carrying ``kid``, ``alg`` and ``use``."""
        data: dict[str, Any] = dict(self.jwk.as_dict(is_private=False))
        data.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return data

    def private_jwk(self) -> dict[str, Any]:
        """The full private JWK dict (for the key store file only)."""
        data: dict[str, Any] = dict(self.jwk.as_dict(is_private=True))
        data.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return data

    def sign(self, claims: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None) -> str:
        """Sign ``claims`` as a compact JWT.

        The header gets ``alg``, ``kid`` and ``typ: JWT``; ``headers`` entries override them
        (for example ``{"kid": "nope"}`` to forge an unknown-kid token).
        """
        header: dict[str, Any] = {"alg": self.alg, "kid": self.kid, "typ": "JWT"}
        if headers:
            header.update(headers)
        encoded = _SIGNER.encode(header, dict(claims), self.jwk, check=False)
        return encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded)


def kid_for(jwk: Any) -> str:
    """``kid`` = the first 16 characters of the key's RFC 7638 thumbprint."""
    return str(jwk.thumbprint())[:16]


def generate_signing_key(alg: str = DEFAULT_ALG) -> SigningKey:
    """Create a fresh key for ``alg`` (RSA-2048 for RS256, P-256 for ES256).

    The key is not stored anywhere; tests use this to sign tokens with a key that is not in
    any JWKS.
    """
    if alg == "RS256":
        jwk = JsonWebKey.generate_key("RSA", 2048, is_private=True)
    elif alg == "ES256":
        jwk = JsonWebKey.generate_key("EC", "P-256", is_private=True)
    else:
        raise ValueError(f"unsupported algorithm {alg!r}; use one of {SUPPORTED_ALGS}")
    return SigningKey(kid=kid_for(jwk), alg=alg, jwk=jwk, created_at=_now_iso())


def sign_hs256(
    claims: Mapping[str, Any], secret: str, *, headers: Mapping[str, Any] | None = None
) -> str:
    """Sign ``claims`` with HS256 and a shared ``secret`` (a token verifiers must refuse)."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if headers:
        header.update(headers)
    key = JsonWebKey.import_key({"kty": "oct", "k": _b64url(secret.encode("utf-8"))})
    encoded = _SIGNER.encode(header, dict(claims), key, check=False)
    return encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded)


def forge_unsigned(claims: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None) -> str:
    """Build an ``alg: none`` token with an empty signature (a token verifiers must refuse)."""
    header: dict[str, Any] = {"alg": "none", "typ": "JWT"}
    if headers:
        header.update(headers)
    head = _b64url(json.dumps(header, separators=(",", ":")).encode("utf-8"))
    body = _b64url(json.dumps(dict(claims), separators=(",", ":")).encode("utf-8"))
    return f"{head}.{body}."


def _key_from_record(record: Mapping[str, Any]) -> SigningKey:
    jwk = JsonWebKey.import_key(dict(record["jwk"]))
    return SigningKey(
        kid=str(record["kid"]),
        alg=str(record["alg"]),
        jwk=jwk,
        created_at=str(record.get("created_at", "")),
    )


def _record_for(key: SigningKey) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "alg": key.alg,
        "created_at": key.created_at,
        "jwk": key.private_jwk(),
    }


@dataclass(frozen=True)
class _Snapshot:
    stamp: tuple[int, int, int]
    keys: tuple[SigningKey, ...]
    current: Mapping[str, str]


class KeyStore:
    """The dev ScaiKey key store under ``<state_dir>/scaikey/``.

    Every read checks the file's stat and reloads when another process (``rotate``) changed it,
    so a running server picks up rotations without a restart.
    """

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.directory = Path(state_dir) / "scaikey"
        self.path = self.directory / "keys.json"
        self._lock_path = self.directory / "keys.lock"
        self._snapshot: _Snapshot | None = None

    # -- file handling -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _read_file(self) -> _Snapshot:
        with open(self.path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            data = json.loads(handle.read())
        keys = tuple(_key_from_record(r) for r in data["keys"])
        return _Snapshot(
            stamp=(stat.st_ino, stat.st_mtime_ns, stat.st_size),
            keys=keys,
            current=dict(data["current"]),
        )

    def _write_file(self, keys: tuple[SigningKey, ...], current: Mapping[str, str]) -> None:
        payload = {"keys": [_record_for(k) for k in keys], "current": dict(current)}
        fd, tmp = tempfile.mkstemp(prefix=".keys-", suffix=".json", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _load(self) -> _Snapshot:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self.ensure()
            stat = os.stat(self.path)
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._snapshot is None or self._snapshot.stamp != stamp:
            self._snapshot = self._read_file()
        return self._snapshot

    # -- public API ----------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the store with one RS256 and one ES256 key unless it already exists."""
        with self._locked():
            if self.path.exists():
                return
            keys = tuple(generate_signing_key(alg) for alg in SUPPORTED_ALGS)
            self._write_file(keys, {k.alg: k.kid for k in keys})

    def keys(self) -> list[SigningKey]:
        """Every key in the store, oldest first."""
        return list(self._load().keys)

    def current(self, alg: str = DEFAULT_ALG) -> SigningKey:
        """The key that signs new tokens for ``alg``."""
        if alg not in SUPPORTED_ALGS:
            raise ValueError(f"unsupported algorithm {alg!r}; use one of {SUPPORTED_ALGS}")
        snap = self._load()
        kid = snap.current[alg]
        for key in snap.keys:
            if key.kid == kid:
                return key
        raise LookupError(f"current {alg} key {kid} is missing from the store")

    def get(self, kid: str) -> SigningKey | None:
        """The key with ``kid``, or ``None``."""
        return next((k for k in self._load().keys if k.kid == kid), None)

    def rotate(self, alg: str = DEFAULT_ALG) -> SigningKey:
        """Add a new key for ``alg`` and make it the current signer; old keys stay published."""
        new_key = generate_signing_key(alg)
        self.ensure()
        with self._locked():
            snap = self._read_file()
            current = dict(snap.current)
            current[alg] = new_key.kid
            self._write_file((*snap.keys, new_key), current)
        return new_key

    def jwks(self) -> dict[str, Any]:
        """The public JWKS: ``{"keys": [...]}`` with every key, oldest first."""
        return {"keys": [k.public_jwk() for k in self._load().keys]}

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        alg: str = DEFAULT_ALG,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """Sign arbitrary ``claims`` with the current ``alg`` key (header overrides allowed)."""
        return self.current(alg).sign(claims, headers=headers)

    def verify(self, token: str, *, issuer: str | None = None) -> dict[str, Any]:
        """Verify a token against this store's public keys (see :func:`verify_jwt`)."""
        return verify_jwt(token, self.jwks(), issuer=issuer)

    def mint(
        self,
        *,
        tenant: str,
        user: str,
        partner: str | None = None,
        roles: list[str] | tuple[str, ...] = (),
        permissions: list[str] | tuple[str, ...] = (),
        scope: str | None = None,
        audience: str | None = None,
        email: str | None = None,
        ttl: int = 3600,
        alg: str = DEFAULT_ALG,
        expired: bool = False,
        issuer_base: str | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """Mint a user JWT exactly like ``scaikey mint`` (platform.md §17.3)."""
        claims = build_user_claims(
            tenant=tenant,
            user=user,
            partner=partner,
            roles=roles,
            permissions=permissions,
            scope=scope,
            audience=audience,
            email=email,
            ttl=ttl,
            expired=expired,
            issuer_base=issuer_base,
        )
        if extra_claims:
            claims.update(extra_claims)
        return self.sign(claims, alg=alg)
