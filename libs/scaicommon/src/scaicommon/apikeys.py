"""Local API keys: the ``api_keys`` repository and the ``apikeys`` CLI sub-commands (§4.3).

Only ``sha256(full key)`` is stored, plus the first 8 and last 4 characters for display.
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import hashlib
import json
import re
import secrets
import sys
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import psycopg
import structlog
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from scaicommon.errors import ScaiError, service_unavailable
from scaicommon.ids import is_valid_external_id, new_id
from scaicommon.principal import BUILTIN_ROLES, ModulePermissions
from scaicommon.store import open_pool
from scaicommon.timefmt import format_ts, parse_ts, utcnow
from scaicommon.ttlcache import TtlLru

log = structlog.get_logger("scaicommon.apikeys")

KEY_PREFIX = "sgk_"
LOCAL_KEY_RE = re.compile(r"^sgk_[A-Za-z0-9_-]{40}$")
SCAIGRID_KEY_RE = re.compile(r"^sgk_[A-Za-z0-9_-]{32,128}$")
LOOKUP_CACHE_TTL_S = 5.0
TOUCH_INTERVAL_S = 60.0
_COLUMN_NAMES = (
    "id",
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
)
_COLUMNS = sql.SQL(", ").join(sql.Identifier(name) for name in _COLUMN_NAMES)


def generate_key() -> str:
    """A fresh key: ``sgk_`` plus 40 URL-safe characters (``secrets.token_urlsafe(30)``)."""
    return KEY_PREFIX + secrets.token_urlsafe(30)


def hash_key(key: str) -> str:
    """``sha256`` of the full key string (prefix included), 64 lower-case hex characters."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def mask_key(prefix: str, last4: str) -> str:
    """The display form ``sgk_Ab3d…wxyZ``."""
    return f"{prefix}…{last4}"


@dataclass(frozen=True)
class ApiKeyRecord:
    """One ``api_keys`` row, without the hash."""

    id: str
    key_prefix: str
    key_last4: str
    name: str
    tenant_id: str
    partner_id: str | None
    user_id: str
    roles: tuple[str, ...]
    module_permissions: tuple[str, ...]
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ApiKeyRecord:
        """Build from a ``dict_row`` of :data:`_COLUMN_NAMES`."""
        return cls(
            id=row["id"],
            key_prefix=row["key_prefix"],
            key_last4=row["key_last4"],
            name=row["name"],
            tenant_id=row["tenant_id"],
            partner_id=row["partner_id"],
            user_id=row["user_id"],
            roles=tuple(row["roles"] or ()),
            module_permissions=tuple(row["module_permissions"] or ()),
            created_at=row["created_at"],
            created_by=row["created_by"],
            expires_at=row["expires_at"],
            revoked_at=row["revoked_at"],
            last_used_at=row["last_used_at"],
        )

    @property
    def masked(self) -> str:
        """The key as shown to people: ``sgk_Ab3d…wxyZ``."""
        return mask_key(self.key_prefix, self.key_last4)

    def usable(self, now: datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def to_public_dict(self) -> dict[str, Any]:
        """Every column except ``key_hash``, plus the masked ``key`` (``list``/``revoke``)."""
        return {
            "id": self.id,
            "key": self.masked,
            "key_prefix": self.key_prefix,
            "key_last4": self.key_last4,
            "name": self.name,
            "tenant_id": self.tenant_id,
            "partner_id": self.partner_id,
            "user_id": self.user_id,
            "roles": list(self.roles),
            "module_permissions": list(self.module_permissions),
            "created_at": format_ts(self.created_at),
            "created_by": self.created_by,
            "expires_at": format_ts(self.expires_at),
            "revoked_at": format_ts(self.revoked_at),
            "last_used_at": format_ts(self.last_used_at),
        }


def _db_unavailable(exc: BaseException) -> ScaiError:
    log.warning("apikey_lookup_failed", error=type(exc).__name__)
    return service_unavailable("the credential store is unavailable")


REVOCATION_CHANNEL = "scai_apikey_revoked"


def forget_key(key_id: str) -> None:
    """Drop ``key_id`` from the lookup cache of every store in this process."""
    for store in builtins.list(ApiKeyStore._stores):
        store._cache.discard_where(lambda record: record.id == key_id)


async def follow_revocations(dsn: str, *, retry_s: float = 2.0) -> None:
    """Listen for revocations made by any process (the CLI included) until cancelled.

    While the listener is disconnected the 5 s lookup cache still bounds the delay.
    """
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(REVOCATION_CHANNEL)))
                async for note in conn.notifies():
                    forget_key(note.payload)
        except (psycopg.Error, OSError) as exc:
            log.warning("apikey_revocation_listener_down", error=type(exc).__name__)
            await asyncio.sleep(retry_s)


