"""OAuth clients of dev ScaiKey: the TOML file, built-in defaults and client authentication."""

from __future__ import annotations

import base64
import binascii
import hmac
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

DEFAULT_CLIENTS_PATH = Path("devstack/scaikey.toml")


@dataclass(frozen=True)
class Client:
    """One registered client application."""

    client_id: str
    client_secret: str
    type: str = "confidential"
    allowed_scopes: tuple[str, ...] = ()
    token_exchange_allowed: tuple[str, ...] = ()


DEFAULT_CLIENTS: tuple[Client, ...] = (
    Client(
        client_id="scaiecho",
        client_secret="scaiecho-dev-secret",
        allowed_scopes=("files:read", "files:write"),
        token_exchange_allowed=("scaidrive",),
    ),
    Client(
        client_id="scaispeak",
        client_secret="scaispeak-dev-secret",
        allowed_scopes=("files:read", "files:write"),
        token_exchange_allowed=("scaidrive",),
    ),
    Client(client_id="scaidrive", client_secret="scaidrive-dev-secret"),
)


class ClientAuthError(Exception):
    """Client authentication failed (OAuth ``invalid_client``)."""

    def __init__(self, description: str, *, basic: bool) -> None:
        super().__init__(description)
        self.description = description
        self.basic = basic


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of strings")
    return tuple(value)


def _client_from_table(table: Mapping[str, Any]) -> Client:
    try:
        client_id = table["client_id"]
        client_secret = table["client_secret"]
    except KeyError as exc:
        raise ValueError(f"client entry is missing {exc.args[0]!r}") from exc
    if not isinstance(client_id, str) or not isinstance(client_secret, str):
        raise ValueError("client_id and client_secret must be strings")
    return Client(
        client_id=client_id,
        client_secret=client_secret,
        type=str(table.get("type", "confidential")),
        allowed_scopes=_strings(table.get("allowed_scopes"), "allowed_scopes"),
        token_exchange_allowed=_strings(
            table.get("token_exchange_allowed"), "token_exchange_allowed"
        ),
    )


class ClientRegistry:
    """Registered clients by ``client_id``, with client authentication."""

    def __init__(self, clients: Iterable[Client]) -> None:
        self._clients = {c.client_id: c for c in clients}

    @classmethod
    def defaults(cls) -> ClientRegistry:
        """The built-in clients (scaiecho, scaispeak, scaidrive)."""
        return cls(DEFAULT_CLIENTS)

    @classmethod
    def load(cls, path: str | Path | None = None) -> ClientRegistry:
        """Load ``[[clients]]`` entries from a TOML file; built-in defaults when it is absent."""
        file = Path(path) if path is not None else DEFAULT_CLIENTS_PATH
        if not file.is_file():
            if path is not None:
                print(f"scaikey: {file} not found, using built-in clients", file=sys.stderr)
            return cls.defaults()
        with open(file, "rb") as handle:
            data = tomllib.load(handle)
        tables = data.get("clients", [])
        if not isinstance(tables, list):
            raise ValueError(f"{file}: 'clients' must be an array of tables")
        return cls(_client_from_table(t) for t in tables)

    def get(self, client_id: str) -> Client | None:
        """The client with ``client_id``, or ``None``."""
        return self._clients.get(client_id)

    def all(self) -> list[Client]:
        """Every registered client."""
        return list(self._clients.values())

    def authenticate(self, authorization: str | None, form: Mapping[str, str]) -> Client:
        """Authenticate with HTTP Basic (preferred) or ``client_id``/``client_secret`` form fields.

        Raises :class:`ClientAuthError` when no credentials are given or they do not match.
        """
        basic = False
        if authorization and authorization[:6].lower() == "basic ":
            basic = True
            try:
                raw = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise ClientAuthError("malformed Basic credentials", basic=True) from exc
            client_id, sep, secret = raw.partition(":")
            if not sep:
                raise ClientAuthError("malformed Basic credentials", basic=True)
            client_id, secret = unquote(client_id), unquote(secret)
        else:
            client_id = form.get("client_id", "")
            secret = form.get("client_secret", "")
            if not client_id or not secret:
                raise ClientAuthError("client authentication is required", basic=False)
        client = self._clients.get(client_id)
        if client is None or not hmac.compare_digest(
            client.client_secret.encode("utf-8"), secret.encode("utf-8")
        ):
            raise ClientAuthError("unknown client or wrong secret", basic=basic)
        return client
