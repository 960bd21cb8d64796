"""Local API keys against a real Postgres: the CLI, the store and authentication (§4.3)."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from scaicommon.apikeys import ApiKeyStore, add_apikeys_parser, run_apikeys
from scaicommon.auth import Authenticator
from scaicommon.errors import ScaiError
from scaicommon.principal import ModulePermissions
from scaicommon.store import library_migrations, migrate, open_pool
from scaicommon.testing import fresh_database
from scaicommon.timefmt import format_ts, parse_ts, utcnow

SCHEMA = "scaiecho"
ECHO = ModulePermissions(
    "scaiecho",
    frozenset({"scaiecho:transcribe", "scaiecho:diarize", "scaiecho:enroll", "scaiecho:admin"}),
    frozenset({"scaiecho:transcribe"}),
)
CREATE_KEYS = {
    "id",
    "key",
    "name",
    "tenant_id",
    "partner_id",
    "user_id",
    "roles",
    "module_permissions",
    "expires_at",
    "created_at",
}
LIST_KEYS = {
    "id",
    "key",
    "key_prefix",
    "key_last4",
    "name",
    "tenant_id",
    "partner_id",
    "user_id",
    "roles",
    "module_permissions",
    "created_at",
    "created_by",
    "expires_at",
    "revoked_at",
    "last_used_at",
}
MASKED = re.compile(r"^sgk_[A-Za-z0-9_-]{4}…[A-Za-z0-9_-]{4}$")


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scaiecho")
    add_apikeys_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["apikeys", *argv])


class Cli:
    """Runs ``apikeys`` sub-commands in-process and captures their output."""

    def __init__(self, dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.dsn = dsn
        self.capsys = capsys

    async def __call__(self, *argv: str, scaigrid: bool = False) -> tuple[int, str, str]:
        self.capsys.readouterr()
        status = await run_apikeys(
            _parse(*argv),
            dsn=self.dsn,
            schema=SCHEMA,
            module=ECHO,
            scaigrid_mode=scaigrid,
            created_by="cli:tester",
        )
        out, err = self.capsys.readouterr()
        return status, out, err

    async def create(self, *argv: str) -> dict[str, Any]:
        status, out, err = await self("create", *argv)
        assert status == 0, err
        lines = out.splitlines()
        assert len(lines) == 1
        created: dict[str, Any] = json.loads(lines[0])
        return created


@pytest.fixture(scope="module")
async def module_dsn(pg_admin_dsn: str) -> AsyncIterator[str]:
    """One migrated database for the module; each test starts from an empty table."""
    with fresh_database(pg_admin_dsn) as dsn:
        await migrate(dsn, SCHEMA, [("scaicommon", library_migrations())])
        yield dsn


@pytest.fixture
def migrated(module_dsn: str) -> str:
    with psycopg.connect(module_dsn, options=f"-c search_path={SCHEMA}", autocommit=True) as conn:
        conn.execute("DELETE FROM api_keys")
    return module_dsn


@pytest.fixture
async def pool(migrated: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = await open_pool(migrated, SCHEMA, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def auth(pool: AsyncConnectionPool) -> AsyncIterator[Authenticator]:
    authenticator = Authenticator(ECHO, pool=pool)
    yield authenticator
    await authenticator.aclose()


@pytest.fixture
def cli(migrated: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(migrated, capsys)


def _rows(dsn: str, query: str = "SELECT * FROM api_keys ORDER BY created_at") -> list[Any]:
    with psycopg.connect(dsn, options=f"-c search_path={SCHEMA}") as conn:
        return conn.execute(query.encode()).fetchall()


async def _refused(auth: Authenticator, token: str, code: str = "AUTH_TOKEN_INVALID") -> None:
    with pytest.raises(ScaiError) as info:
        await auth.authenticate(token, request_id="req_k")
    assert info.value.code == code, info.value.message


async def test_create_then_authenticate(cli: Cli, auth: Authenticator) -> None:
    expires = format_ts(utcnow() + timedelta(days=1))
    assert expires is not None
    created = await cli.create(
        "--tenant",
        "tnt_a",
        "--user",
        "usr_a",
        "--role",
        "tenant_user",
        "tenant_viewer",
        "--role",
        "partner_viewer",
        "--permission",
        "scaiecho:diarize",
        "--partner",
        "prt_a",
        "--name",
        "ci key",
        "--expires",
        expires.replace("Z", "+02:00"),
    )
    assert set(created) == CREATE_KEYS
    key = created["key"]
    assert re.fullmatch(r"sgk_[A-Za-z0-9_-]{40}", key)
    assert created["id"].startswith("apikey_")
    assert created["roles"] == ["tenant_user", "tenant_viewer", "partner_viewer"]
    assert created["module_permissions"] == ["scaiecho:diarize"]
    assert created["partner_id"] == "prt_a"
    assert created["name"] == "ci key"
    assert parse_ts(created["expires_at"]) == parse_ts(expires) - timedelta(hours=2)
    assert created["created_at"].endswith("Z")

    principal = await auth.authenticate(key, request_id="req_1")
    assert principal.auth_kind == "api_key"
    assert principal.api_key_id == created["id"]
    assert (principal.user_id, principal.tenant_id, principal.partner_id) == (
        "usr_a",
        "tnt_a",
        "prt_a",
    )
    assert principal.roles == {"tenant_user", "tenant_viewer", "partner_viewer"}
    assert principal.effective_permissions() == {"scaiecho:transcribe", "scaiecho:diarize"}
    assert principal.token == key
    assert principal.request_id == "req_1"


async def test_only_the_hash_is_stored(cli: Cli, migrated: str) -> None:
    created = await cli.create("--tenant", "tnt_a", "--user", "usr_a", "--permission", "scaiecho:*")
    key = created["key"]
    (row,) = _rows(
        migrated,
        "SELECT key_hash, key_prefix, key_last4, created_by, row_to_json(k)::text FROM api_keys k",
    )
    key_hash, prefix, last4, created_by, everything = row
    assert key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert (prefix, last4, created_by) == (key[:8], key[-4:], "cli:tester")
    assert key not in everything
    assert key[8:-4] not in everything  # the secret middle is nowhere


async def test_list_is_masked_ndjson_oldest_first(cli: Cli) -> None:
    first = await cli.create("--tenant", "tnt_a", "--user", "usr_a", "--role", "tenant_admin")
    second = await cli.create(
        "--tenant",
        "tnt_a",
        "--user",
        "usr_b",
        "--role",
        "tenant_user",
        "--permission",
        "scaiecho:transcribe",
    )
    third = await cli.create("--tenant", "tnt_b", "--user", "usr_a", "--role", "tenant_viewer")
    status, out, _ = await cli("list")
    assert status == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == [first["id"], second["id"], third["id"]]
    for row, created in zip(rows, (first, second, third), strict=True):
        assert set(row) == LIST_KEYS
        assert MASKED.match(row["key"])
        assert row["key"] == f"{created['key'][:8]}…{created['key'][-4:]}"
        assert created["key"] not in out
        assert row["created_by"] == "cli:tester"
        assert row["revoked_at"] is None
    _, out, _ = await cli("list", "--tenant", "tnt_a")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [first["id"], second["id"]]
    _, out, _ = await cli("list", "--tenant", "tnt_a", "--user", "usr_b")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [second["id"]]

    await cli("revoke", first["id"])
    _, out, _ = await cli("list")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [second["id"], third["id"]]
    _, out, _ = await cli("list", "--include-revoked")
    listed = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in listed] == [first["id"], second["id"], third["id"]]
    assert listed[0]["revoked_at"] is not None


async def test_revoke_takes_effect_at_once_in_process(cli: Cli, auth: Authenticator) -> None:
    created = await cli.create("--tenant", "tnt_a", "--user", "usr_a", "--role", "tenant_admin")
    key = created["key"]
    await auth.authenticate(key, request_id="r")  # now in the 5 s lookup cache
    status, out, _ = await cli("revoke", created["id"])
    assert status == 0
    revoked = json.loads(out)
    assert set(revoked) == LIST_KEYS
    assert revoked["revoked_at"] is not None
    await _refused(auth, key)

    status, out, _ = await cli("revoke", created["id"])
    assert status == 0
    assert json.loads(out)["revoked_at"] == revoked["revoked_at"]  # the original time is kept

    status, out, err = await cli("revoke", "apikey_01JWB3K9Q0M8X4T7ZC2N5R6V1A")
    assert (status, out) == (1, "")
    assert len(err.splitlines()) == 1


async def test_revocation_elsewhere_is_seen_within_the_cache_ttl(
    cli: Cli, auth: Authenticator, pool: AsyncConnectionPool, migrated: str
) -> None:
    created = await cli.create("--tenant", "tnt_a", "--user", "usr_a", "--role", "tenant_admin")
    await auth.authenticate(created["key"], request_id="r")
    # Another process revokes with SQL: this process may keep the key for up to 5 s ...
    with psycopg.connect(migrated, options=f"-c search_path={SCHEMA}", autocommit=True) as conn:
        conn.execute("UPDATE api_keys SET revoked_at = now()")
    await auth.authenticate(created["key"], request_id="r")
    # ... while anything that has not cached it refuses it at once.
    fresh = Authenticator(ECHO, pool=pool)
    await _refused(fresh, created["key"])
    await fresh.aclose()


async def test_expired_keys_are_refused(pool: AsyncConnectionPool, auth: Authenticator) -> None:
    store = ApiKeyStore(pool)
    _, expired = await store.create(
        tenant_id="tnt_a",
        user_id="usr_a",
        created_by="test",
        roles=["tenant_admin"],
        expires_at=utcnow() - timedelta(seconds=1),
    )
    await _refused(auth, expired)
    _, live = await store.create(
        tenant_id="tnt_a",
        user_id="usr_a",
        created_by="test",
        roles=["tenant_admin"],
        expires_at=utcnow() + timedelta(hours=1),
    )
    assert (await auth.authenticate(live, request_id="r")).tenant_id == "tnt_a"


async def test_unknown_and_malformed_keys(pool: AsyncConnectionPool) -> None:
    auth = Authenticator(ECHO, pool=pool)
    await _refused(auth, "sgk_" + "Z" * 40)
    await auth.aclose()
    await pool.close()
    # With Postgres out of reach, a malformed key is still refused without any lookup, and a
    # well-formed one gets SERVICE_UNAVAILABLE rather than a false "invalid".
    auth = Authenticator(ECHO, pool=pool)
    for malformed in ("sgk_short", "sgk_" + "a" * 41, "sgk_" + "a" * 39 + "!"):
        await _refused(auth, malformed)
    await _refused(auth, "sgk_" + "Z" * 40, "SERVICE_UNAVAILABLE")
    await auth.aclose()


async def test_last_used_at_is_updated_at_most_once_a_minute(
    cli: Cli, auth: Authenticator, migrated: str
) -> None:
    created = await cli.create("--tenant", "tnt_a", "--user", "usr_a", "--role", "tenant_admin")
    assert auth.api_keys is not None
    await auth.authenticate(created["key"], request_id="r")
    await auth.api_keys.drain()
    ((first,),) = _rows(migrated, "SELECT last_used_at FROM api_keys")
    assert first is not None
    for _ in range(3):
        await auth.authenticate(created["key"], request_id="r")
    await auth.api_keys.drain()
    assert _rows(migrated, "SELECT last_used_at FROM api_keys") == [(first,)]


async def test_tenant_header_with_api_keys(cli: Cli, auth: Authenticator) -> None:
    admin = await cli.create("--tenant", "tnt_a", "--user", "usr_root", "--role", "super_admin")
    user = await cli.create("--tenant", "tnt_a", "--user", "usr_a", "--role", "tenant_admin")
    principal = await auth.authenticate(admin["key"], request_id="r", tenant_header="tnt_b")
    assert principal.tenant_id == "tnt_b"
    with pytest.raises(ScaiError) as info:
        await auth.authenticate(user["key"], request_id="r", tenant_header="tnt_b")
    assert info.value.code == "AUTHZ_PERMISSION_DENIED"


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--tenant", "t", "--user", "u"], id="no-role-or-permission"),
        pytest.param(["--tenant", "t", "--user", "u", "--role", "owner"], id="unknown-role"),
        pytest.param(
            ["--tenant", "t", "--user", "u", "--permission", "scaispeak:admin"], id="other-module"
        ),
        pytest.param(
            ["--tenant", "t", "--user", "u", "--permission", "scaiecho:fly"],
            id="unknown-permission",
        ),
        pytest.param(
            [
                "--tenant",
                "t",
                "--user",
                "u",
                "--role",
                "tenant_user",
                "--expires",
                "2999-01-01T00:00:00",
            ],
            id="expires-without-offset",
        ),
        pytest.param(
            [
                "--tenant",
                "t",
                "--user",
                "u",
                "--role",
                "tenant_user",
                "--expires",
                "2001-01-01T00:00:00Z",
            ],
            id="expires-in-past",
        ),
        pytest.param(
            ["--tenant", "t", "--user", "u", "--role", "tenant_user", "--expires", "soon"],
            id="expires-garbage",
        ),
        pytest.param(
            ["--tenant", "tnt:a", "--user", "u", "--role", "tenant_user"], id="tenant-with-colon"
        ),
    ],
)
async def test_create_violations_exit_2(argv: list[str], cli: Cli, migrated: str) -> None:
    status, out, err = await cli("create", *argv)
    assert status == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert _rows(migrated) == []


async def test_database_errors_exit_1(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Not migrated: the table is missing.
    status, out, err = await Cli(pg_dsn, capsys)("list")
    assert (status, out) == (1, "")
    assert err.startswith("apikeys: database error")
    # Unreachable server.
    status, _, err = await Cli("postgresql://postgres@127.0.0.1:1/x", capsys)(
        "create", "--tenant", "t", "--user", "u", "--role", "tenant_user"
    )
    assert status == 1
    assert len(err.strip().splitlines()) == 1


async def test_scaigrid_mode_warns_but_works(cli: Cli, pool: AsyncConnectionPool) -> None:
    status, out, err = await cli(
        "create", "--tenant", "t", "--user", "u", "--role", "tenant_user", scaigrid=True
    )
    assert status == 0
    assert "ScaiGrid" in err and "ignored" in err
    assert json.loads(out)["key"].startswith("sgk_")
    # In ScaiGrid mode the authenticator never reads the local table.
    auth = Authenticator(ECHO, pool=pool, scaigrid_base_url="http://127.0.0.1:1")
    assert auth.api_keys is None
    await auth.aclose()
