"""Backend policy, text blocklist, usage and budget, ``/config`` and the node listing over real
HTTP (scaispeak.md §2, §12.1, §12.2, §12.5), against real Postgres and Redis (and the real dev
node for availability and the listing of a live node)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from scaicommon.errors import ScaiError
from scaicommon.ids import new_id
from scaicommon.periods import period_end
from scaicommon.testing import S3Endpoint
from scaicommon.testing.envelopes import error, fields, ok
from scaicommon.usage import UsageSubject
from scaispeak.deps import deps_of
from scaispeak.services.blocklist import BlocklistService, normalize
from scaispeak.services.regex_sandbox import shared_sandbox

from .conftest import SpeakEnv, running_speak

ADMIN = "scaispeak:admin"
SYNTHESIZE = "scaispeak:synthesize"
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
NODE_PATHS = ("/v1/admin/nodes", "/v1/infra/nodes", "/v1/modules/scaispeak/admin/nodes")
UNLIMITED = 10**14 - 1


# ----- helpers ---------------------------------------------------------------------------


def month_bounds(now: datetime) -> tuple[str, str]:
    """The current UTC month's bounds, formatted as the API writes them."""
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    return (
        start.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        period_end("month", now).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    )


# ----- backend policy --------------------------------------------------------------------


async def test_policy_get_provisions_and_reports_availability(speak_bare: SpeakEnv) -> None:
    synthesizer = await speak_bare.key(permissions=[SYNTHESIZE])
    assert await speak_bare.rows("SELECT * FROM tenant_policy") == []
    async with speak_bare.client(synthesizer) as client:
        first = ok(await client.get("/admin/policy"))
        again = ok(await client.get("/admin/policy"))
    updated_at = first.pop("updated_at")
    assert TS_RE.match(updated_at)
    # No relay and no node: A only, nothing available.
    assert first == {
        "tenant_id": "tnt_a",
        "allowed_backends": ["A"],
        "default_backend": "A",
        "availability": {"A": "none", "B": "unconfigured"},
        "updated_by": None,
    }
    assert list(again) == [
        "tenant_id",
        "allowed_backends",
        "default_backend",
        "availability",
        "updated_at",
        "updated_by",
    ]
    assert again["updated_at"] == updated_at
    [row] = await speak_bare.rows("SELECT * FROM tenant_policy")
    assert (row["allowed_backends"], row["default_backend"], row["updated_by"]) == ("A", "A", None)


async def test_policy_provisioning_with_a_relay(
    pg_dsn: str, redis_url: str, s3_endpoint: S3Endpoint
) -> None:
    relay = {"relay_base_url": "http://127.0.0.1:9", "relay_api_key": "sk-test"}
    async with running_speak(pg_dsn, redis_url, s3_endpoint, **relay) as env:
        key = await env.key(permissions=[SYNTHESIZE])
        async with env.client(key) as client:
            policy = ok(await client.get("/admin/policy"))
    assert (policy["allowed_backends"], policy["default_backend"]) == (["A", "B"], "B")
    assert policy["availability"] == {"A": "none", "B": "ok"}


async def test_policy_patch_merges_any_order_and_audits(speak_bare: SpeakEnv) -> None:
    key = await speak_bare.admin_key()
    async with speak_bare.client(key) as client:
        first = await client.patch("/admin/policy", json={"allowed_backends": ["B", "A"]})
        merged = ok(first)
        second = ok(await client.patch("/admin/policy", json={"default_backend": "B"}))
        third = ok(
            await client.patch(
                "/admin/policy", json={"allowed_backends": ["A", "B"], "default_backend": "A"}
            )
        )
        only_b = ok(
            await client.patch(
                "/admin/policy", json={"allowed_backends": ["B"], "default_backend": "B"}
            )
        )
        refused = await client.patch("/admin/policy", json={"allowed_backends": ["A"]})
    async with speak_bare.client(await speak_bare.key(permissions=[SYNTHESIZE])) as reader:
        final = ok(await reader.get("/admin/policy"))

    assert (merged["allowed_backends"], merged["default_backend"]) == (["B", "A"], "A")
    assert merged["updated_by"] == "usr_a"
    assert merged["availability"] == {"A": "none", "B": "unconfigured"}
    assert (second["allowed_backends"], second["default_backend"]) == (["B", "A"], "B")
    assert (third["allowed_backends"], third["default_backend"]) == (["A", "B"], "A")
    assert (only_b["allowed_backends"], only_b["default_backend"]) == (["B"], "B")
    err = error(refused, 422, "VALIDATION_ERROR")
    assert fields(err) == ["default_backend"]
    assert final == only_b

    audits = await speak_bare.audit_rows("scaispeak.policy.update")
    assert [a["status"] for a in audits] == ["SUCCESS"] * 4 + ["FAILURE"]
    row = audits[0]
    assert (row["tenant_id"], row["actor_id"]) == ("tnt_a", "usr_a")
    assert (row["resource_type"], row["resource_id"]) == ("tenant_policy", "tnt_a")
    assert row["request_id"] == first.headers["x-request-id"]
    assert row["details"] == {
        "before": {"allowed_backends": "A", "default_backend": "A"},
        "after": {"allowed_backends": "BA", "default_backend": "A"},
    }
    assert (audits[4]["error_code"], audits[4]["http_status"]) == ("VALIDATION_ERROR", 422)