class ApiKeyStore:
    """The ``api_keys`` table of one service schema, with the in-process lookup cache.

    Positive lookups are cached for 5 s; :meth:`revoke` drops the key from the cache of every
    store in this process, so an in-process revocation takes effect at once.
    """

    _stores: ClassVar[weakref.WeakSet[ApiKeyStore]] = weakref.WeakSet()

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        cache_ttl_s: float = LOOKUP_CACHE_TTL_S,
        touch_interval_s: float = TOUCH_INTERVAL_S,
    ) -> None:
        self._pool = pool
        self.cache_ttl_s = cache_ttl_s
        self.touch_interval_s = touch_interval_s
        self._cache: TtlLru[str, ApiKeyRecord] = TtlLru(10_000)
        self._touched: TtlLru[str, bool] = TtlLru(10_000)
        self._tasks: set[asyncio.Task[None]] = set()
        ApiKeyStore._stores.add(self)

    # ----- repository -------------------------------------------------------------------

    async def create(
        self,
        *,
        tenant_id: str,
        user_id: str,
        created_by: str,
        roles: Sequence[str] = (),
        module_permissions: Sequence[str] = (),
        partner_id: str | None = None,
        name: str = "",
        expires_at: datetime | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """Insert a new key; return the record and the full key (shown only once)."""
        key = generate_key()
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                sql.SQL(
                    "INSERT INTO api_keys (id, key_hash, key_prefix, key_last4, name, tenant_id,"
                    " partner_id, user_id, roles, module_permissions, created_by, expires_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::text[], %s::text[], %s, %s)"
                    " RETURNING {}"
                ).format(_COLUMNS),
                (
                    new_id("apikey"),
                    hash_key(key),
                    key[:8],
                    key[-4:],
                    name,
                    tenant_id,
                    partner_id,
                    user_id,
                    list(roles),
                    list(module_permissions),
                    created_by,
                    expires_at,
                ),
            )
            row = await cur.fetchone()
        assert row is not None
        return ApiKeyRecord.from_row(row), key

    async def list(
        self, tenant: str | None = None, user: str | None = None, include_revoked: bool = False
    ) -> builtins.list[ApiKeyRecord]:
        """Keys oldest first, optionally filtered by tenant and user."""
        where: builtins.list[sql.Composable] = []
        params: builtins.list[Any] = []
        if tenant is not None:
            where.append(sql.SQL("tenant_id = %s"))
            params.append(tenant)
        if user is not None:
            where.append(sql.SQL("user_id = %s"))
            params.append(user)
        if not include_revoked:
            where.append(sql.SQL("revoked_at IS NULL"))
        clause = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")
        query = sql.SQL("SELECT {} FROM api_keys{} ORDER BY created_at, id").format(
            _COLUMNS, clause
        )
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            rows = await cur.fetchall()
        return [ApiKeyRecord.from_row(r) for r in rows]

    async def revoke(self, key_id: str) -> ApiKeyRecord | None:
        """Set ``revoked_at`` (kept when already set); ``None`` for an unknown id.

        Every process following :func:`follow_revocations` drops the key from its cache at
        once (Postgres ``NOTIFY``), so a revocation does not wait for the 5 s cache.
        """
        async with (
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(
                sql.SQL(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = %s"
                    " RETURNING {}"
                ).format(_COLUMNS),
                (key_id,),
            )
            row = await cur.fetchone()
            if row is not None:
                await cur.execute("SELECT pg_notify(%s, %s)", (REVOCATION_CHANNEL, key_id))
        forget_key(key_id)
        return None if row is None else ApiKeyRecord.from_row(row)

    async def lookup_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The row with ``key_hash`` (revoked or expired included), uncached."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                sql.SQL("SELECT {} FROM api_keys WHERE key_hash = %s").format(_COLUMNS),
                (key_hash,),
            )
            row = await cur.fetchone()
        return None if row is None else ApiKeyRecord.from_row(row)

    async def touch(self, key_id: str, *, if_older_than_s: float = 0.0) -> None:
        """Set ``last_used_at = now()``, unless it was set less than ``if_older_than_s`` ago."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE api_keys SET last_used_at = now() WHERE id = %s AND (last_used_at IS NULL"
                " OR last_used_at <= now() - make_interval(secs => %s))",
                (key_id, if_older_than_s),
            )

    # ----- authentication ---------------------------------------------------------------

    async def resolve(self, key: str) -> ApiKeyRecord:
        """The live record of ``key``; ``AUTH_TOKEN_INVALID`` when malformed, unknown,
        revoked or expired, ``SERVICE_UNAVAILABLE`` when Postgres cannot be reached."""
        if not LOCAL_KEY_RE.match(key):
            raise ScaiError("AUTH_TOKEN_INVALID", "the API key is malformed")
        digest = hash_key(key)
        record = self._cache.get(digest)
        if record is None:
            try:
                record = await self.lookup_hash(digest)
            except (psycopg.Error, PoolTimeout, OSError) as exc:
                raise _db_unavailable(exc) from None
            if record is not None and record.usable(utcnow()):
                self._cache.put(digest, record, self.cache_ttl_s)
        if record is None or not record.usable(utcnow()):
            log.info("apikey_rejected", key_sha=digest[:12], known=record is not None)
            raise ScaiError("AUTH_TOKEN_INVALID", "the API key is unknown, revoked or expired")
        self._note_use(record.id)
        return record

    def _note_use(self, key_id: str) -> None:
        if self._touched.get(key_id):
            return
        self._touched.put(key_id, True, self.touch_interval_s)
        task = asyncio.get_running_loop().create_task(self._touch_quietly(key_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _touch_quietly(self, key_id: str) -> None:
        try:
            await self.touch(key_id, if_older_than_s=self.touch_interval_s)
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            log.warning("apikey_touch_failed", api_key_id=key_id, error=type(exc).__name__)

    async def drain(self) -> None:
        """Wait for pending ``last_used_at`` updates (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*builtins.list(self._tasks), return_exceptions=True)


