"""Redis sliding-window rate limiter and the per-tenant stream counter (platform §11).

One ZSET per level and subject, ``scai:{module}:rl:{level}:{subject}``, holds a fresh
server-generated ULID per counted request, scored by the Redis clock in milliseconds. A
single Lua script checks every applicable level at once, so a request is either counted
on all of them or on none. Redis being down never blocks traffic: the limiter fails open,
logs ``ratelimit_unavailable`` and bumps the metric hook.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from scaicommon.errors import ScaiError
from scaicommon.ids import new_ulid

log = structlog.get_logger("scaicommon.ratelimit")

#: Levels of an authenticated request, in reporting order (tie-break for the headers).
REQUEST_LEVELS = ("api_key", "user", "tenant", "partner")
#: Seconds after its last heartbeat at which a stream slot is pruned.
STREAM_STALE_AFTER_S = 30.0
#: Seconds a client is told to wait when the tenant's stream slots are full.
STREAM_RETRY_AFTER_S = 5

HEADER_LIMIT = "X-Scaigrid-Ratelimit-Limit"
HEADER_REMAINING = "X-Scaigrid-Ratelimit-Remaining"
HEADER_RESET = "X-Scaigrid-Ratelimit-Reset"

# KEYS: one ZSET per level. ARGV: window_ms, member, dry_run (0|1), then one limit per key.
# Returns {now_ms, full_index (0 = allowed), count_1, oldest_1, count_2, oldest_2, ...}.
_WINDOW_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local member = ARGV[2]
local dry = ARGV[3] == '1'
local counts = {}
local full = 0
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  counts[i] = redis.call('ZCARD', KEYS[i])
  if full == 0 and counts[i] >= tonumber(ARGV[3 + i]) then full = i end
end
if full == 0 and not dry then
  for i = 1, #KEYS do
    redis.call('ZADD', KEYS[i], now, member)
    redis.call('PEXPIRE', KEYS[i], window)
    counts[i] = counts[i] + 1
  end
end
local out = {now, full}
for i = 1, #KEYS do
  local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  out[#out + 1] = counts[i]
  if oldest[2] then out[#out + 1] = tonumber(oldest[2]) else out[#out + 1] = now end
end
return out
"""

# KEYS[1]: the tenant's stream ZSET. ARGV: stale_ms, cap, member.
# Returns {1, count} when the slot is held, {0, count} when the cap is reached.
_STREAM_ACQUIRE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - stale)
local count = redis.call('ZCARD', KEYS[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  if count >= tonumber(ARGV[2]) then return {0, count} end
  count = count + 1
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], stale)
return {1, count}
"""

# KEYS[1]: the tenant's stream ZSET. ARGV: stale_ms, member. Refreshes the heartbeat.
_STREAM_HEARTBEAT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""


class _Incrementable(Protocol):
    def inc(self, amount: float = 1) -> None: ...


#: Metric hook: a prometheus ``Counter`` (anything with ``inc()``) or a plain callable.
UnavailableHook = _Incrementable | Callable[[], object]


def _notify(hook: UnavailableHook | None) -> None:
    if hook is None:
        return
    inc = getattr(hook, "inc", None)
    if callable(inc):
        inc()
    elif callable(hook):
        hook()


@dataclass(frozen=True)
class LevelState:
    """One level's window after a check: its limit, how many entries, when the oldest leaves."""

    level: str
    limit: int
    count: int
    reset_epoch_s: float

    @property
    def remaining(self) -> int:
        """Free slots left in the window."""
        return max(0, self.limit - self.count)