async def test_policy_patch_rejects_bad_bodies(speak_bare: SpeakEnv) -> None:
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"allowed_backends": ["C"]}, ["allowed_backends"]),
        ({"allowed_backends": ["A", "A"]}, ["allowed_backends"]),
        ({"allowed_backends": ["a"]}, ["allowed_backends"]),
        ({"allowed_backends": []}, ["allowed_backends"]),
        ({"allowed_backends": "AB"}, ["allowed_backends"]),
        ({"allowed_backends": None}, ["allowed_backends"]),
        ({"allowed_backends": [1]}, ["allowed_backends[0]"]),
        ({"default_backend": "C"}, ["default_backend"]),
        ({"default_backend": ["A"]}, ["default_backend"]),
        ({"allowed_backends": ["A"], "colour": "red"}, ["colour"]),
        ({}, ["allowed_backends", "default_backend"]),
    ]
    key = await speak_bare.admin_key()
    async with speak_bare.client(key) as client:
        for body, expected in cases:
            err = error(await client.patch("/admin/policy", json=body), 422, "VALIDATION_ERROR")
            assert fields(err) == expected, (body, err)
        response = await client.patch(
            "/admin/policy", content=b"nope", headers={"Content-Type": "application/json"}
        )
        assert fields(error(response, 422, "VALIDATION_ERROR")) == ["body"]
    async with speak_bare.client(await speak_bare.key(permissions=[SYNTHESIZE])) as reader:
        policy = ok(await reader.get("/admin/policy"))
    assert (policy["allowed_backends"], policy["default_backend"]) == (["A"], "A")
    audits = await speak_bare.audit_rows("scaispeak.policy.update")
    assert len(audits) == len(cases) + 1
    assert {a["status"] for a in audits} == {"FAILURE"}


async def test_admin_routes_need_their_permissions(speak_bare: SpeakEnv) -> None:
    # Every key except admin (the env's default grant), and a bare tenant_user.
    non_admin = await speak_bare.key()
    tenant_user = await speak_bare.key(roles=["tenant_user"], permissions=[])
    reader = await speak_bare.key(permissions=["scaispeak:voice.read"])
    for key in (non_admin, tenant_user):
        async with speak_bare.client(key) as client:
            responses = [
                await client.patch("/admin/policy", json={"default_backend": "A"}),
                await client.get("/admin/blocklist"),
                await client.post("/admin/blocklist", json={"pattern": "x", "match": "substring"}),
                await client.delete("/admin/blocklist/blk_01J0ZK8M6T4W2QF3XG5N7R9B1C"),
                await client.get("/usage"),
                await client.get("/admin/budget"),
                await client.put("/admin/budget", json={"period": "month", "chars_limit": 1}),
            ]
        async with speak_bare.root_client(key) as root:
            responses += [await root.get(path) for path in NODE_PATHS]
        for response in responses:
            err = error(response, 403, "AUTHZ_PERMISSION_DENIED")
            assert err["required_permission"] == ADMIN, response.request.url
    for key in (tenant_user, reader):
        async with speak_bare.client(key) as client:
            err = error(await client.get("/admin/policy"), 403, "AUTHZ_PERMISSION_DENIED")
            assert err["required_permission"] == SYNTHESIZE
    # Denied before anything was provisioned or stored; the writes were audited as failures.
    assert await speak_bare.rows("SELECT * FROM tenant_policy") == []
    assert await speak_bare.rows("SELECT * FROM budgets") == []
    assert await speak_bare.rows("SELECT * FROM blocklist_entries") == []
    for action in (
        "scaispeak.policy.update",
        "scaispeak.blocklist.create",
        "scaispeak.blocklist.delete",
        "scaispeak.budget.update",
    ):
        audits = await speak_bare.audit_rows(action)
        assert [(a["status"], a["http_status"]) for a in audits] == [("FAILURE", 403)] * 2
    # tenant_admin holds every key by role.
    tenant_admin = await speak_bare.key(roles=["tenant_admin"], permissions=[])
    async with speak_bare.client(tenant_admin) as client:
        ok(await client.get("/admin/blocklist"))
        ok(await client.get("/admin/policy"))
    async with httpx.AsyncClient(base_url=speak_bare.mount) as anonymous:
        error(await anonymous.get("/admin/policy"), 401, "AUTH_TOKEN_MISSING")