# ----- CLI ------------------------------------------------------------------------------


class UsageViolation(ValueError):
    """A CLI argument breaks a rule of §4.3 (exit status 2)."""


def add_apikeys_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``apikeys create|list|revoke`` on an argparse sub-parsers object."""
    parser = subparsers.add_parser("apikeys", help="manage local API keys")
    commands = parser.add_subparsers(dest="apikeys_command", required=True)
    create = commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--user", required=True)
    create.add_argument("--role", dest="roles", action="extend", nargs="+", default=[])
    create.add_argument("--permission", dest="permissions", action="extend", nargs="+", default=[])
    create.add_argument("--partner", default=None)
    create.add_argument("--name", default="")
    create.add_argument("--expires", default=None, help="ISO-8601 timestamp with an offset")
    listing = commands.add_parser("list", help="list keys as NDJSON, oldest first")
    listing.add_argument("--tenant", default=None)
    listing.add_argument("--user", default=None)
    listing.add_argument("--include-revoked", action="store_true")
    revoke = commands.add_parser("revoke", help="revoke a key")
    revoke.add_argument("apikey_id")


def _unique(values: Iterable[str]) -> builtins.list[str]:
    return builtins.list(dict.fromkeys(v for v in values if v))


def _check_id(label: str, value: str | None) -> None:
    if value is not None and not is_valid_external_id(value):
        raise UsageViolation(f"{label} {value!r} is not a valid id")


def validate_create(
    args: argparse.Namespace, module: ModulePermissions, now: datetime
) -> dict[str, Any]:
    """Check the ``create`` arguments against §4.3; return ``ApiKeyStore.create`` kwargs."""
    roles = _unique(args.roles or ())
    permissions = _unique(args.permissions or ())
    if not roles and not permissions:
        raise UsageViolation("give at least one --role or --permission")
    unknown_roles = [r for r in roles if r not in BUILTIN_ROLES]
    if unknown_roles:
        raise UsageViolation(
            f"unknown role {unknown_roles[0]!r}; expected one of {', '.join(sorted(BUILTIN_ROLES))}"
        )
    bad = [p for p in permissions if not module.is_key(p)]
    if bad:
        allowed = ", ".join([*sorted(module.all_keys), module.wildcard])
        raise UsageViolation(f"unknown permission {bad[0]!r}; expected one of {allowed}")
    _check_id("--tenant", args.tenant)
    _check_id("--user", args.user)
    _check_id("--partner", args.partner)
    expires_at = None
    if args.expires is not None:
        try:
            expires_at = parse_ts(args.expires)
        except ValueError as exc:
            raise UsageViolation(f"--expires {args.expires!r}: {exc}") from None
        if expires_at <= now:
            raise UsageViolation("--expires must be in the future")
    return {
        "tenant_id": args.tenant,
        "user_id": args.user,
        "partner_id": args.partner,
        "name": args.name or "",
        "roles": roles,
        "module_permissions": permissions,
        "expires_at": expires_at,
    }


def _print_json(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")


def _fail(message: str) -> None:
    sys.stderr.write("apikeys: " + " ".join(message.split()) + "\n")


async def _execute(
    args: argparse.Namespace, store: ApiKeyStore, create: dict[str, Any], created_by: str
) -> int:
    command = args.apikeys_command
    if command == "create":
        record, key = await store.create(created_by=created_by, **create)
        _print_json(
            {
                "id": record.id,
                "key": key,
                "name": record.name,
                "tenant_id": record.tenant_id,
                "partner_id": record.partner_id,
                "user_id": record.user_id,
                "roles": list(record.roles),
                "module_permissions": list(record.module_permissions),
                "expires_at": format_ts(record.expires_at),
                "created_at": format_ts(record.created_at),
            }
        )
        return 0
    if command == "list":
        for record in await store.list(args.tenant, args.user, args.include_revoked):
            _print_json(record.to_public_dict())
        return 0
    revoked = await store.revoke(args.apikey_id)
    if revoked is None:
        _fail(f"no API key with id {args.apikey_id!r}")
        return 1
    _print_json(revoked.to_public_dict())
    return 0


async def run_apikeys(
    args: argparse.Namespace,
    *,
    dsn: str,
    schema: str,
    module: ModulePermissions,
    scaigrid_mode: bool,
    created_by: str,
) -> int:
    """Run one ``apikeys`` sub-command; return the exit status (0, 1 or 2).

    Violations of §4.3 exit 2 with one line on stderr; database errors and unknown ids exit 1.
    """
    if scaigrid_mode:
        _fail(
            "warning: ScaiGrid mode is on (SCAIGRID_BASE_URL is set); ScaiGrid resolves API keys"
            " and keys created here are ignored"
        )
    create: dict[str, Any] = {}
    try:
        if args.apikeys_command == "create":
            create = validate_create(args, module, utcnow())
        elif args.apikeys_command == "list":
            _check_id("--tenant", args.tenant)
            _check_id("--user", args.user)
    except UsageViolation as exc:
        _fail(str(exc))
        return 2
    pool: AsyncConnectionPool | None = None
    try:
        # A direct connection first, so a wrong DSN fails at once instead of at a pool timeout.
        probe = await psycopg.AsyncConnection.connect(dsn, connect_timeout=10)
        await probe.close()
        pool = await open_pool(dsn, schema, min_size=1, max_size=2)
        return await _execute(args, ApiKeyStore(pool), create, created_by)
    except (psycopg.Error, PoolTimeout, OSError) as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        _fail(f"database error: {type(exc).__name__}: {first_line}")
        return 1
    finally:
        if pool is not None:
            await pool.close()
