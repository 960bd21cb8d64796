"""Tenant backend policy: storage, API forms and the backend resolver (platform §5).

Backends: ``A`` = self-hosted inference nodes, ``B`` = the OpenAI-shaped relay. The stored
``allowed_backends`` is canonical (``A``, ``B``, ``AB``, ``BA``); ScaiEcho shows it as that
string, ScaiSpeak as a list. ``AB`` and ``BA`` route identically; the letter order is kept
only as written.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from scaicommon.errors import ScaiError, validation_error
from scaicommon.principal import Principal
from scaicommon.timefmt import format_ts

ALLOWED_VALUES = ("A", "B", "AB", "BA")
BACKENDS = ("A", "B")
PREFERENCES = ("any", "prefer_self_hosted", "prefer_relay")
_PREFERRED = {"prefer_self_hosted": "A", "prefer_relay": "B"}

Backend = Literal["A", "B"]
N = TypeVar("N")


# ----- the policy row and its API forms ----------------------------------------------


@dataclass(frozen=True)
class Policy:
    """One ``tenant_policy`` row."""

    tenant_id: str
    allowed_backends: str
    default_backend: str
    created_at: datetime
    updated_at: datetime
    updated_by: str | None = None

    @property
    def allowed(self) -> tuple[str, ...]:
        """The allowed letters, in stored order."""
        return tuple(self.allowed_backends)

    def to_echo_api(self) -> dict[str, Any]:
        """The ScaiEcho policy object (``allowed_backends`` as a string)."""
        return {
            "tenant_id": self.tenant_id,
            "allowed_backends": echo_form(self),
            "default_backend": self.default_backend,
            "updated_at": format_ts(self.updated_at),
        }

    def to_speak_api(self) -> dict[str, Any]:
        """The ScaiSpeak policy object (``allowed_backends`` as a list; no ``availability``)."""
        return {
            "tenant_id": self.tenant_id,
            "allowed_backends": speak_form(self),
            "default_backend": self.default_backend,
            "updated_at": format_ts(self.updated_at),
            "updated_by": self.updated_by,
        }

    def to_audit(self) -> dict[str, Any]:
        """The canonical values an audit row records as ``before``/``after``."""
        return {
            "allowed_backends": self.allowed_backends,
            "default_backend": self.default_backend,
        }


def echo_form(policy: Policy) -> str:
    """``allowed_backends`` as ScaiEcho writes it: the canonical string."""
    return policy.allowed_backends


def speak_form(policy: Policy) -> list[str]:
    """``allowed_backends`` as ScaiSpeak writes it: a list of letters."""
    return list(policy.allowed_backends)


def parse_echo_allowed(value: object) -> str:
    """Parse ScaiEcho input (``"A"``, ``"B"``, ``"AB"``, ``"BA"``) to the canonical form."""
    if isinstance(value, str) and value in ALLOWED_VALUES:
        return value
    raise validation_error("allowed_backends", "must be one of 'A', 'B', 'AB', 'BA'")


def parse_speak_allowed(value: object) -> str:
    """Parse ScaiSpeak input (a non-empty list of ``"A"``/``"B"`` without duplicates)."""
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, str) and v in BACKENDS for v in value)
        and len(set(value)) == len(value)
    ):
        return "".join(value)
    raise validation_error(
        "allowed_backends", 'must be ["A"], ["B"] or ["A","B"] in any order, without duplicates'
    )


def parse_default_backend(value: object) -> str:
    """Parse ``default_backend`` input (``"A"`` or ``"B"``, both modules)."""
    if isinstance(value, str) and value in BACKENDS:
        return value
    raise validation_error("default_backend", "must be 'A' or 'B'")


def parse_preference(value: object) -> str:
    """Parse ``backend_preference`` (absent means ``any``)."""
    if value is None:
        return "any"
    if isinstance(value, str) and value in PREFERENCES:
        return value
    raise validation_error(
        "backend_preference", "must be one of 'any', 'prefer_self_hosted', 'prefer_relay'"
    )


def provisioning_defaults(
    default_allowed: str, default_backend: str, *, relay_configured: bool
) -> tuple[str, str]:
    """The ``(allowed_backends, default_backend)`` a new tenant gets (platform §5.1).

    Settings win when set. Otherwise ``AB``/``B`` with a relay and ``A``/``A`` without one;
    when only one setting is given the other follows the same tier rule where it can.
    Raises ``ValueError`` for a combination the table's CHECK would refuse.
    """
    if default_allowed and default_allowed not in ALLOWED_VALUES:
        raise ValueError(f"default allowed backends {default_allowed!r} is not A, B, AB or BA")
    if default_backend and default_backend not in BACKENDS:
        raise ValueError(f"default backend {default_backend!r} is not A or B")
    tier_allowed, tier_default = ("AB", "B") if relay_configured else ("A", "A")
    allowed = default_allowed or tier_allowed
    if default_backend:
        default = default_backend
    elif tier_default in allowed:
        default = tier_default
    else:
        default = allowed[0]
    if default not in allowed:
        raise ValueError(f"default backend {default!r} is not in allowed backends {allowed!r}")
    return allowed, default


# ----- the store ----------------------------------------------------------------------

_INSERT = (
    "INSERT INTO tenant_policy (tenant_id, allowed_backends, default_backend)"
    " VALUES (%s, %s, %s) ON CONFLICT (tenant_id) DO NOTHING"
    " RETURNING tenant_id, allowed_backends, default_backend, created_at, updated_at, updated_by"
)
_SELECT = (
    "SELECT tenant_id, allowed_backends, default_backend, created_at, updated_at, updated_by"
    " FROM tenant_policy WHERE tenant_id = %s"
)
_UPDATE = (
    "UPDATE tenant_policy SET allowed_backends = %s, default_backend = %s,"
    " updated_at = now(), updated_by = %s WHERE tenant_id = %s"
    " RETURNING tenant_id, allowed_backends, default_backend, created_at, updated_at, updated_by"
)

OnWrite = Callable[[AsyncConnection[Any], Policy, Policy], Awaitable[None]]


def _row(row: Sequence[Any]) -> Policy:
    return Policy(
        tenant_id=row[0],
        allowed_backends=row[1],
        default_backend=row[2],
        created_at=row[3],
        updated_at=row[4],
        updated_by=row[5],
    )


class PolicyStore:
    """``tenant_policy`` in the service's schema, with lazy provisioning and a 5 s cache."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        default_allowed: str = "",
        default_backend: str = "",
        relay_configured: bool,
        cache_ttl_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._defaults = provisioning_defaults(
            default_allowed, default_backend, relay_configured=relay_configured
        )
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[float, Policy]] = {}

    @property
    def defaults(self) -> tuple[str, str]:
        """``(allowed_backends, default_backend)`` for newly provisioned tenants."""
        return self._defaults

    def invalidate(self, tenant_id: str) -> None:
        """Drop the local cache entry of ``tenant_id``."""
        self._cache.pop(tenant_id, None)

    async def get_or_provision(self, tenant_id: str) -> Policy:
        """The tenant's policy, inserting the tier defaults first when it has none."""
        hit = self._cache.get(tenant_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        async with self._pool.connection() as conn:
            policy = await self._provision(conn, tenant_id)
        self._cache[tenant_id] = (time.monotonic() + self._ttl, policy)
        return policy

    async def _provision(self, conn: AsyncConnection[Any], tenant_id: str) -> Policy:
        allowed, default = self._defaults
        cur = await conn.execute(_INSERT, (tenant_id, allowed, default))
        row = await cur.fetchone()
        if row is None:
            # Someone else's row: read it with a fresh statement snapshot.
            cur = await conn.execute(_SELECT, (tenant_id,))
            row = await cur.fetchone()
        if row is None:  # pragma: no cover - deleted between the two statements
            raise RuntimeError(f"tenant_policy row of {tenant_id!r} vanished")
        return _row(row)

    async def update(
        self,
        tenant_id: str,
        *,
        allowed: str | None = None,
        default: str | None = None,
        actor: Principal,
        on_write: OnWrite | None = None,
    ) -> tuple[Policy, Policy]:
        """Merge the given fields into the stored row; return ``(before, after)``.

        ``allowed`` is canonical (use :func:`parse_echo_allowed`/:func:`parse_speak_allowed`).
        At least one field must be given, and the merged ``default_backend`` must be one of
        the merged ``allowed_backends`` (422 ``VALIDATION_ERROR`` on ``default_backend``).
        ``on_write(conn, before, after)`` runs inside the same transaction, for the
        ``<module>.policy.update`` audit row; if it raises, nothing is written.
        """
        if allowed is None and default is None:
            raise ScaiError(
                "VALIDATION_ERROR",
                "give allowed_backends, default_backend or both",
                details=[
                    {"field": "allowed_backends", "message": "at least one field is required"},
                    {"field": "default_backend", "message": "at least one field is required"},
                ],
            )
        if allowed is not None:
            allowed = parse_echo_allowed(allowed)
        if default is not None:
            default = parse_default_backend(default)
        self.invalidate(tenant_id)
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await self._provision(conn, tenant_id)
                cur = await conn.execute(_SELECT + " FOR UPDATE", (tenant_id,))
                locked = await cur.fetchone()
                assert locked is not None  # provisioned just above, inside this transaction
                before = _row(locked)
                new_allowed = allowed if allowed is not None else before.allowed_backends
                new_default = default if default is not None else before.default_backend
                if new_default not in new_allowed:
                    raise ScaiError(
                        "VALIDATION_ERROR",
                        "default_backend must be one of allowed_backends",
                        details=[
                            {
                                "field": "default_backend",
                                "message": f"{new_default!r} is not in allowed_backends"
                                f" {new_allowed!r}",
                            }
                        ],
                    )
                cur = await conn.execute(
                    _UPDATE, (new_allowed, new_default, actor.user_id, tenant_id)
                )
                written = await cur.fetchone()
                assert written is not None
                after = _row(written)
                if on_write is not None:
                    await on_write(conn, before, after)
        finally:
            self.invalidate(tenant_id)
        return before, after


# ----- the resolver -------------------------------------------------------------------

#: Returns ``None`` when the relay can serve the request, else a ``relay_*`` reason.
RelayCheck = Callable[[], str | Awaitable[str | None] | None]
#: Renders ``allowed_backends`` in a module's API form; ``"echo"``/``"speak"`` name the two.
ApiForm = Callable[[Policy], object]
_FORMS: dict[str, ApiForm] = {"echo": echo_form, "speak": speak_form}


@dataclass(frozen=True)
class _Context(Generic[N]):
    policy: Policy
    preference: str
    module: str
    engine_kind: str
    capabilities: tuple[str, ...]
    node_resolver: Callable[[str, tuple[str, ...]], Awaitable[N | None]]
    relay_usable: RelayCheck
    api_form: ApiForm

    async def probe(self, backend: str) -> tuple[N | None, str | None]:
        """``(node, None)`` when ``backend`` is usable, else ``(None, reason)``."""
        if backend not in self.policy.allowed:
            return None, "not_allowed"
        if backend == "A":
            node = await self.node_resolver(self.engine_kind, self.capabilities)
            return (node, None) if node is not None else (None, "no_node")
        result = self.relay_usable()
        reason = await result if inspect.isawaitable(result) else result
        return None, reason

    def unavailable(self, candidates: Sequence[dict[str, Any]]) -> ScaiError:
        """``<MODULE>_BACKEND_UNAVAILABLE`` (502) with ``error.resolution``."""
        return ScaiError(
            f"{self.module.upper()}_BACKEND_UNAVAILABLE",
            "no usable backend for this tenant policy",
            http_status=502,
            resolution={
                "allowed_backends": self.api_form(self.policy),
                "default_backend": self.policy.default_backend,
                "preference": self.preference,
                "candidates": [dict(c) for c in candidates],
            },
        )


def _unusable(backend: str, reason: str) -> dict[str, Any]:
    return {"backend": backend, "usable": False, "reason": reason}


@dataclass(frozen=True)
class Choice(Generic[N]):
    """The resolved backend.

    ``node`` is set for ``A``. ``candidates`` holds the backends rejected before this one
    (in order); ``fallbacks`` the allowed letters after it in the order, for the one
    failover of platform §5.4 (:meth:`failover`).
    """

    backend: Backend
    node: N | None
    candidates: tuple[dict[str, Any], ...] = ()
    fallbacks: tuple[str, ...] = ()
    _ctx: _Context[N] | None = field(default=None, repr=False, compare=False)

    @property
    def backend_used(self) -> str:
        """The letter reported to the client as ``backend_used``."""
        return self.backend

    def exhausted(self) -> ScaiError:
        """``BACKEND_UNAVAILABLE`` after this choice failed and no failover is left."""
        if self._ctx is None:
            raise RuntimeError("choice was not made by resolve_backend")
        failed = {"backend": self.backend, "usable": True, "reason": "failed"}
        return self._ctx.unavailable([*self.candidates, failed])

    async def failover(self) -> Choice[N]:
        """The next usable candidate after this one failed before any output.

        Checks :attr:`fallbacks` in order; the returned choice has no fallbacks of its own,
        so failover happens once. Raises ``<MODULE>_BACKEND_UNAVAILABLE`` listing this
        backend as ``failed`` when nothing else is usable.
        """
        if self._ctx is None:
            raise RuntimeError("choice was not made by resolve_backend")
        tried: list[dict[str, Any]] = [
            *self.candidates,
            {"backend": self.backend, "usable": True, "reason": "failed"},
        ]
        for backend in self.fallbacks:
            node, reason = await self._ctx.probe(backend)
            if reason is None:
                chosen: Backend = "A" if backend == "A" else "B"
                return Choice(chosen, node, tuple(tried), (), self._ctx)
            tried.append(_unusable(backend, reason))
        raise self._ctx.unavailable(tried)

    async def failover_after(self, error: ScaiError) -> Choice[N]:
        """:meth:`failover` after ``error``; when nothing is left, raise what the client sees.

        That is ``<MODULE>_BACKEND_UNAVAILABLE`` with the resolution when the backend was
        unreachable, else ``error`` itself (a relay 5xx stays ``BACKEND_ERROR``, capacity stays
        ``BACKEND_RATE_LIMITED``).
        """
        try:
            return await self.failover()
        except ScaiError as exhausted:
            if error.code.endswith("_BACKEND_UNAVAILABLE"):
                raise exhausted from None
            raise error from None


async def resolve_backend(
    policy: Policy,
    preference: str | None,
    *,
    module: str,
    engine_kind: str,
    capabilities: Sequence[str] = (),
    node_resolver: Callable[[str, tuple[str, ...]], Awaitable[N | None]],
    relay_usable: RelayCheck,
    api_form: ApiForm | Literal["echo", "speak"],
) -> Choice[N]:
    """Pick the backend for one request (platform §5.4).

    ``node_resolver(engine_kind, capabilities)`` returns a node or ``None``;
    ``relay_usable()`` returns ``None`` or a ``relay_*`` reason (it may be async);
    ``api_form(policy)`` renders ``allowed_backends`` for ``error.resolution``
    (:func:`echo_form`/``"echo"`` or :func:`speak_form`/``"speak"``). A preference outside
    the policy is ignored.
    Raises ``VALIDATION_ERROR`` for an unknown preference and
    ``<MODULE>_BACKEND_UNAVAILABLE`` (502) when no candidate is usable.
    """
    preference = parse_preference(preference)
    ctx: _Context[N] = _Context(
        policy=policy,
        preference=preference,
        module=module,
        engine_kind=engine_kind,
        capabilities=tuple(capabilities),
        node_resolver=node_resolver,
        relay_usable=relay_usable,
        api_form=_FORMS[api_form] if isinstance(api_form, str) else api_form,
    )
    first = _PREFERRED.get(preference, policy.default_backend)
    order = [first] + [x for x in policy.allowed if x != first]
    candidates: list[dict[str, Any]] = []
    for index, backend in enumerate(order):
        node, reason = await ctx.probe(backend)
        if reason is None:
            chosen: Backend = "A" if backend == "A" else "B"
            rest = tuple(x for x in order[index + 1 :] if x in policy.allowed)
            return Choice(chosen, node, tuple(candidates), rest, ctx)
        candidates.append(_unusable(backend, reason))
    raise ctx.unavailable(candidates)