# ----- blocklist -------------------------------------------------------------------------


async def test_blocklist_crud_pagination_and_audit(speak_bare: SpeakEnv) -> None:
    key = await speak_bare.admin_key()
    async with speak_bare.client(key) as client:
        created = []
        for n in range(3):
            response = await client.post(
                "/admin/blocklist",
                json={"pattern": f"word{n}", "match": "substring", "description": f"d{n}"},
            )
            created.append(ok(response, 201))
        regex = ok(
            await client.post("/admin/blocklist", json={"pattern": r"sec\w+", "match": "regex"}),
            201,
        )
        first = await client.get("/admin/blocklist", params={"limit": 3})
        page1 = ok(first)
        cursor = first.json()["pagination"]["next_cursor"]
        second = await client.get("/admin/blocklist", params={"limit": 3, "cursor": cursor})
        page2 = ok(second)
        deleted = ok(await client.delete(f"/admin/blocklist/{created[1]['id']}"))
        again = await client.delete(f"/admin/blocklist/{created[1]['id']}")
        after = ok(await client.get("/admin/blocklist"))
        bad_cursor = await client.get("/admin/blocklist", params={"cursor": "nope"})
    async with speak_bare.client(await speak_bare.admin_key("tnt_b", "usr_b")) as other:
        other_list = ok(await other.get("/admin/blocklist"))
        other_delete = await other.delete(f"/admin/blocklist/{created[0]['id']}")

    entry = created[0]
    assert re.match(r"^blk_[0-9A-HJKMNP-TV-Z]{26}$", entry["id"])
    assert TS_RE.match(entry.pop("created_at"))
    assert entry == {
        "id": entry["id"],
        "pattern": "word0",
        "match": "substring",
        "description": "d0",
        "created_by": "usr_a",
    }
    assert regex["description"] is None and regex["match"] == "regex"
    assert [i["id"] for i in page1["items"]] == [regex["id"], created[2]["id"], created[1]["id"]]
    assert first.json()["pagination"]["has_more"] is True
    assert [i["id"] for i in page2["items"]] == [created[0]["id"]]
    assert second.json()["pagination"] == {"has_more": False, "next_cursor": None}
    assert deleted == {"id": created[1]["id"], "deleted": True}
    error(again, 404, "SCAISPEAK_BLOCKLIST_ENTRY_NOT_FOUND")
    assert [i["id"] for i in after["items"]] == [regex["id"], created[2]["id"], created[0]["id"]]
    assert fields(error(bad_cursor, 422, "VALIDATION_ERROR")) == ["cursor"]
    assert other_list["items"] == []
    error(other_delete, 404, "SCAISPEAK_BLOCKLIST_ENTRY_NOT_FOUND")

    creates = await speak_bare.audit_rows("scaispeak.blocklist.create")
    assert [(a["status"], a["resource_id"]) for a in creates] == [
        ("SUCCESS", e["id"]) for e in (*created, regex)
    ]
    assert creates[3]["details"] == {"match": "regex", "pattern": r"sec\w+"}
    deletes = await speak_bare.audit_rows("scaispeak.blocklist.delete")
    assert [(a["status"], a["tenant_id"], a["http_status"]) for a in deletes] == [
        ("SUCCESS", "tnt_a", None),
        ("FAILURE", "tnt_a", 404),
        ("FAILURE", "tnt_b", 404),
    ]


