"""Tenant policy store (real Postgres) and the backend resolver (platform §5)."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from scaicommon.errors import ScaiError
from scaicommon.ids import new_id
from scaicommon.policy import (
    Choice,
    Policy,
    PolicyStore,
    parse_default_backend,
    parse_echo_allowed,
    parse_preference,
    parse_speak_allowed,
    provisioning_defaults,
    resolve_backend,
    speak_form,
)
from scaicommon.principal import ModulePermissions, Principal
from scaicommon.store import library_migrations, migrate, open_pool
from scaicommon.testing.services import fresh_database
from scaicommon.timefmt import utcnow

SCHEMA = "scaiecho"
ENGINE = "audio.transcribe"
ACTOR = Principal(
    user_id="usr_admin1",
    tenant_id="tnt_1",
    module=ModulePermissions("scaiecho", frozenset({"scaiecho:admin"}), frozenset()),
    auth_kind="jwt",
    request_id="req_1",
    token="tok",
)


# ----- resolver -----------------------------------------------------------------------


@dataclass(frozen=True)
class FakeNode:
    node_id: str


class Probes:
    """Injected availability with call recording."""

    def __init__(self, node: bool, relay_reason: str | None) -> None:
        self.node = node
        self.relay_reason = relay_reason
        self.node_calls: list[tuple[str, tuple[str, ...]]] = []
        self.relay_calls = 0

    async def node_resolver(self, engine_kind: str, caps: tuple[str, ...]) -> FakeNode | None:
        self.node_calls.append((engine_kind, caps))
        return FakeNode("node-1") if self.node else None

    def relay_usable(self) -> str | None:
        self.relay_calls += 1
        return self.relay_reason


def policy(allowed: str, default: str) -> Policy:
    now = utcnow()
    return Policy("tnt_1", allowed, default, now, now, None)


def expected_outcome(
    allowed: str, default: str, preference: str, node: bool, relay_reason: str | None
) -> tuple[str | None, list[dict[str, Any]], list[str]]:
    """The contract's rules, written from the module spec's wording (ScaiEcho §3.3).

    Candidates: the preferred letter, then the default, then the other allowed letter,
    without duplicates. Letters outside the policy are reported ``not_allowed``; the first
    usable one wins. Returns (winner or None, rejected candidates, remaining allowed letters).
    """
    preferred = {"prefer_self_hosted": "A", "prefer_relay": "B"}.get(preference)
    others = [letter for letter in allowed if letter != default]
    sequence: list[str] = []
    for letter in [preferred, default, *others]:
        if letter is not None and letter not in sequence:
            sequence.append(letter)
    rejected: list[dict[str, Any]] = []
    for position, letter in enumerate(sequence):
        if letter not in allowed:
            rejected.append({"backend": letter, "usable": False, "reason": "not_allowed"})
        elif letter == "A" and not node:
            rejected.append({"backend": "A", "usable": False, "reason": "no_node"})
        elif letter == "B" and relay_reason is not None:
            rejected.append({"backend": "B", "usable": False, "reason": relay_reason})
        else:
            rest = [x for x in sequence[position + 1 :] if x in allowed]
            return letter, rejected, rest
    return None, rejected, []


POLICIES = [("A", "A"), ("B", "B"), ("AB", "A"), ("AB", "B"), ("BA", "A"), ("BA", "B")]
PREFERENCES = ["any", "prefer_self_hosted", "prefer_relay"]
CASES = list(itertools.product(POLICIES, PREFERENCES, [True, False], [None, "relay_unhealthy"]))


@pytest.mark.parametrize(
    ("pol", "preference", "node", "relay_reason"),
    CASES,
    ids=[f"{a}/{d}-{p}-node{int(n)}-relay{int(r is None)}" for (a, d), p, n, r in CASES],
)
async def test_resolver_matrix(
    pol: tuple[str, str], preference: str, node: bool, relay_reason: str | None
) -> None:
    allowed, default = pol
    probes = Probes(node, relay_reason)
    winner, rejected, rest = expected_outcome(allowed, default, preference, node, relay_reason)
    call = resolve_backend(
        policy(allowed, default),
        preference,
        module="scaiecho",
        engine_kind=ENGINE,
        capabilities=("streaming",),
        node_resolver=probes.node_resolver,
        relay_usable=probes.relay_usable,
        api_form="echo",
    )
    if winner is None:
        with pytest.raises(ScaiError) as info:
            await call
        err = info.value
        assert (err.code, err.http_status) == ("SCAIECHO_BACKEND_UNAVAILABLE", 502)
        assert err.extras["resolution"] == {
            "allowed_backends": allowed,
            "default_backend": default,
            "preference": preference,
            "candidates": rejected,
        }
        assert err.to_dict()["resolution"]["candidates"] == rejected
    else:
        choice = await call
        assert choice.backend == winner == choice.backend_used
        assert choice.node == (FakeNode("node-1") if winner == "A" else None)
        assert list(choice.candidates) == rejected
        assert list(choice.fallbacks) == rest
    # probes run lazily: only for allowed letters reached before the winner
    reached = [c["backend"] for c in rejected if c["reason"] != "not_allowed"]
    if winner is not None:
        reached.append(winner)
    assert probes.node_calls == ([(ENGINE, ("streaming",))] if "A" in reached else [])
    assert probes.relay_calls == (1 if "B" in reached else 0)


@pytest.mark.parametrize(
    ("allowed", "default", "preference", "node", "relay_reason", "result"),
    [  # the table of ScaiEcho §3.3
        ("AB", "B", "any", True, None, "B"),
        ("AB", "B", "prefer_self_hosted", False, None, "B"),
        ("BA", "A", "any", True, None, "A"),
        ("A", "A", "prefer_relay", False, None, None),
        ("B", "B", "any", True, "relay_unconfigured", None),
    ],
)
async def test_echo_spec_examples(
    allowed: str,
    default: str,
    preference: str,
    node: bool,
    relay_reason: str | None,
    result: str | None,
) -> None:
    probes = Probes(node, relay_reason)
    call = resolve_backend(
        policy(allowed, default),
        preference,
        module="scaiecho",
        engine_kind=ENGINE,
        node_resolver=probes.node_resolver,
        relay_usable=probes.relay_usable,
        api_form="echo",
    )
    if result is None:
        with pytest.raises(ScaiError) as info:
            await call
        assert info.value.code == "SCAIECHO_BACKEND_UNAVAILABLE"
    else:
        assert (await call).backend == result


async def test_speak_resolution_uses_the_list_form() -> None:
    probes = Probes(False, None)
    with pytest.raises(ScaiError) as info:
        await resolve_backend(
            policy("A", "A"),
            "prefer_relay",
            module="scaispeak",
            engine_kind="audio.synthesize",
            capabilities=("cloning",),
            node_resolver=probes.node_resolver,
            relay_usable=probes.relay_usable,
            api_form=speak_form,
        )
    assert info.value.code == "SCAISPEAK_BACKEND_UNAVAILABLE"
    assert info.value.extras["resolution"] == {
        "allowed_backends": ["A"],
        "default_backend": "A",
        "preference": "prefer_relay",
        "candidates": [
            {"backend": "B", "usable": False, "reason": "not_allowed"},
            {"backend": "A", "usable": False, "reason": "no_node"},
        ],
    }
    assert probes.node_calls == [("audio.synthesize", ("cloning",))]


async def test_preference_validation_and_async_relay_check() -> None:
    probes = Probes(True, None)

    async def relay_no_cloning() -> str | None:
        return "relay_no_cloning"

    with pytest.raises(ScaiError) as info:
        await resolve_backend(
            policy("AB", "A"),
            "prefer_gpu",
            module="scaiecho",
            engine_kind=ENGINE,
            node_resolver=probes.node_resolver,
            relay_usable=probes.relay_usable,
            api_form="echo",
        )
    assert info.value.code == "VALIDATION_ERROR"
    assert info.value.details is not None
    assert [d["field"] for d in info.value.details] == ["backend_preference"]
    assert probes.node_calls == []

    choice = await resolve_backend(
        policy("B", "B"),
        None,
        module="scaiecho",
        engine_kind=ENGINE,
        node_resolver=probes.node_resolver,
        relay_usable=probes.relay_usable,
        api_form="echo",
    )
    assert choice.backend == "B"
    with pytest.raises(ScaiError) as info:
        await resolve_backend(
            policy("B", "B"),
            "any",
            module="scaiecho",
            engine_kind=ENGINE,
            node_resolver=probes.node_resolver,
            relay_usable=relay_no_cloning,
            api_form="echo",
        )
    assert info.value.extras["resolution"]["candidates"] == [
        {"backend": "B", "usable": False, "reason": "relay_no_cloning"}
    ]


async def _resolve(probes: Probes, allowed: str, default: str) -> Choice[FakeNode]:
    return await resolve_backend(
        policy(allowed, default),
        "any",
        module="scaiecho",
        engine_kind=ENGINE,
        node_resolver=probes.node_resolver,
        relay_usable=probes.relay_usable,
        api_form="echo",
    )


async def test_failover_moves_once_to_the_next_usable_candidate() -> None:
    probes = Probes(True, None)
    choice = await _resolve(probes, "AB", "A")
    assert (choice.backend, choice.fallbacks) == ("A", ("B",))
    second = await choice.failover()
    assert (second.backend, second.node, second.fallbacks) == ("B", None, ())
    failed_a = {"backend": "A", "usable": True, "reason": "failed"}
    failed_b = {"backend": "B", "usable": True, "reason": "failed"}
    assert list(second.candidates) == [failed_a]
    with pytest.raises(ScaiError) as info:
        await second.failover()
    assert info.value.extras["resolution"]["candidates"] == [failed_a, failed_b]
    assert second.exhausted().extras["resolution"]["candidates"] == [failed_a, failed_b]


async def test_failover_reports_an_unusable_fallback() -> None:
    probes = Probes(True, "relay_unhealthy")
    choice = await _resolve(probes, "BA", "A")
    with pytest.raises(ScaiError) as info:
        await choice.failover()
    assert info.value.code == "SCAIECHO_BACKEND_UNAVAILABLE"
    assert info.value.extras["resolution"]["candidates"] == [
        {"backend": "A", "usable": True, "reason": "failed"},
        {"backend": "B", "usable": False, "reason": "relay_unhealthy"},
    ]
    only_a = await _resolve(probes, "A", "A")
    assert only_a.fallbacks == ()
    assert only_a.exhausted().extras["resolution"]["candidates"] == [
        {"backend": "A", "usable": True, "reason": "failed"}
    ]


# ----- parsers and API forms ---------------------------------------------------------


@pytest.mark.parametrize("value", ["A", "B", "AB", "BA"])
def test_parse_echo_allowed_accepts_the_four_values(value: str) -> None:
    assert parse_echo_allowed(value) == value


@pytest.mark.parametrize("value", ["", "AA", "ab", "C", "ABA", ["A"], None, 1])
def test_parse_echo_allowed_rejects_anything_else(value: object) -> None:
    with pytest.raises(ScaiError) as info:
        parse_echo_allowed(value)
    assert info.value.code == "VALIDATION_ERROR"
    assert info.value.details is not None
    assert info.value.details[0]["field"] == "allowed_backends"


@pytest.mark.parametrize(
    ("value", "stored"), [(["A"], "A"), (["B"], "B"), (["A", "B"], "AB"), (["B", "A"], "BA")]
)
def test_parse_speak_allowed(value: list[str], stored: str) -> None:
    assert parse_speak_allowed(value) == stored


@pytest.mark.parametrize("value", [[], ["A", "A"], ["A", "C"], ["a"], "AB", "A", None, [1]])
def test_parse_speak_allowed_rejects(value: object) -> None:
    with pytest.raises(ScaiError) as info:
        parse_speak_allowed(value)
    assert info.value.code == "VALIDATION_ERROR"
    assert info.value.details is not None
    assert info.value.details[0]["field"] == "allowed_backends"


def test_default_and_preference_parsers() -> None:
    assert parse_default_backend("B") == "B"
    for bad in ("AB", "a", None):
        with pytest.raises(ScaiError) as info:
            parse_default_backend(bad)
        assert info.value.details == [{"field": "default_backend", "message": "must be 'A' or 'B'"}]
    assert parse_preference(None) == "any"
    assert parse_preference("prefer_relay") == "prefer_relay"


def test_api_forms() -> None:
    p = Policy("tnt_1", "BA", "A", utcnow(), utcnow(), "usr_x")
    echo = p.to_echo_api()
    speak = p.to_speak_api()
    assert echo["allowed_backends"] == "BA" and set(echo) == {
        "tenant_id",
        "allowed_backends",
        "default_backend",
        "updated_at",
    }
    assert speak["allowed_backends"] == ["B", "A"] and speak["updated_by"] == "usr_x"
    assert echo["updated_at"].endswith("Z")


@pytest.mark.parametrize(
    ("allowed", "default", "relay", "expected"),
    [
        ("", "", True, ("AB", "B")),
        ("", "", False, ("A", "A")),
        ("BA", "A", False, ("BA", "A")),
        ("B", "B", False, ("B", "B")),
        ("A", "", True, ("A", "A")),
        ("AB", "", False, ("AB", "A")),
        ("", "A", True, ("AB", "A")),
    ],
)
def test_provisioning_defaults(
    allowed: str, default: str, relay: bool, expected: tuple[str, str]
) -> None:
    assert provisioning_defaults(allowed, default, relay_configured=relay) == expected


@pytest.mark.parametrize(("allowed", "default"), [("A", "B"), ("", "B"), ("C", ""), ("", "X")])
def test_provisioning_defaults_refuse_inconsistent_settings(allowed: str, default: str) -> None:
    with pytest.raises(ValueError):
        provisioning_defaults(allowed, default, relay_configured=False)


# ----- store (real Postgres) ---------------------------------------------------------


@pytest.fixture(scope="module")
async def pool(pg_admin_dsn: str) -> AsyncIterator[AsyncConnectionPool]:
    """One migrated database for this module; tests stay apart through their tenant ids."""
    with fresh_database(pg_admin_dsn) as dsn:
        await migrate(dsn, SCHEMA, [("scaicommon", library_migrations())])
        pool = await open_pool(dsn, SCHEMA, max_size=12)
        try:
            yield pool
        finally:
            await pool.close()


@pytest.fixture
def tenant() -> str:
    return "tnt_" + secrets.token_hex(6)


async def _row_count(pool: AsyncConnectionPool, tenant_id: str) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM tenant_policy WHERE tenant_id = %s", (tenant_id,)
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    ("settings", "relay", "expected"),
    [
        (("", ""), True, ("AB", "B")),
        (("", ""), False, ("A", "A")),
        (("BA", "A"), True, ("BA", "A")),
        (("B", "B"), False, ("B", "B")),
    ],
)
async def test_provisioning_uses_settings_else_tier_defaults(
    pool: AsyncConnectionPool,
    tenant: str,
    settings: tuple[str, str],
    relay: bool,
    expected: tuple[str, str],
) -> None:
    store = PolicyStore(
        pool, default_allowed=settings[0], default_backend=settings[1], relay_configured=relay
    )
    got = await store.get_or_provision(tenant)
    assert (got.allowed_backends, got.default_backend) == expected
    assert got.updated_by is None and got.created_at == got.updated_at
    assert await _row_count(pool, tenant) == 1


async def test_existing_row_never_follows_config_changes(
    pool: AsyncConnectionPool, tenant: str
) -> None:
    before = await PolicyStore(pool, relay_configured=False).get_or_provision(tenant)
    later = PolicyStore(pool, default_allowed="B", default_backend="B", relay_configured=True)
    after = await later.get_or_provision(tenant)
    assert after == before
    assert (after.allowed_backends, after.default_backend) == ("A", "A")


async def test_concurrent_provisioning_inserts_once(pool: AsyncConnectionPool, tenant: str) -> None:
    stores = [PolicyStore(pool, relay_configured=i % 2 == 0) for i in range(10)]
    results = await asyncio.gather(*(s.get_or_provision(tenant) for s in stores))
    assert len(set(results)) == 1
    assert await _row_count(pool, tenant) == 1


async def test_cache_serves_rows_for_its_ttl(pool: AsyncConnectionPool, tenant: str) -> None:
    cached = PolicyStore(pool, relay_configured=True, cache_ttl_s=60)
    uncached = PolicyStore(pool, relay_configured=True, cache_ttl_s=0)
    await cached.get_or_provision(tenant)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE tenant_policy SET allowed_backends = 'A', default_backend = 'A'"
            " WHERE tenant_id = %s",
            (tenant,),
        )
    assert (await cached.get_or_provision(tenant)).allowed_backends == "AB"
    assert (await uncached.get_or_provision(tenant)).allowed_backends == "A"
    cached.invalidate(tenant)
    assert (await cached.get_or_provision(tenant)).allowed_backends == "A"


async def test_write_clears_the_local_cache_and_others_follow_after_ttl(
    pool: AsyncConnectionPool, tenant: str
) -> None:
    writer = PolicyStore(pool, relay_configured=True, cache_ttl_s=60)
    other = PolicyStore(pool, relay_configured=True, cache_ttl_s=0.2)
    assert (await writer.get_or_provision(tenant)).default_backend == "B"
    assert (await other.get_or_provision(tenant)).default_backend == "B"
    await writer.update(tenant, default="A", actor=ACTOR)
    assert (await writer.get_or_provision(tenant)).default_backend == "A"
    assert (await other.get_or_provision(tenant)).default_backend == "B"  # still cached
    deadline = asyncio.get_running_loop().time() + 2
    while (await other.get_or_provision(tenant)).default_backend != "A":
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)


async def test_update_merges_and_stamps(pool: AsyncConnectionPool, tenant: str) -> None:
    store = PolicyStore(pool, relay_configured=True)
    provisioned = await store.get_or_provision(tenant)  # AB / B
    before, after = await store.update(tenant, default="A", actor=ACTOR)
    assert before == provisioned
    assert (after.allowed_backends, after.default_backend) == ("AB", "A")
    assert after.updated_by == "usr_admin1"
    assert after.updated_at > before.updated_at
    assert after.created_at == before.created_at

    _, after = await store.update(tenant, allowed="BA", actor=ACTOR)
    assert (after.allowed_backends, after.default_backend) == ("BA", "A")  # order kept
    _, after = await store.update(tenant, allowed="B", default="B", actor=ACTOR)
    assert (after.allowed_backends, after.default_backend) == ("B", "B")
    assert await store.get_or_provision(tenant) == after


async def test_update_provisions_a_missing_row(pool: AsyncConnectionPool, tenant: str) -> None:
    store = PolicyStore(pool, relay_configured=False)
    before, after = await store.update(tenant, allowed="AB", actor=ACTOR)
    assert (before.allowed_backends, before.default_backend) == ("A", "A")
    assert (after.allowed_backends, after.default_backend) == ("AB", "A")


async def test_update_refuses_a_default_outside_allowed(
    pool: AsyncConnectionPool, tenant: str
) -> None:
    store = PolicyStore(pool, relay_configured=True)
    original = await store.get_or_provision(tenant)  # AB / B
    with pytest.raises(ScaiError) as info:
        await store.update(tenant, allowed="A", actor=ACTOR)
    err = info.value
    assert (err.code, err.http_status) == ("VALIDATION_ERROR", 422)
    assert err.message == "default_backend must be one of allowed_backends"
    assert err.details == [
        {"field": "default_backend", "message": "'B' is not in allowed_backends 'A'"}
    ]
    with pytest.raises(ScaiError) as info:
        await store.update(tenant, default="A", allowed="B", actor=ACTOR)
    assert info.value.details is not None
    assert info.value.details[0]["field"] == "default_backend"
    assert await store.get_or_provision(tenant) == original


async def test_update_needs_a_valid_field(pool: AsyncConnectionPool, tenant: str) -> None:
    store = PolicyStore(pool, relay_configured=True)
    with pytest.raises(ScaiError) as info:
        await store.update(tenant, actor=ACTOR)
    assert info.value.code == "VALIDATION_ERROR"
    with pytest.raises(ScaiError) as info:
        await store.update(tenant, allowed="AA", actor=ACTOR)
    assert info.value.details is not None
    assert info.value.details[0]["field"] == "allowed_backends"
    with pytest.raises(ScaiError) as info:
        await store.update(tenant, default="C", actor=ACTOR)
    assert info.value.details is not None
    assert info.value.details[0]["field"] == "default_backend"


async def _audit(conn: AsyncConnection[Any], before: Policy, after: Policy) -> None:
    assert conn.info.transaction_status == TransactionStatus.INTRANS
    await conn.execute(
        "INSERT INTO audit_log (id, action, status, actor_id, actor_type, tenant_id,"
        " resource_type, request_id, details) VALUES (%s, 'scaiecho.policy.update',"
        " 'SUCCESS', %s, 'user', %s, 'policy', 'req_1', %s)",
        (
            new_id("audit"),
            ACTOR.user_id,
            after.tenant_id,
            psycopg.types.json.Jsonb({"before": before.to_audit(), "after": after.to_audit()}),
        ),
    )


async def _audit_rows(pool: AsyncConnectionPool, tenant: str) -> list[Any]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT action, details FROM audit_log WHERE tenant_id = %s", (tenant,)
        )
        return await cur.fetchall()


async def test_on_write_runs_inside_the_update_transaction(
    pool: AsyncConnectionPool, tenant: str
) -> None:
    store = PolicyStore(pool, relay_configured=True)
    await store.update(tenant, default="A", actor=ACTOR, on_write=_audit)
    rows = await _audit_rows(pool, tenant)
    assert rows == [
        (
            "scaiecho.policy.update",
            {
                "before": {"allowed_backends": "AB", "default_backend": "B"},
                "after": {"allowed_backends": "AB", "default_backend": "A"},
            },
        )
    ]


async def test_failing_on_write_rolls_the_update_back(
    pool: AsyncConnectionPool, tenant: str
) -> None:
    store = PolicyStore(pool, relay_configured=True)
    original = await store.get_or_provision(tenant)

    async def broken(conn: AsyncConnection[Any], before: Policy, after: Policy) -> None:
        await _audit(conn, before, after)
        raise RuntimeError("audit sink down")

    with pytest.raises(RuntimeError):
        await store.update(tenant, default="A", actor=ACTOR, on_write=broken)
    assert await store.get_or_provision(tenant) == original
    assert await _audit_rows(pool, tenant) == []
