"""ScaiSpeak's extra readiness check: ScaiDrive (scaispeak.md §2)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from scaicommon.health import Check, CheckResult
from scaicommon.runtime import Runtime


def build_checks(runtime: Runtime) -> Mapping[str, Check]:
    """``scaidrive``: ``ok`` when it answers HTTP, ``unconfigured`` or ``error``."""

    async def scaidrive() -> CheckResult:
        base = runtime.settings.scaidrive_url.rstrip("/")
        if not base:
            return CheckResult("unconfigured", "SCAISPEAK_SCAIDRIVE_URL not set")
        try:
            # Any HTTP answer (401 without a token included) means ScaiDrive is reachable.
            await runtime.http.get(f"{base}/api/v1/users/me/shares", timeout=2.0)
        except httpx.HTTPError as exc:
            return CheckResult("error", f"scaidrive unreachable: {type(exc).__name__}")
        return CheckResult("ok")

    return {"scaidrive": scaidrive}