async def test_blocklist_create_validation(speak_bare: SpeakEnv) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"match": "substring"}, "pattern"),
        ({"pattern": "", "match": "substring"}, "pattern"),
        ({"pattern": "x" * 501, "match": "substring"}, "pattern"),
        ({"pattern": 5, "match": "substring"}, "pattern"),
        ({"pattern": "x"}, "match"),
        ({"pattern": "x", "match": "glob"}, "match"),
        ({"pattern": "(unclosed", "match": "regex"}, "pattern"),
        ({"pattern": "a{2,1}", "match": "regex"}, "pattern"),
        ({"pattern": "x", "match": "substring", "description": "d" * 1001}, "description"),
        ({"pattern": "x", "match": "substring", "colour": "red"}, "colour"),
    ]
    key = await speak_bare.admin_key()
    async with speak_bare.client(key) as client:
        for body, field in cases:
            err = error(await client.post("/admin/blocklist", json=body), 422, "VALIDATION_ERROR")
            assert fields(err) == [field], (body, err)
        # The limits themselves are accepted; "(unclosed" is a fine substring.
        ok(
            await client.post("/admin/blocklist", json={"pattern": "y" * 500, "match": "regex"}),
            201,
        )
        ok(
            await client.post(
                "/admin/blocklist", json={"pattern": "(unclosed", "match": "substring"}
            ),
            201,
        )
    stored = await speak_bare.rows("SELECT match, length(pattern) AS n FROM blocklist_entries")
    assert sorted((r["match"], r["n"]) for r in stored) == [("regex", 500), ("substring", 9)]
    audits = await speak_bare.audit_rows("scaispeak.blocklist.create")
    assert [a["status"] for a in audits] == ["FAILURE"] * len(cases) + ["SUCCESS"] * 2


def test_normalize_applies_nfkc_and_collapses_whitespace() -> None:
    assert normalize("Ｂａｄ\u00a0\t\n  ﬁle") == "Bad file"
    assert normalize("  two   spaces ") == " two spaces "


async def blocked_by(service: BlocklistService, text: str) -> str | None:
    """The entry id ``check`` reports for ``text``, or ``None`` when it passes."""
    try:
        await service.check("tnt_a", text)
    except ScaiError as exc:
        assert (exc.code, exc.http_status) == ("SCAISPEAK_TEXT_BLOCKED", 422)
        entry_id: str = exc.extras["blocklist_entry_id"]
        return entry_id
    return None


async def test_blocklist_matching_substring_and_regex(speak_bare: SpeakEnv) -> None:
    key = await speak_bare.admin_key()
    async with speak_bare.client(key) as client:
        phrase = ok(
            await client.post(
                "/admin/blocklist", json={"pattern": "Bad  Word", "match": "substring"}
            ),
            201,
        )
        ligature = ok(
            await client.post("/admin/blocklist", json={"pattern": "file", "match": "substring"}),
            201,
        )
        regex = ok(
            await client.post(
                "/admin/blocklist", json={"pattern": r"\bsec\w+ code\b", "match": "regex"}
            ),
            201,
        )
    service = BlocklistService(deps_of(speak_bare.runtime))
    # Case, whitespace runs (tabs, newlines, no-break spaces) and NFKC forms all match.
    assert await blocked_by(service, "this is a BAD\n\t word indeed") == phrase["id"]
    assert await blocked_by(service, "ｂａｄ\u00a0ｗｏｒｄ") == phrase["id"]
    assert await blocked_by(service, "open the ﬁle") == ligature["id"]
    assert await blocked_by(service, "the SECRET   Code is") == regex["id"]
    assert await blocked_by(service, "ｓｅｃｒｅｔ ｃｏｄｅ") == regex["id"]
    # Substring entries are tested before regex ones.
    assert await blocked_by(service, "secret code in a file") == ligature["id"]
    assert await blocked_by(service, "badword, a secretcode, profile") == ligature["id"]
    assert await blocked_by(service, "badword and a secretcode") is None
    assert await blocked_by(service, "") is None
    # Other tenants are not affected.
    await service.check("tnt_b", "bad word")
    # A write through this process is seen at once, cache or not.
    async with speak_bare.client(key) as client:
        ok(await client.delete(f"/admin/blocklist/{ligature['id']}"))
    assert await blocked_by(service, "open the ﬁle") is None
    assert await blocked_by(service, "secret code in a file") == regex["id"]


