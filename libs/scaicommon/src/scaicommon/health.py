"""Liveness and readiness (platform §12.1)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

CHECK_TIMEOUT_S = 2.0
CACHE_S = 5.0
CRITICAL = frozenset({"database", "redis"})


@dataclass(frozen=True)
class CheckResult:
    """One readiness check: ``status`` (``ok``, ``error``, ``none``, …) and an optional reason."""

    status: str
    error: str | None = None


Check = Callable[[], Awaitable[CheckResult]]


async def _run(name: str, check: Check) -> tuple[str, CheckResult]:
    try:
        return name, await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except TimeoutError:
        return name, CheckResult("error", f"{name} check timed out")
    except Exception as exc:
        return name, CheckResult("error", f"{type(exc).__name__}")


class Readiness:
    """Runs the checks concurrently (2 s each) and caches the answer for 5 s.

    Only ``database`` or ``redis`` in ``error`` makes the service not ready.
    """

    def __init__(
        self,
        module: str,
        version: str,
        phase: str,
        checks: Mapping[str, Check],
        *,
        cache_s: float = CACHE_S,
    ) -> None:
        self.module = module
        self.version = version
        self.phase = phase
        self.checks = dict(checks)
        self.cache_s = cache_s
        self._cached: tuple[float, int, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def evaluate(self) -> tuple[int, dict[str, Any]]:
        """Return ``(http_status, body)``."""
        async with self._lock:
            now = time.monotonic()
            if self._cached and now - self._cached[0] < self.cache_s:
                return self._cached[1], self._cached[2]
            results = dict(await asyncio.gather(*(_run(n, c) for n, c in self.checks.items())))
            ready = all(results[n].status == "ok" for n in CRITICAL if n in results)
            body: dict[str, Any] = {
                "status": "ready" if ready else "not_ready",
                "module": self.module,
                "phase": self.phase,
                "version": self.version,
                "checks": {n: r.status for n, r in results.items()},
                "errors": {n: r.error or n for n, r in results.items() if r.status != "ok"},
            }
            status = 200 if ready else 503
            self._cached = (now, status, body)
            return status, body