@dataclass(frozen=True)
class Decision:
    """The outcome of a rate-limit check.

    ``level``, ``limit``, ``remaining`` and ``reset_epoch_s`` describe the full level on a
    refusal, else the level with the fewest remaining slots; they are ``None`` when no level
    applied (limiter off, every level 0, or Redis unavailable).
    """

    allowed: bool
    level: str | None = None
    limit: int | None = None
    remaining: int | None = None
    reset_epoch_s: float | None = None
    now_s: float | None = None
    levels: tuple[LevelState, ...] = ()

    @classmethod
    def unlimited(cls) -> Decision:
        """An allowed decision with no level and therefore no headers."""
        return cls(allowed=True)

    def headers(self) -> dict[str, str]:
        """The three ``X-Scaigrid-Ratelimit-*`` headers (empty when no level applied)."""
        if self.level is None or self.limit is None or self.reset_epoch_s is None:
            return {}
        return {
            HEADER_LIMIT: str(self.limit),
            HEADER_REMAINING: str(self.remaining or 0),
            HEADER_RESET: str(math.ceil(self.reset_epoch_s)),
        }

    @property
    def retry_after(self) -> int:
        """``max(1, ceil(reset - now))`` in seconds, measured on the limiter's clock."""
        if self.reset_epoch_s is None or self.now_s is None:
            return 1
        return max(1, math.ceil(self.reset_epoch_s - self.now_s))

    def to_error(self) -> ScaiError:
        """The ``429 RATE_LIMITED`` for a refusal, with ``Retry-After`` and the three headers."""
        retry = self.retry_after
        headers = {**self.headers(), "Retry-After": str(retry)}
        return ScaiError(
            "RATE_LIMITED",
            f"rate limit exceeded at the {self.level} level; retry in {retry} s",
            http_status=429,
            retry_after=retry,
            headers=headers,
            limit_level=self.level,
            limit=self.limit,
        )

    def raise_if_refused(self) -> Decision:
        """Raise :meth:`to_error` when refused; return ``self`` otherwise."""
        if not self.allowed:
            raise self.to_error()
        return self


class RateLimiter:
    """Sliding-window limiter over the levels of platform §11 for one module."""

    def __init__(
        self,
        redis: Redis,
        module: str,
        *,
        enabled: bool = True,
        window_s: float = 60.0,
        per_key: int = 60,
        per_user: int = 120,
        per_tenant: int = 1000,
        per_partner: int = 5000,
        per_ip: int = 120,
        on_unavailable: UnavailableHook | None = None,
    ) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self._redis = redis
        self._module = module
        self._enabled = enabled
        self._window_ms = max(1, round(window_s * 1000))
        self._limits = {
            "api_key": per_key,
            "user": per_user,
            "tenant": per_tenant,
            "partner": per_partner,
            "ip": per_ip,
        }
        self._on_unavailable = on_unavailable
        self._script = redis.register_script(_WINDOW_SCRIPT)

    @classmethod
    def from_settings(
        cls, redis: Redis, settings: Any, *, on_unavailable: UnavailableHook | None = None
    ) -> RateLimiter:
        """Build from a :class:`~scaicommon.settings.CommonSettings` (``rate_limit_*`` fields)."""
        return cls(
            redis,
            settings.MODULE,
            enabled=settings.rate_limit_enabled,
            window_s=settings.rate_limit_window_s,
            per_key=settings.rate_limit_per_key,
            per_user=settings.rate_limit_per_user,
            per_tenant=settings.rate_limit_per_tenant,
            per_partner=settings.rate_limit_per_partner,
            per_ip=settings.rate_limit_per_ip,
            on_unavailable=on_unavailable,
        )

    def key(self, level: str, subject: str) -> str:
        """The ZSET of one level and subject: ``scai:{module}:rl:{level}:{subject}``."""
        return f"scai:{self._module}:rl:{level}:{subject}"

    async def check(
        self,
        *,
        api_key_id: str | None = None,
        user_id: str | None = None,
        tenant_id: str | None = None,
        partner_id: str | None = None,
    ) -> Decision:
        """Count one authenticated request on every applicable level, or refuse it.

        A level applies when its limit is non-zero and its subject is known. Counting is
        all-or-nothing: a refused request is added to no level.
        """
        subjects = dict(
            zip(REQUEST_LEVELS, (api_key_id, user_id, tenant_id, partner_id), strict=True)
        )
        return await self._run([(lv, s) for lv, s in subjects.items() if s], dry_run=False)

    async def check_failed_auth(self, ip: str) -> Decision:
        """Count one failed authentication from ``ip`` on the IP level, or refuse it."""
        return await self._run([("ip", ip)], dry_run=False)

    async def peek_failed_auth(self, ip: str) -> Decision:
        """Whether ``ip`` is currently over its failed-auth limit, without counting anything.

        Lets the auth layer refuse a blocked IP before it even tries the presented key.
        """
        return await self._run([("ip", ip)], dry_run=True)

    async def _run(self, subjects: list[tuple[str, str]], *, dry_run: bool) -> Decision:
        if not self._enabled:
            return Decision.unlimited()
        levels = [(lv, s, self._limits[lv]) for lv, s in subjects if self._limits[lv] > 0]
        if not levels:
            return Decision.unlimited()
        keys = [self.key(lv, s) for lv, s, _ in levels]
        args: list[str | int] = [self._window_ms, new_ulid(), 1 if dry_run else 0]
        args += [limit for _, _, limit in levels]
        try:
            raw = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            log.warning("ratelimit_unavailable", module=self._module, error=type(exc).__name__)
            _notify(self._on_unavailable)
            return Decision.unlimited()
        now_ms, full = int(raw[0]), int(raw[1])
        states = tuple(
            LevelState(
                level=lv,
                limit=limit,
                count=int(raw[2 + 2 * i]),
                reset_epoch_s=(int(raw[3 + 2 * i]) + self._window_ms) / 1000,
            )
            for i, (lv, _, limit) in enumerate(levels)
        )
        # A refusal reports the full level; otherwise the fewest remaining (first wins a tie).
        report = states[full - 1] if full else min(states, key=lambda st: st.remaining)
        return Decision(
            allowed=full == 0,
            level=report.level,
            limit=report.limit,
            remaining=0 if full else report.remaining,
            reset_epoch_s=report.reset_epoch_s,
            now_s=now_ms / 1000,
            levels=states,
        )