async def test_catastrophic_regex_counts_as_a_match_within_the_limit(
    speak_bare: SpeakEnv,
) -> None:
    key = await speak_bare.admin_key()
    async with speak_bare.client(key) as client:
        harmless = ok(
            await client.post("/admin/blocklist", json={"pattern": "zzz+", "match": "regex"}), 201
        )
        evil = ok(
            await client.post("/admin/blocklist", json={"pattern": "(a+)+$", "match": "regex"}),
            201,
        )
    service = BlocklistService(deps_of(speak_bare.runtime))
    await service.rules("tnt_a")  # cache the entries, so only matching is timed
    await shared_sandbox().first_hit(["warm"], "up")  # a child is running
    # 2**40 backtracking paths: never finishes without the limit.
    started = time.monotonic()
    assert await blocked_by(service, "a" * 40 + "b") == evil["id"]
    elapsed = time.monotonic() - started
    assert 0.05 <= elapsed < 1.0, elapsed
    # The same pattern on text it rejects quickly passes, and the sandbox keeps working.
    assert await blocked_by(service, "b") is None
    assert await blocked_by(service, "zzzz") == harmless["id"]
    assert await blocked_by(service, "aaaa") == evil["id"]
    # Concurrent checks do not block the event loop while the children run.
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    ticking = asyncio.create_task(ticker())
    results = await asyncio.gather(*(blocked_by(service, "a" * 40 + "b") for _ in range(4)))
    ticking.cancel()
    assert results == [evil["id"]] * 4
    assert ticks >= 10


# ----- budget ----------------------------------------------------------------------------


async def test_budget_without_default(speak_bare: SpeakEnv) -> None:
    key = await speak_bare.admin_key()
    usage = deps_of(speak_bare.runtime).usage
    await usage.record(
        UsageSubject("tnt_a", "usr_a"), operation="speech.speak", backend="A", unit="chars",
        units=120, request_id="req_test",
    )  # fmt: skip
    now = datetime.now(UTC)
    async with speak_bare.client(key) as client:
        initial = ok(await client.get("/admin/budget"))
        put = ok(await client.put("/admin/budget", json={"period": "month", "chars_limit": 5000}))
        read = ok(await client.get("/admin/budget"))
        zero = ok(await client.put("/admin/budget", json={"period": "month", "chars_limit": 0}))
        cleared = ok(
            await client.put("/admin/budget", json={"period": "month", "chars_limit": None})
        )
    resets_at = month_bounds(now)[1]
    assert initial == {
        "tenant_id": "tnt_a",
        "period": "month",
        "chars_limit": None,
        "chars_used": 120,
        "resets_at": resets_at,
    }
    assert put == {**initial, "chars_limit": 5000}
    assert read == put
    assert zero["chars_limit"] == 0
    assert cleared == initial
    [row] = await speak_bare.rows("SELECT * FROM budgets")
    assert (row["tenant_id"], row["user_id"], row["period"], row["unit"]) == (
        "tnt_a",
        None,
        "month",
        "chars",
    )
    assert int(row["amount"]) == UNLIMITED and row["updated_by"] == "usr_a"
    updates = await speak_bare.audit_rows("scaispeak.budget.update")
    assert [(a["details"]["before"], a["details"]["after"]) for a in updates] == [
        ({"chars_limit": None}, {"chars_limit": 5000}),
        ({"chars_limit": 5000}, {"chars_limit": 0}),
        ({"chars_limit": 0}, {"chars_limit": None}),
    ]
    reads = await speak_bare.audit_rows("scaispeak.budget.read")
    assert [a["status"] for a in reads] == ["SUCCESS"] * 2


