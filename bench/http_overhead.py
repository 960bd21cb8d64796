"""What the shared HTTP layer costs per request, against a real ScaiEcho process.

Starts ScaiEcho (Hypercorn) and dev ScaiKey against the Postgres and Redis of the machine
(``SCAI_BENCH_DATABASE_URL`` / ``SCAI_BENCH_REDIS_URL``, default 127.0.0.1) and moto S3,
then times sequential requests:

- ``healthz``: no auth, no I/O: the floor (Hypercorn + middleware);
- ``api_key``: an ``sgk_`` key (cached lookup) + the Redis rate-limit script, answered 404;
- ``jwt``: a ScaiKey JWT (RS256 verify) + the rate-limit script, answered 404.

Prints a table and writes ``bench/results/http_overhead.json``. Run with ``make bench``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from benchkit import RESULTS, TENANT, USER, running_service

from scaicommon.testing import start_scaikey
from scaidevstack.scaikey import KeyStore

REQUESTS = int(os.environ.get("SCAI_BENCH_REQUESTS", "2000"))
WARMUP = 200


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99 and mean in milliseconds."""
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "p50_ms": round(pick(0.50), 3),
        "p95_ms": round(pick(0.95), 3),
        "p99_ms": round(pick(0.99), 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


def timed(client: httpx.Client, url: str, headers: dict[str, str], expect: int) -> list[float]:
    """Sequential request latencies (seconds); every answer must have status ``expect``."""
    for _ in range(WARMUP):
        client.get(url, headers=headers)
    samples = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        response = client.get(url, headers=headers)
        samples.append(time.perf_counter() - start)
        if response.status_code != expect:
            raise SystemExit(f"{url}: expected {expect}, got {response.status_code}")
    return samples


def main() -> int:
    """Run the benchmark and print the table."""
    state = Path(tempfile.mkdtemp(prefix="scai-bench-"))
    scaikey = start_scaikey(state)
    settings = {
        "scaikey_base_url": scaikey.base_url,
        "rate_limit_per_key": "0",
        "rate_limit_per_user": "1000000",
        "rate_limit_per_tenant": "1000000",
    }
    try:
        with running_service("scaiecho", settings) as service:
            key = service.create_key(roles=("tenant_admin",))
            jwt = KeyStore(state).mint(
                tenant=TENANT, user=USER, roles=["tenant_admin"], issuer_base=scaikey.base_url
            )
            with httpx.Client(base_url=service.base) as client:
                rows = {
                    "healthz": timed(client, "/healthz", {}, 200),
                    "api_key": timed(
                        client, "/v1/modules/scaiecho/nope", {"Authorization": f"Bearer {key}"}, 404
                    ),
                    "jwt": timed(
                        client, "/v1/modules/scaiecho/nope", {"Authorization": f"Bearer {jwt}"}, 404
                    ),
                }
    finally:
        scaikey.stop()
    table = {name: percentiles(samples) for name, samples in rows.items()}
    floor = table["healthz"]["p50_ms"]
    print(f"HTTP layer, {REQUESTS} sequential requests each, one client, {platform.machine()}")
    print(
        f"{'path':<10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'+p50 vs hz':>13}"
    )
    for name, row in table.items():
        extra = row["p50_ms"] - floor
        print(
            f"{name:<10}{row['p50_ms']:>10.3f}{row['p95_ms']:>10.3f}{row['p99_ms']:>10.3f}"
            f"{row['mean_ms']:>10.3f}{extra:>13.3f}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "http_overhead.json"
    out.write_text(json.dumps({"requests": REQUESTS, "results": table}, indent=2))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