class StreamSlots:
    """Per-tenant cap on open WebSocket/WebRTC sessions (``scai:{module}:streams:{tenant}``).

    Sessions call :meth:`heartbeat` every 10 s; entries older than 30 s are pruned, so a
    crashed process cannot leak slots. Redis being down fails open like the limiter.
    """

    def __init__(
        self,
        redis: Redis,
        module: str,
        cap: int,
        *,
        stale_after_s: float = STREAM_STALE_AFTER_S,
        on_unavailable: UnavailableHook | None = None,
    ) -> None:
        self._redis = redis
        self._module = module
        self._cap = cap
        self._stale_ms = max(1, round(stale_after_s * 1000))
        self._on_unavailable = on_unavailable
        self._acquire = redis.register_script(_STREAM_ACQUIRE_SCRIPT)
        self._heartbeat = redis.register_script(_STREAM_HEARTBEAT_SCRIPT)

    def key(self, tenant_id: str) -> str:
        """The tenant's stream ZSET."""
        return f"scai:{self._module}:streams:{tenant_id}"

    def _unavailable(self, op: str, exc: Exception) -> None:
        log.warning("ratelimit_unavailable", module=self._module, op=op, error=type(exc).__name__)
        _notify(self._on_unavailable)

    async def acquire(self, tenant_id: str, session_id: str) -> None:
        """Take a slot for ``session_id`` (idempotent); raise ``RATE_LIMITED`` over the cap.

        A cap of 0 or less disables the check.
        """
        if self._cap <= 0:
            return
        try:
            raw = await self._acquire(
                keys=[self.key(tenant_id)], args=[self._stale_ms, self._cap, session_id]
            )
        except (RedisError, OSError) as exc:
            self._unavailable("acquire", exc)
            return
        if int(raw[0]) == 0:
            raise ScaiError(
                "RATE_LIMITED",
                f"the tenant already has {self._cap} open streaming sessions",
                http_status=429,
                retry_after=STREAM_RETRY_AFTER_S,
                headers={"Retry-After": str(STREAM_RETRY_AFTER_S)},
                limit_level="tenant_streams",
                limit=self._cap,
            )

    async def heartbeat(self, tenant_id: str, session_id: str) -> None:
        """Refresh the session's score (re-adds it when it was pruned)."""
        if self._cap <= 0:
            return
        try:
            await self._heartbeat(keys=[self.key(tenant_id)], args=[self._stale_ms, session_id])
        except (RedisError, OSError) as exc:
            self._unavailable("heartbeat", exc)

    async def release(self, tenant_id: str, session_id: str) -> None:
        """Free the session's slot (a no-op when it is not held)."""
        try:
            await self._redis.zrem(self.key(tenant_id), session_id)
        except (RedisError, OSError) as exc:
            self._unavailable("release", exc)

    async def count(self, tenant_id: str) -> int:
        """Live sessions of the tenant (entries past the stale age excluded)."""
        seconds, micros = await self._redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return int(
            await self._redis.zcount(self.key(tenant_id), now_ms - self._stale_ms + 1, "+inf")
        )
