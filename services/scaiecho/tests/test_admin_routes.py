"""Tenant policy, usage and budget, dashboard and node listing over real HTTP (scaiecho.md §3, §9,
§10), against real Postgres and Redis (and a real dev node for the node counts)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from scaicommon.ids import new_id
from scaicommon.periods import period_end
from scaicommon.testing import S3Endpoint, free_port
from scaicommon.testing.envelopes import error, fields, ok
from scaicommon.usage import UsageSubject
from scaicommon.workerapp import workers_key
from scaidevstack.node.testing import NodeProcess
from scaiecho.deps import deps_of

from .conftest import EchoEnv, running_echo

ADMIN = "scaiecho:admin"
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ADMIN_PATHS_GET = ("/tenant-policy", "/usage", "/admin/budget", "/admin/dashboard")
NODE_PATHS = ("/v1/admin/nodes", "/v1/infra/nodes")


# ----- tenant policy ---------------------------------------------------------------------


async def test_policy_get_provisions_tier_defaults_without_relay(echo_bare: EchoEnv) -> None:
    key = await echo_bare.admin_key()
    assert await echo_bare.rows("SELECT * FROM tenant_policy") == []
    async with echo_bare.client(key) as client:
        first = ok(await client.get("/tenant-policy"))
        again = ok(await client.get("/tenant-policy"))
    assert first["tenant_id"] == "tnt_a"
    assert (first["allowed_backends"], first["default_backend"]) == ("A", "A")
    assert TS_RE.match(first["updated_at"])
    assert again == first
    [row] = await echo_bare.rows("SELECT * FROM tenant_policy")
    assert (row["tenant_id"], row["allowed_backends"], row["default_backend"]) == (
        "tnt_a",
        "A",
        "A",
    )


async def test_policy_provisioning_follows_settings_then_relay_tier(
    pg_dsn: str, redis_url: str, s3_endpoint: S3Endpoint
) -> None:
    relay = {"relay_base_url": "http://127.0.0.1:9", "relay_api_key": "sk-test"}
    async with running_echo(
        pg_dsn,
        redis_url,
        s3_endpoint,
        default_allowed_backends="BA",
        default_backend="A",
        **relay,
    ) as env:
        async with env.client(await env.admin_key("tnt_a")) as client:
            policy = ok(await client.get("/tenant-policy"))
        assert (policy["allowed_backends"], policy["default_backend"]) == ("BA", "A")
    # Same database, new configuration: a relay and no policy settings.
    async with running_echo(pg_dsn, redis_url, s3_endpoint, **relay) as env:
        async with env.client(await env.admin_key("tnt_b")) as client:
            fresh = ok(await client.get("/tenant-policy"))
        async with env.client(await env.admin_key("tnt_a")) as client:
            existing = ok(await client.get("/tenant-policy"))
    assert (fresh["allowed_backends"], fresh["default_backend"]) == ("AB", "B")
    # An existing row never follows later configuration changes.
    assert (existing["allowed_backends"], existing["default_backend"]) == ("BA", "A")


async def test_policy_patch_merges_and_audits_in_the_same_write(echo_bare: EchoEnv) -> None:
    key = await echo_bare.admin_key()
    async with echo_bare.client(key) as client:
        initial = ok(await client.get("/tenant-policy"))
        first = await client.patch("/tenant-policy", json={"allowed_backends": "BA"})
        merged = ok(first)
        second = ok(await client.patch("/tenant-policy", json={"default_backend": "B"}))
        third = ok(
            await client.patch(
                "/tenant-policy", json={"allowed_backends": "A", "default_backend": "A"}
            )
        )
        final = ok(await client.get("/tenant-policy"))
    assert (merged["allowed_backends"], merged["default_backend"]) == ("BA", "A")
    assert merged["updated_at"] >= initial["updated_at"]
    assert (second["allowed_backends"], second["default_backend"]) == ("BA", "B")
    assert (third["allowed_backends"], third["default_backend"]) == ("A", "A")
    assert final == third
    [stored] = await echo_bare.rows("SELECT * FROM tenant_policy WHERE tenant_id = 'tnt_a'")
    assert stored["updated_by"] == "usr_a"

    audits = await echo_bare.audit_rows("scaiecho.policy.update")
    assert [a["status"] for a in audits] == ["SUCCESS"] * 3
    row = audits[0]
    assert row["tenant_id"] == "tnt_a" and row["actor_id"] == "usr_a"
    assert (row["resource_type"], row["resource_id"]) == ("tenant_policy", "tnt_a")
    assert row["request_id"] == first.headers["x-request-id"]
    assert row["details"] == {
        "before": {"allowed_backends": "A", "default_backend": "A"},
        "after": {"allowed_backends": "BA", "default_backend": "A"},
    }
    assert audits[1]["details"]["after"] == {"allowed_backends": "BA", "default_backend": "B"}


async def test_policy_patch_with_a_default_not_allowed_is_refused(echo_bare: EchoEnv) -> None:
    key = await echo_bare.admin_key()
    async with echo_bare.client(key) as client:
        ok(
            await client.patch(
                "/tenant-policy", json={"allowed_backends": "AB", "default_backend": "B"}
            )
        )
        refused = await client.patch("/tenant-policy", json={"allowed_backends": "A"})
        after = ok(await client.get("/tenant-policy"))
    err = error(refused, 422, "VALIDATION_ERROR")
    assert err["message"] == "default_backend must be one of allowed_backends"
    assert err["details"] == [
        {"field": "default_backend", "message": "'B' is not in allowed_backends 'A'"}
    ]
    assert (after["allowed_backends"], after["default_backend"]) == ("AB", "B")
    audits = await echo_bare.audit_rows("scaiecho.policy.update")
    assert [a["status"] for a in audits] == ["SUCCESS", "FAILURE"]
    failure = audits[1]
    assert (failure["error_code"], failure["http_status"]) == ("VALIDATION_ERROR", 422)
    assert failure["request_id"] == refused.headers["x-request-id"]


async def test_policy_patch_rejects_bad_bodies(echo_bare: EchoEnv) -> None:
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"allowed_backends": "C"}, ["allowed_backends"]),
        ({"allowed_backends": "ab"}, ["allowed_backends"]),
        ({"allowed_backends": "AA"}, ["allowed_backends"]),
        ({"allowed_backends": ["A", "B"]}, ["allowed_backends"]),
        ({"allowed_backends": None}, ["allowed_backends"]),
        ({"default_backend": "AB"}, ["default_backend"]),
        ({"default_backend": 1}, ["default_backend"]),
        ({"allowed_backend": "A"}, ["allowed_backend"]),
        ({"allowed_backends": "A", "colour": "red"}, ["colour"]),
        ({}, ["allowed_backends", "default_backend"]),
    ]
    key = await echo_bare.admin_key()
    async with echo_bare.client(key) as client:
        for body, expected in cases:
            err = error(await client.patch("/tenant-policy", json=body), 422, "VALIDATION_ERROR")
            assert fields(err) == expected, (body, err)
        for raw in (b"", b"not json", b"[]"):
            response = await client.patch(
                "/tenant-policy", content=raw, headers={"Content-Type": "application/json"}
            )
            assert fields(error(response, 422, "VALIDATION_ERROR")) == ["body"], raw
        policy = ok(await client.get("/tenant-policy"))
    assert (policy["allowed_backends"], policy["default_backend"]) == ("A", "A")
    audits = await echo_bare.audit_rows("scaiecho.policy.update")
    assert len(audits) == len(cases) + 3
    assert {a["status"] for a in audits} == {"FAILURE"}


async def test_admin_routes_need_the_admin_permission(echo_bare: EchoEnv) -> None:
    tenant_user = await echo_bare.key(roles=["tenant_user"], permissions=[])
    transcriber = await echo_bare.key(permissions=["scaiecho:transcribe"])
    for key in (tenant_user, transcriber):
        async with echo_bare.client(key) as client:
            responses = [await client.get(path) for path in ADMIN_PATHS_GET]
            responses.append(await client.patch("/tenant-policy", json={"default_backend": "A"}))
            responses.append(
                await client.put(
                    "/admin/budget", json={"period": "month", "audio_seconds_limit": 1}
                )
            )
        async with echo_bare.root_client(key) as root:
            responses += [await root.get(path) for path in NODE_PATHS]
        for response in responses:
            err = error(response, 403, "AUTHZ_PERMISSION_DENIED")
            assert err["required_permission"] == ADMIN
    # Denied before anything was provisioned or stored.
    assert await echo_bare.rows("SELECT * FROM tenant_policy") == []
    assert await echo_bare.rows("SELECT * FROM budgets") == []
    for action in ("scaiecho.policy.update", "scaiecho.budget.update"):
        audits = await echo_bare.audit_rows(action)
        assert [(a["status"], a["http_status"]) for a in audits] == [("FAILURE", 403)] * 2
        assert {a["error_code"] for a in audits} == {"AUTHZ_PERMISSION_DENIED"}
    # The tenant_admin role holds the key without an explicit grant.
    tenant_admin = await echo_bare.key(roles=["tenant_admin"], permissions=[])
    async with echo_bare.client(tenant_admin) as client:
        assert ok(await client.get("/tenant-policy"))["tenant_id"] == "tnt_a"
    async with httpx.AsyncClient(base_url=echo_bare.mount) as anonymous:
        error(await anonymous.get("/tenant-policy"), 401, "AUTH_TOKEN_MISSING")


# ----- budget and usage ------------------------------------------------------------------


async def test_budget_put_get_and_null(echo_bare: EchoEnv) -> None:
    key = await echo_bare.admin_key()
    async with echo_bare.client(key) as client:
        initial = ok(await client.get("/admin/budget"))
        put = ok(
            await client.put(
                "/admin/budget", json={"period": "month", "audio_seconds_limit": 36000}
            )
        )
        read = ok(await client.get("/admin/budget"))
        stored = await echo_bare.rows("SELECT * FROM budgets")
        zero = ok(
            await client.put("/admin/budget", json={"period": "month", "audio_seconds_limit": 0})
        )
        cleared = ok(
            await client.put("/admin/budget", json={"period": "month", "audio_seconds_limit": None})
        )
        after_clear = ok(await client.get("/admin/budget"))
    async with echo_bare.client(await echo_bare.admin_key("tnt_other")) as other:
        other_tenant = ok(await other.get("/admin/budget"))

    assert initial == {
        "tenant_id": "tnt_a",
        "period": "month",
        "audio_seconds_limit": None,
        "updated_at": None,
    }
    assert put["audio_seconds_limit"] == 36000 and TS_RE.match(put["updated_at"])
    assert read == put
    [row] = stored
    assert (row["tenant_id"], row["user_id"], row["period"], row["unit"]) == (
        "tnt_a",
        None,
        "month",
        "audio_ms",
    )
    assert int(row["amount"]) == 36_000_000 and row["updated_by"] == "usr_a"
    assert zero["audio_seconds_limit"] == 0
    assert cleared == initial and after_clear == initial
    assert await echo_bare.rows("SELECT * FROM budgets") == []
    assert other_tenant["audio_seconds_limit"] is None

    updates = await echo_bare.audit_rows("scaiecho.budget.update")
    assert [a["status"] for a in updates] == ["SUCCESS"] * 3
    assert [a["details"]["after"]["audio_seconds_limit"] for a in updates] == [36000, 0, None]
    assert [a["details"]["before"]["audio_seconds_limit"] for a in updates] == [None, 36000, 0]
    assert updates[0]["resource_id"] == row["id"]
    reads = await echo_bare.audit_rows("scaiecho.budget.read")
    assert [a["tenant_id"] for a in reads] == ["tnt_a", "tnt_a", "tnt_a", "tnt_other"]


async def test_budget_put_rejects_bad_bodies(echo_bare: EchoEnv) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"period": "day", "audio_seconds_limit": 10}, "period"),
        ({"audio_seconds_limit": 10}, "period"),
        ({"period": "month"}, "audio_seconds_limit"),
        ({"period": "month", "audio_seconds_limit": -1}, "audio_seconds_limit"),
        ({"period": "month", "audio_seconds_limit": 1.5}, "audio_seconds_limit"),
        ({"period": "month", "audio_seconds_limit": "10"}, "audio_seconds_limit"),
        ({"period": "month", "audio_seconds_limit": True}, "audio_seconds_limit"),
        ({"period": "month", "audio_seconds_limit": 10**12}, "audio_seconds_limit"),
        ({"period": "month", "audio_seconds_limit": 10, "unit": "chars"}, "unit"),
    ]
    key = await echo_bare.admin_key()
    async with echo_bare.client(key) as client:
        for body, field in cases:
            err = error(await client.put("/admin/budget", json=body), 422, "VALIDATION_ERROR")
            assert fields(err) == [field], (body, err)
    assert await echo_bare.rows("SELECT * FROM budgets") == []
    audits = await echo_bare.audit_rows("scaiecho.budget.update")
    assert [(a["status"], a["http_status"]) for a in audits] == [("FAILURE", 422)] * len(cases)


async def test_usage_totals_budget_and_periods(echo_bare: EchoEnv) -> None:
    usage = deps_of(echo_bare.runtime).usage
    me = UsageSubject(tenant_id="tnt_a", user_id="usr_a")
    colleague = UsageSubject(tenant_id="tnt_a", user_id="usr_b")
    common: dict[str, Any] = {"unit": "audio_ms", "request_id": "req_test"}
    await usage.record(me, operation="transcribe.batch", backend="A", units=1000, **common)
    await usage.record(colleague, operation="transcribe.job", backend="A", units=2000, **common)
    await usage.record(me, operation="transcribe.openai", backend="B", units=500, **common)
    await usage.record(me, operation="transcribe.stream", backend="A", units=3000, **common)
    await usage.record(
        me, operation="transcribe.webrtc", backend="B", units=700, status="failure", **common
    )
    other = UsageSubject(tenant_id="tnt_b", user_id="usr_x")
    await usage.record(other, operation="transcribe.batch", backend="A", units=99_000, **common)
    old = await usage.record(me, operation="transcribe.job", backend="B", units=4000, **common)
    async with echo_bare.runtime.pool.connection() as conn:
        await conn.execute(
            "UPDATE usage_records SET created_at = '2020-01-31T23:59:59.999Z' WHERE id = %s",
            (old.id,),
        )

    now = datetime.now(UTC)
    month_start = datetime(now.year, now.month, 1, tzinfo=UTC)
    key = await echo_bare.admin_key()
    async with echo_bare.client(key) as client:
        current = ok(await client.get("/usage"))
        explicit = ok(await client.get("/usage", params={"period": month_start.strftime("%Y-%m")}))
        past = ok(await client.get("/usage", params={"period": "2020-01"}))
        empty = ok(await client.get("/usage", params={"period": "2020-02"}))
        ok(await client.put("/admin/budget", json={"period": "month", "audio_seconds_limit": 10}))
        limited = ok(await client.get("/usage"))
        ok(await client.put("/admin/budget", json={"period": "month", "audio_seconds_limit": 5}))
        exhausted = ok(await client.get("/usage"))
        bad = [
            await client.get("/usage", params={"period": p})
            for p in ("2026-13", "2026-5", "2026-00", "0000-01", "may", "2026-05-01", "")
        ]

    assert current == {
        "tenant_id": "tnt_a",
        "period": "month",
        "period_start": month_start.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "period_end": period_end("month", now).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "audio_ms": 7200,
        "requests": 5,
        "audio_seconds_limit": None,
        "remaining_seconds": None,
        "by_backend": {"A": 6000, "B": 1200},
        "by_source": {"batch": 3000, "stream": 3000, "webrtc": 700, "openai": 500},
    }
    assert explicit == current
    assert past["period_start"] == "2020-01-01T00:00:00.000Z"
    assert past["period_end"] == "2020-02-01T00:00:00.000Z"
    assert (past["audio_ms"], past["requests"]) == (4000, 1)
    assert past["by_backend"] == {"A": 0, "B": 4000}
    assert past["by_source"] == {"batch": 4000, "stream": 0, "webrtc": 0, "openai": 0}
    assert (empty["audio_ms"], empty["requests"]) == (0, 0)
    # 10 000 ms allowed, 7 200 used: 2.8 s left, reported in whole seconds.
    assert (limited["audio_seconds_limit"], limited["remaining_seconds"]) == (10, 2)
    # Over the limit: never below 0.
    assert (exhausted["audio_seconds_limit"], exhausted["remaining_seconds"]) == (5, 0)
    for response in bad:
        assert fields(error(response, 422, "VALIDATION_ERROR")) == ["period"]
    reads = await echo_bare.audit_rows("scaiecho.usage.read")
    assert len(reads) == 6
    assert reads[2]["details"] == {"period": "2020-01"}


# ----- dashboard -------------------------------------------------------------------------


async def add_job(
    env: EchoEnv,
    tenant: str,
    status: str,
    *,
    mode: str = "async",
    created_ago_s: float = 5.0,
    started_after_s: float | None = None,
    completed_after_s: float | None = None,
) -> None:
    """Insert a job row whose timestamps are offsets from one ``now()``."""
    started = None if started_after_s is None else created_ago_s - started_after_s
    completed = None if completed_after_s is None else created_ago_s - completed_after_s
    async with env.runtime.pool.connection() as conn:
        # make_interval(NULL) is NULL, so a missing offset leaves the timestamp NULL.
        await conn.execute(
            "INSERT INTO transcribe_jobs (id, tenant_id, user_id, mode, source, status,"
            " audio_bytes, request_id, created_at, started_at, completed_at)"
            " VALUES (%s, %s, 'usr_a', %s, 'batch', %s, 100, 'req_test',"
            " now() - make_interval(secs => %s), now() - make_interval(secs => %s),"
            " now() - make_interval(secs => %s))",
            (new_id("job"), tenant, mode, status, created_ago_s, started, completed),
        )


async def test_dashboard_figures(echo_bare: EchoEnv) -> None:
    env = echo_bare
    await add_job(env, "tnt_a", "queued")
    await add_job(env, "tnt_a", "queued")
    await add_job(env, "tnt_a", "queued", created_ago_s=30 * 3600)  # queued now, not in 24 h
    await add_job(env, "tnt_a", "running", created_ago_s=60, started_after_s=10)
    for n in (1, 2, 3, 4):
        await add_job(
            env,
            "tnt_a",
            "completed",
            created_ago_s=100,
            started_after_s=n,
            completed_after_s=10 * n,
        )
    # Inline jobs and jobs completed before the window stay out of the percentiles.
    await add_job(
        env,
        "tnt_a",
        "completed",
        mode="inline",
        created_ago_s=20,
        started_after_s=0,
        completed_after_s=5,
    )
    await add_job(
        env,
        "tnt_a",
        "completed",
        created_ago_s=26 * 3600,
        started_after_s=0.5,
        completed_after_s=3600,
    )
    await add_job(env, "tnt_a", "failed", created_ago_s=10, completed_after_s=1)
    await add_job(env, "tnt_a", "cancelled", created_ago_s=10, completed_after_s=1)
    await add_job(env, "tnt_b", "queued")
    await add_job(
        env, "tnt_b", "completed", created_ago_s=1000, started_after_s=900, completed_after_s=999
    )
    redis = env.runtime.redis
    await redis.zadd("scaiecho:queue", {"job_1": 1, "job_2": 2, "job_3": 3})
    await redis.zadd("scaispeak:queue", {"job_9": 1})
    for worker in ("host-1", "host-2"):
        await redis.set(workers_key("scaiecho", worker), "{}", ex=60)
    await redis.set(workers_key("scaispeak", "host-3"), "{}", ex=60)

    async with env.client(await env.admin_key()) as client:
        before = datetime.now(UTC)
        board = ok(await client.get("/admin/dashboard"))
    async with env.client(await env.admin_key("tnt_c")) as client:
        idle = ok(await client.get("/admin/dashboard"))

    generated = datetime.fromisoformat(board.pop("generated_at").replace("Z", "+00:00"))
    assert abs((generated - before).total_seconds()) < 30
    assert board == {
        "queue_depth": 3,
        "tenant_queued": 3,
        "worker_count": 2,
        "jobs_by_status_24h": {
            "queued": 2,
            "running": 1,
            "completed": 5,
            "failed": 1,
            "cancelled": 1,
        },
        # percentile_cont over 10/20/30/40 s and 1/2/3/4 s (linear interpolation).
        "job_latency_ms": {"p50": 25000, "p95": 38500},
        "queue_wait_ms": {"p50": 2500, "p95": 3850},
        "nodes": {"total": 0, "healthy": 0, "warning": 0, "stale": 0, "by_engine": {}},
    }
    assert idle["queue_depth"] == 3 and idle["worker_count"] == 2
    assert idle["tenant_queued"] == 0
    assert idle["jobs_by_status_24h"] == dict.fromkeys(
        ("queued", "running", "completed", "failed", "cancelled"), 0
    )
    assert idle["job_latency_ms"] == {"p50": None, "p95": None}
    assert idle["queue_wait_ms"] == {"p50": None, "p95": None}


# ----- nodes -----------------------------------------------------------------------------


async def test_node_listing_without_nodes_and_the_super_admin_rule(echo_bare: EchoEnv) -> None:
    admin = await echo_bare.admin_key()
    super_admin = await echo_bare.key(roles=["super_admin"], permissions=[])
    for key in (admin, super_admin):
        async with echo_bare.root_client(key) as root:
            for path in NODE_PATHS:
                response = await root.get(path)
                assert ok(response) == {"items": []}
                assert response.json()["pagination"] == {"has_more": False, "next_cursor": None}
            bad = await root.get(NODE_PATHS[0], params={"include_stale": "maybe"})
            assert fields(error(bad, 422, "VALIDATION_ERROR")) == ["include_stale"]
    # Node listings are not audited (platform §10.1).
    assert await echo_bare.rows("SELECT * FROM audit_log") == []


async def wait_for_listing(client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    """The listing once the poller has reported ``count`` entries (polled; 30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        items: list[dict[str, Any]] = ok(await client.get(NODE_PATHS[0]))["items"]
        answered = [i for i in items if i["node_id"] is not None and i["health"] == "healthy"]
        if len(items) == count and answered:
            return items
        if time.monotonic() > deadline:
            pytest.fail(f"node listing never reached {count} entries: {items}")
        await asyncio.sleep(0.2)


async def test_node_listing_and_dashboard_count_real_nodes(
    dev_node: NodeProcess, pg_dsn: str, redis_url: str, s3_endpoint: S3Endpoint
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with running_echo(
        pg_dsn,
        redis_url,
        s3_endpoint,
        nodes=[dev_node.grpc_target, dead],
        node_warn_after_s=30.0,
        node_stale_after_s=60.0,
    ) as env:
        key = await env.admin_key()
        async with env.root_client(key) as root:
            items = await wait_for_listing(root, 2)
            transcribe = ok(
                await root.get("/v1/infra/nodes", params={"engine": "audio.transcribe"})
            )
            synthesize = ok(
                await root.get("/v1/admin/nodes", params={"engine": "audio.synthesize"})
            )
            fresh_only = ok(await root.get("/v1/admin/nodes", params={"include_stale": "false"}))
        async with env.client(key) as client:
            board = ok(await client.get("/admin/dashboard"))

    real, unanswered = items
    assert real["endpoint"] == dev_node.grpc_target and real["health"] == "healthy"
    assert TS_RE.match(real["last_heartbeat_at"])
    assert "audio.transcribe" in [e["kind"] for e in real["engines"]]
    assert all(set(e) == {"kind", "name", "capabilities"} for e in real["engines"])
    assert any(m.startswith("audio.transcribe:") for m in real["models_loaded"])
    assert unanswered["node_id"] is None and unanswered["endpoint"] == dead
    assert (unanswered["health"], unanswered["last_heartbeat_at"]) == ("stale", None)
    assert unanswered["last_error"]
    assert [i["node_id"] for i in transcribe["items"]] == [real["node_id"]]
    assert synthesize["items"] == []
    assert [i["node_id"] for i in fresh_only["items"]] == [real["node_id"]]
    kinds = {e["kind"] for e in real["engines"]}
    assert board["nodes"] == {
        "total": 2,
        "healthy": 1,
        "warning": 0,
        "stale": 1,
        "by_engine": dict.fromkeys(sorted(kinds), 1),
    }


async def test_openapi_documents_the_admin_routes(echo_bare: EchoEnv) -> None:
    async with httpx.AsyncClient(base_url=echo_bare.mount) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    mount = "/v1/modules/scaiecho"
    expected = {
        f"{mount}/tenant-policy": {"get", "patch"},
        f"{mount}/usage": {"get"},
        f"{mount}/admin/budget": {"get", "put"},
        f"{mount}/admin/dashboard": {"get"},
        "/v1/admin/nodes": {"get"},
        "/v1/infra/nodes": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(doc["paths"][path]), path
    patch = doc["paths"][f"{mount}/tenant-policy"]["patch"]
    assert "scaiecho:admin" in patch["description"]
    schemas = doc["components"]["schemas"]
    assert schemas["PolicyPatch"]["additionalProperties"] is False
    assert {"UsageReport", "BudgetPut", "BudgetView", "Dashboard", "NodeList"} <= set(schemas)
