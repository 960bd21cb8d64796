"""Sliding-window limiter and stream slots against a real Redis (platform §11)."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from scaicommon.errors import ScaiError
from scaicommon.ratelimit import RateLimiter, StreamSlots
from scaicommon.testing.services import LocalRedis

MODULE = "scaiecho"
ULID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def limiter(redis: Redis, **limits: int | float | bool) -> RateLimiter:
    defaults: dict[str, int | float | bool] = {
        "per_key": 0,
        "per_user": 0,
        "per_tenant": 0,
        "per_partner": 0,
        "per_ip": 0,
    }
    defaults.update(limits)
    return RateLimiter(redis, MODULE, **defaults)  # type: ignore[arg-type]


async def test_n_plus_first_request_is_refused_with_level_headers_and_retry_after(
    redis: Redis,
) -> None:
    rl = limiter(redis, per_key=3, per_user=10, per_tenant=100, per_partner=1000)
    ids = {"api_key_id": "apikey_1", "user_id": "usr_1", "tenant_id": "tnt_1", "partner_id": "p1"}
    for expected_remaining in (2, 1, 0):
        decision = await rl.check(**ids)
        assert decision.allowed
        assert decision.level == "api_key"
        assert decision.headers()["X-Scaigrid-Ratelimit-Remaining"] == str(expected_remaining)
        assert decision.headers()["X-Scaigrid-Ratelimit-Limit"] == "3"

    refused = await rl.check(**ids)
    assert not refused.allowed
    assert (refused.level, refused.limit, refused.remaining) == ("api_key", 3, 0)
    now = time.time()
    reset = int(refused.headers()["X-Scaigrid-Ratelimit-Reset"])
    assert now + 58 <= reset <= now + 62  # oldest entry leaves the 60 s window

    err = refused.to_error()
    assert isinstance(err, ScaiError)
    assert (err.code, err.http_status) == ("RATE_LIMITED", 429)
    assert err.retry_after is not None and 59 <= err.retry_after <= 61
    assert err.retry_after == max(1, math.ceil(refused.reset_epoch_s - refused.now_s))  # type: ignore[operator]
    body = err.to_dict()
    assert body["limit_level"] == "api_key"
    assert body["limit"] == 3
    assert body["retry_after"] == err.retry_after
    assert err.headers["Retry-After"] == str(err.retry_after)
    assert err.headers["X-Scaigrid-Ratelimit-Limit"] == "3"
    assert err.headers["X-Scaigrid-Ratelimit-Remaining"] == "0"
    assert err.headers["X-Scaigrid-Ratelimit-Reset"] == str(reset)
    with pytest.raises(ScaiError):
        refused.raise_if_refused()

    # The refused request was counted nowhere; members are fresh ULIDs.
    assert await redis.zcard(f"scai:{MODULE}:rl:user:usr_1") == 3
    members = await redis.zrange(f"scai:{MODULE}:rl:tenant:tnt_1", 0, -1)
    assert len(set(members)) == 3
    assert all(ULID_RE.match(m.decode()) for m in members)
    ttl = await redis.pttl(f"scai:{MODULE}:rl:api_key:apikey_1")
    assert 0 < ttl <= 60_000


async def test_headers_follow_the_level_with_fewest_remaining_slots(redis: Redis) -> None:
    rl = limiter(redis, per_key=5, per_user=3, per_tenant=100)
    decision = await rl.check(api_key_id="k", user_id="u", tenant_id="t")
    assert decision.headers()["X-Scaigrid-Ratelimit-Limit"] == "3"
    assert decision.headers()["X-Scaigrid-Ratelimit-Remaining"] == "2"
    assert decision.level == "user"
    assert [s.level for s in decision.levels] == ["api_key", "user", "tenant"]


async def test_levels_are_independent(redis: Redis) -> None:
    rl = limiter(redis, per_key=2, per_user=3, per_tenant=4)
    # key level: k1 exhausted, another key of the same user still passes
    assert (await rl.check(api_key_id="k1", user_id="u1", tenant_id="t1")).allowed
    assert (await rl.check(api_key_id="k1", user_id="u1", tenant_id="t1")).allowed
    refused = await rl.check(api_key_id="k1", user_id="u1", tenant_id="t1")
    assert (refused.allowed, refused.level) == (False, "api_key")
    # user level: u1 has 2 requests; a third through another key fills it
    assert (await rl.check(api_key_id="k2", user_id="u1", tenant_id="t1")).allowed
    refused = await rl.check(api_key_id="k3", user_id="u1", tenant_id="t1")
    assert (refused.allowed, refused.level, refused.limit) == (False, "user", 3)
    # tenant level: another user of t1 gets one more, then the tenant is full
    assert (await rl.check(api_key_id="k4", user_id="u2", tenant_id="t1")).allowed
    refused = await rl.check(api_key_id="k5", user_id="u3", tenant_id="t1")
    assert (refused.allowed, refused.level, refused.limit) == (False, "tenant", 4)
    # another tenant is untouched
    assert (await rl.check(api_key_id="k6", user_id="u9", tenant_id="t2")).allowed


async def test_partner_level(redis: Redis) -> None:
    rl = limiter(redis, per_partner=2)
    assert (await rl.check(user_id="u1", tenant_id="t1", partner_id="p")).allowed
    assert (await rl.check(user_id="u2", tenant_id="t2", partner_id="p")).allowed
    refused = await rl.check(user_id="u3", tenant_id="t3", partner_id="p")
    assert (refused.allowed, refused.level) == (False, "partner")
    # no partner id: the level does not apply
    assert (await rl.check(user_id="u3", tenant_id="t3")).allowed


async def test_zero_disables_a_level(redis: Redis) -> None:
    rl = limiter(redis, per_key=0, per_user=2)
    for _ in range(2):
        assert (await rl.check(api_key_id="k", user_id="u")).allowed
    refused = await rl.check(api_key_id="k", user_id="u")
    assert refused.level == "user"
    assert not await redis.exists(f"scai:{MODULE}:rl:api_key:k")
    only_key = limiter(redis, per_key=0)
    for _ in range(5):
        decision = await only_key.check(api_key_id="k")
        assert decision.allowed and decision.headers() == {}


async def test_disabled_limiter_allows_everything_and_writes_nothing(redis: Redis) -> None:
    rl = limiter(redis, enabled=False, per_key=1, per_user=1, per_ip=1)
    for _ in range(3):
        decision = await rl.check(api_key_id="k", user_id="u", tenant_id="t")
        assert decision.allowed and decision.headers() == {}
        assert (await rl.check_failed_auth("10.0.0.1")).allowed
    assert await redis.keys("scai:*") == []


async def test_counting_is_atomic_under_concurrency(redis: Redis) -> None:
    rl = limiter(redis, per_key=5, per_user=7)
    decisions = await asyncio.gather(*(rl.check(api_key_id="k", user_id="u") for _ in range(20)))
    assert sum(d.allowed for d in decisions) == 5
    assert await redis.zcard(f"scai:{MODULE}:rl:api_key:k") == 5
    assert await redis.zcard(f"scai:{MODULE}:rl:user:u") == 5


async def _poll_until_allowed(rl: RateLimiter, deadline_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        decision = await rl.check(api_key_id="k")
        if decision.allowed:
            return time.monotonic()
        await asyncio.sleep(0.02)
    raise AssertionError("window never freed a slot")


async def test_window_slides(redis: Redis) -> None:
    rl = limiter(redis, window_s=1.0, per_key=2)
    first = await rl.check(api_key_id="k")
    t_first = time.monotonic()
    await asyncio.sleep(0.4)
    assert (await rl.check(api_key_id="k")).allowed
    refused = await rl.check(api_key_id="k")
    assert not refused.allowed
    assert refused.retry_after == 1
    assert refused.reset_epoch_s == pytest.approx(first.reset_epoch_s)
    assert first.reset_epoch_s is not None and refused.now_s is not None
    assert 0 < first.reset_epoch_s - refused.now_s <= 0.65

    freed_at = await _poll_until_allowed(rl, 2.0)
    # the slot frees when the first entry leaves, not when a fixed window restarts
    assert 0.9 <= freed_at - t_first <= 1.5
    # the second entry is still inside its window, so the slot just taken filled it again
    again = await rl.check(api_key_id="k")
    assert not again.allowed


async def test_failed_auth_ip_level(redis: Redis) -> None:
    rl = limiter(redis, per_ip=2, per_user=100)
    assert (await rl.peek_failed_auth("203.0.113.9")).allowed
    assert (await rl.check_failed_auth("203.0.113.9")).allowed
    decision = await rl.check_failed_auth("203.0.113.9")
    assert decision.allowed and decision.remaining == 0 and decision.level == "ip"
    refused = await rl.check_failed_auth("203.0.113.9")
    assert (refused.allowed, refused.level, refused.limit) == (False, "ip", 2)
    assert refused.to_error().to_dict()["limit_level"] == "ip"
    # peeking reports the block and counts nothing
    peek = await rl.peek_failed_auth("203.0.113.9")
    assert not peek.allowed
    assert await redis.zcard(f"scai:{MODULE}:rl:ip:203.0.113.9") == 2
    # other IPs and authenticated traffic are unaffected
    assert (await rl.check_failed_auth("2001:db8::1")).allowed
    assert (await rl.check(user_id="u")).allowed


async def test_redis_down_fails_open(local_redis: LocalRedis) -> None:
    client = Redis.from_url(local_redis.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    calls: list[int] = []
    rl = RateLimiter(client, MODULE, per_key=1, on_unavailable=lambda: calls.append(1))
    slots = StreamSlots(client, MODULE, cap=1, on_unavailable=lambda: calls.append(1))
    try:
        assert (await rl.check(api_key_id="k")).allowed
        assert not (await rl.check(api_key_id="k")).allowed
        local_redis.stop()
        with capture_logs() as logs:
            decision = await rl.check(api_key_id="k")
            failed = await rl.check_failed_auth("10.0.0.1")
            await slots.acquire("t1", "sess_a")
            await slots.acquire("t1", "sess_b")
        assert decision.allowed and decision.headers() == {}
        assert failed.allowed
        assert [e["event"] for e in logs] == ["ratelimit_unavailable"] * 4
        assert all(e["log_level"] == "warning" for e in logs)
        assert len(calls) == 4
    finally:
        await client.aclose()


async def test_unavailable_hook_accepts_a_prometheus_counter(local_redis: LocalRedis) -> None:
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry()
    counter = Counter("ratelimit_unavailable", "test", registry=registry)
    client = Redis.from_url(local_redis.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    local_redis.stop()
    try:
        rl = RateLimiter(client, MODULE, per_key=1, on_unavailable=counter)
        assert (await rl.check(api_key_id="k")).allowed
        assert registry.get_sample_value("ratelimit_unavailable_total") == 1.0
    finally:
        await client.aclose()


async def test_stream_slots_cap_release_and_heartbeat(redis: Redis) -> None:
    slots = StreamSlots(redis, MODULE, cap=2)
    await slots.acquire("t1", "sess_a")
    await slots.acquire("t1", "rtc_b")
    await slots.acquire("t1", "sess_a")  # idempotent for a held slot
    with pytest.raises(ScaiError) as info:
        await slots.acquire("t1", "sess_c")
    err = info.value
    assert (err.code, err.http_status) == ("RATE_LIMITED", 429)
    assert err.to_dict()["limit_level"] == "tenant_streams"
    assert err.to_dict()["limit"] == 2
    assert err.retry_after == 5
    await slots.acquire("t2", "sess_c")  # other tenants have their own cap
    await slots.release("t1", "sess_a")
    await slots.acquire("t1", "sess_c")
    assert await slots.count("t1") == 2

    key = slots.key("t1")
    await redis.zadd(key, {"rtc_b": 1})
    await slots.heartbeat("t1", "rtc_b")
    score = await redis.zscore(key, "rtc_b")
    assert score is not None and abs(score / 1000 - time.time()) < 5


async def test_stream_slots_prune_stale_sessions(redis: Redis) -> None:
    slots = StreamSlots(redis, MODULE, cap=2)
    key = slots.key("t1")
    now_ms = int(time.time() * 1000)
    # A crashed process left two sessions: one silent for 31 s, one heartbeating 5 s ago.
    await redis.zadd(key, {"sess_dead": now_ms - 31_000, "sess_live": now_ms - 5_000})
    assert await slots.count("t1") == 1
    await slots.acquire("t1", "sess_new")
    assert await redis.zscore(key, "sess_dead") is None
    with pytest.raises(ScaiError):
        await slots.acquire("t1", "sess_other")
    ttl = await redis.pttl(key)
    assert 0 < ttl <= 30_000