async def test_budget_default_then_explicit_unlimited(
    pg_dsn: str, redis_url: str, s3_endpoint: S3Endpoint
) -> None:
    async with running_speak(
        pg_dsn, redis_url, s3_endpoint, default_monthly_chars_limit=1000
    ) as env:
        guard = deps_of(env.runtime).guard
        async with env.client(await env.admin_key()) as client:
            fresh = ok(await client.get("/admin/budget"))
            with pytest.raises(ScaiError) as refused:
                await guard.check_for("tnt_a", "usr_a", "chars", 2000)
            await guard.check_for("tnt_a", "usr_a", "chars", 1000)
            unlimited = ok(
                await client.put("/admin/budget", json={"period": "month", "chars_limit": None})
            )
            await guard.check_for("tnt_a", "usr_a", "chars", 2000)
            usage = ok(await client.get("/usage"))
            limited = ok(
                await client.put("/admin/budget", json={"period": "month", "chars_limit": 1500})
            )
            with pytest.raises(ScaiError) as refused_again:
                await guard.check_for("tnt_a", "usr_a", "chars", 2000)
        async with env.client(await env.admin_key("tnt_b", "usr_b")) as other:
            other_tenant = ok(await other.get("/admin/budget"))
        [update, *_] = await env.audit_rows("scaispeak.budget.update")
    assert fresh["chars_limit"] == 1000
    assert (refused.value.code, refused.value.extras["limit"]) == ("QUOTA_EXCEEDED", 1000)
    assert unlimited["chars_limit"] is None
    assert (usage["chars_limit"], usage["chars_remaining"]) == (None, None)
    assert limited["chars_limit"] == 1500
    assert (refused_again.value.code, refused_again.value.extras["limit"]) == (
        "QUOTA_EXCEEDED",
        1500,
    )
    assert other_tenant["chars_limit"] == 1000
    assert update["details"] == {
        "period": "month",
        "before": {"chars_limit": 1000},
        "after": {"chars_limit": None},
    }


async def test_budget_put_rejects_bad_bodies(speak_bare: SpeakEnv) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"period": "day", "chars_limit": 10}, "period"),
        ({"chars_limit": 10}, "period"),
        ({"period": "month"}, "chars_limit"),
        ({"period": "month", "chars_limit": -1}, "chars_limit"),
        ({"period": "month", "chars_limit": 1.5}, "chars_limit"),
        ({"period": "month", "chars_limit": "10"}, "chars_limit"),
        ({"period": "month", "chars_limit": True}, "chars_limit"),
        ({"period": "month", "chars_limit": UNLIMITED}, "chars_limit"),
        ({"period": "month", "chars_limit": 10, "unit": "chars"}, "unit"),
    ]
    async with speak_bare.client(await speak_bare.admin_key()) as client:
        for body, field in cases:
            err = error(await client.put("/admin/budget", json=body), 422, "VALIDATION_ERROR")
            assert fields(err) == [field], (body, err)
        largest = ok(
            await client.put(
                "/admin/budget", json={"period": "month", "chars_limit": UNLIMITED - 1}
            )
        )
    assert largest["chars_limit"] == UNLIMITED - 1
    audits = await speak_bare.audit_rows("scaispeak.budget.update")
    assert [(a["status"], a["http_status"]) for a in audits] == [("FAILURE", 422)] * len(cases) + [
        ("SUCCESS", None)
    ]


# ----- usage -----------------------------------------------------------------------------


async def add_job(env: SpeakEnv, tenant: str, voice_id: str) -> str:
    """A completed synthesis job row with ``voice_id``; returns its id."""
    job_id = new_id("job")
    async with env.runtime.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO synth_jobs (id, tenant_id, user_id, mode, source, status, voice_id,"
            " chars, response_format, sample_rate, request_id)"
            " VALUES (%s, %s, 'usr_a', 'inline', 'speak', 'completed', %s, 1, 'mp3', 24000,"
            " 'req_test')",
            (job_id, tenant, voice_id),
        )
    return job_id


async def test_usage_totals_groupings_and_ranges(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    usage = deps_of(env.runtime).usage
    me = UsageSubject("tnt_a", "usr_a")
    colleague = UsageSubject("tnt_a", "usr_b")
    job_v1 = await add_job(env, "tnt_a", "voice_one")
    job_v1b = await add_job(env, "tnt_a", "voice_one")
    job_v2 = await add_job(env, "tnt_a", "voice_two")

    async def record(who: UsageSubject, backend: str, chars: int, ms: int | None, **kw: Any) -> str:
        row = await usage.record(
            who, operation="speech.speak", backend=backend, unit="chars", units=chars,
            output_audio_ms=ms, request_id="req_test", **kw,
        )  # fmt: skip
        return row.id

    await record(me, "A", 100, 6000, job_id=job_v1)
    await record(colleague, "A", 250, 15000, job_id=job_v1b)
    await record(me, "B", 40, 2500, job_id=job_v2)
    await record(me, "A", 10, 700)  # a preview: no job, no voice
    await record(me, "B", 0, None, status="failure", job_id=job_v2)
    await record(UsageSubject("tnt_b", "usr_x"), "A", 99_000, 1)
    march_3 = await record(me, "A", 7, 70)
    march_5 = await record(colleague, "B", 9, 90)
    async with env.runtime.pool.connection() as conn:
        for usage_id, at in ((march_3, "2020-03-03T10:00:00Z"), (march_5, "2020-03-05T23:59:59Z")):
            await conn.execute(
                "UPDATE usage_records SET created_at = %s WHERE id = %s", (at, usage_id)
            )

    now = datetime.now(UTC)
    start, end = month_bounds(now)
    async with env.client(await env.admin_key()) as client:
        plain = ok(await client.get("/usage"))
        by = {
            group: ok(await client.get("/usage", params={"group_by": group}))
            for group in ("user", "voice", "backend")
        }
        march = ok(
            await client.get(
                "/usage",
                params={
                    "start": "2020-03-01",
                    "end": "2020-04-01T00:00:00+00:00",
                    "group_by": "day",
                },
            )
        )
        since_march = ok(await client.get("/usage", params={"start": "2020-03-04T00:00:00Z"}))
        ok(await client.put("/admin/budget", json={"period": "month", "chars_limit": 1000}))
        limited = ok(await client.get("/usage"))
        ok(await client.put("/admin/budget", json={"period": "month", "chars_limit": 300}))
        exhausted = ok(await client.get("/usage"))
        bad = [
            (await client.get("/usage", params=params), field)
            for params, field in (
                ({"group_by": "model"}, "group_by"),
                ({"group_by": ""}, "group_by"),
                ({"start": "yesterday"}, "start"),
                ({"start": "2026-05-01T00:00:00"}, "start"),
                ({"end": "2026-13-01"}, "end"),
                ({"start": "2020-03-05", "end": "2020-03-05"}, "end"),
            )
        ]

    assert plain == {
        "tenant_id": "tnt_a",
        "period": "month",
        "period_start": start,
        "period_end": end,
        "chars_total": 400,
        "requests": 5,
        "audio_ms_total": 24200,
        "chars_limit": None,
        "chars_remaining": None,
        "breakdown": [],
    }
    assert by["user"]["breakdown"] == [
        {"key": "usr_a", "chars": 150, "requests": 4, "audio_ms": 9200},
        {"key": "usr_b", "chars": 250, "requests": 1, "audio_ms": 15000},
    ]
    assert by["voice"]["breakdown"] == [
        {"key": "voice_one", "chars": 350, "requests": 2, "audio_ms": 21000},
        {"key": "voice_two", "chars": 40, "requests": 2, "audio_ms": 2500},
        {"key": None, "chars": 10, "requests": 1, "audio_ms": 700},
    ]
    assert by["backend"]["breakdown"] == [
        {"key": "A", "chars": 360, "requests": 3, "audio_ms": 21700},
        {"key": "B", "chars": 40, "requests": 2, "audio_ms": 2500},
    ]
    for report in by.values():
        assert (report["chars_total"], report["requests"]) == (400, 5)
    assert (march["period_start"], march["period_end"]) == (
        "2020-03-01T00:00:00.000Z",
        "2020-04-01T00:00:00.000Z",
    )
    assert march["breakdown"] == [
        {"key": "2020-03-03", "chars": 7, "requests": 1, "audio_ms": 70},
        {"key": "2020-03-05", "chars": 9, "requests": 1, "audio_ms": 90},
    ]
    assert (march["chars_total"], march["requests"]) == (16, 2)
    assert since_march["period_end"] == end
    assert (since_march["chars_total"], since_march["requests"]) == (409, 6)
    assert (limited["chars_limit"], limited["chars_remaining"]) == (1000, 600)
    assert (exhausted["chars_limit"], exhausted["chars_remaining"]) == (300, 0)
    for response, field in bad:
        assert fields(error(response, 422, "VALIDATION_ERROR")) == [field], response.text
    reads = await env.audit_rows("scaispeak.usage.read")
    assert len(reads) == 8
    assert reads[4]["details"] == {
        "start": "2020-03-01T00:00:00.000Z",
        "end": "2020-04-01T00:00:00.000Z",
        "group_by": "day",
    }


# ----- config ----------------------------------------------------------------------------


async def test_config_for_any_module_permission(
    pg_dsn: str, redis_url: str, s3_endpoint: S3Endpoint
) -> None:
    async with running_speak(
        pg_dsn,
        redis_url,
        s3_endpoint,
        scaidrive_url="http://127.0.0.1:9",
        async_threshold_chars=1500,
        default_stream_codec="mp3",
    ) as env:
        answers = []
        for grant in (
            "scaispeak:synthesize",
            "scaispeak:voice.read",
            "scaispeak:voice.write",
            "scaispeak:voice.share",
            ADMIN,
        ):
            async with env.client(await env.key(permissions=[grant])) as client:
                answers.append(ok(await client.get("/config")))
        async with env.client(await env.key(roles=["tenant_user"], permissions=[])) as client:
            denied = await client.get("/config")
    assert answers[0] == {
        "async_threshold_chars": 1500,
        "max_text_chars": 100000,
        "preview_max_chars": 300,
        "openai_max_input_chars": 4096,
        "default_stream_codec": "mp3",
        "response_formats": ["mp3", "wav", "opus", "flac", "pcm"],
        "scaidrive_configured": True,
        "webrtc_available": False,
    }
    assert all(a == answers[0] for a in answers)
    error(denied, 403, "AUTHZ_PERMISSION_DENIED")


async def test_config_without_scaidrive(speak_bare: SpeakEnv) -> None:
    async with speak_bare.client(await speak_bare.key()) as client:
        config = ok(await client.get("/config"))
    assert config["scaidrive_configured"] is False
    assert config["async_threshold_chars"] == 2000 and config["default_stream_codec"] == "opus"


# ----- nodes -----------------------------------------------------------------------------


async def test_node_listing_without_nodes_at_all_three_paths(speak_bare: SpeakEnv) -> None:
    admin = await speak_bare.admin_key()
    super_admin = await speak_bare.key(roles=["super_admin"], permissions=[])
    for key in (admin, super_admin):
        async with speak_bare.root_client(key) as root:
            for path in NODE_PATHS:
                response = await root.get(path)
                assert ok(response) == {"items": []}, path
                assert response.json()["pagination"] == {"has_more": False, "next_cursor": None}
            bad = await root.get(NODE_PATHS[2], params={"include_stale": "maybe"})
            assert fields(error(bad, 422, "VALIDATION_ERROR")) == ["include_stale"]
    assert await speak_bare.rows("SELECT * FROM audit_log") == []


async def test_node_listing_and_availability_with_a_real_node(
    speak_with_node: SpeakEnv,
) -> None:
    env = speak_with_node
    key = await env.key(tenant="tnt_nodes", user="usr_nodes", permissions=[ADMIN, SYNTHESIZE])
    async with env.root_client(key) as root:
        listings = [ok(await root.get(path)) for path in NODE_PATHS]
        synthesize = ok(await root.get(NODE_PATHS[2], params={"engine": "audio.synthesize"}))
        analyze = ok(await root.get(NODE_PATHS[1], params={"engine": "audio.analyze.pyannote"}))
    async with env.client(key) as client:
        policy = ok(await client.get("/admin/policy"))
    assert listings[0] == listings[1] == listings[2]
    [node] = listings[0]["items"]
    assert node["health"] == "healthy" and TS_RE.match(node["last_heartbeat_at"])
    kinds = {e["kind"] for e in node["engines"]}
    assert "audio.synthesize" in kinds
    assert any(m.startswith("audio.synthesize:") for m in node["models_loaded"])
    assert [i["node_id"] for i in synthesize["items"]] == [node["node_id"]]
    assert analyze["items"] == []
    assert policy["availability"] == {"A": "ok", "B": "ok"}
    assert (policy["allowed_backends"], policy["default_backend"]) == (["A", "B"], "B")


async def test_openapi_documents_the_admin_routes(speak_bare: SpeakEnv) -> None:
    async with httpx.AsyncClient(base_url=speak_bare.mount) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    mount = "/v1/modules/scaispeak"
    expected = {
        f"{mount}/admin/policy": {"get", "patch"},
        f"{mount}/admin/blocklist": {"get", "post"},
        f"{mount}/admin/blocklist/{{entry_id}}": {"delete"},
        f"{mount}/usage": {"get"},
        f"{mount}/admin/budget": {"get", "put"},
        f"{mount}/config": {"get"},
        f"{mount}/admin/nodes": {"get"},
        "/v1/admin/nodes": {"get"},
        "/v1/infra/nodes": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(doc["paths"][path]), path
    schemas = doc["components"]["schemas"]
    assert schemas["PolicyPatch"]["additionalProperties"] is False
    assert {"PolicyView", "BlocklistCreate", "UsageReport", "BudgetView", "ConfigView"} <= set(
        schemas
    )
