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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from scaicommon.testing import (
    ManagedProcess,
    free_port,
    fresh_database,
    start_scaikey,
)
from scaicommon.testing.services import start_s3
from scaidevstack.scaikey import KeyStore

REQUESTS = int(os.environ.get("SCAI_BENCH_REQUESTS", "2000"))
WARMUP = 200
RESULTS = Path(__file__).parent / "results"


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
    admin = os.environ.get(
        "SCAI_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    redis_url = os.environ.get("SCAI_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    state = Path(tempfile.mkdtemp(prefix="scai-bench-"))
    with fresh_database(admin) as dsn, start_s3() as s3:
        scaikey = start_scaikey(state)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCAIECHO_")}
        env.update(
            {
                "SCAIECHO_DATABASE_URL": dsn,
                "SCAIECHO_REDIS_URL": redis_url,
                "SCAIECHO_S3_ENDPOINT_URL": s3.url,
                "SCAIECHO_S3_ACCESS_KEY": s3.access_key,
                "SCAIECHO_S3_SECRET_KEY": s3.secret_key,
                "SCAIECHO_ENV": "development",
                "SCAIECHO_HOST": "127.0.0.1",
                "SCAIECHO_PORT": str(port),
                "SCAIECHO_SCAIKEY_BASE_URL": scaikey.base_url,
                "SCAIECHO_LOG_LEVEL": "warning",
                "SCAIECHO_RATE_LIMIT_PER_KEY": "0",
                "SCAIECHO_RATE_LIMIT_PER_USER": "1000000",
                "SCAIECHO_RATE_LIMIT_PER_TENANT": "1000000",
            }
        )
        subprocess.run(
            [sys.executable, "-m", "scaiecho", "migrate"], env=env, check=True, capture_output=True
        )
        created = subprocess.run(
            [
                sys.executable,
                "-m",
                "scaiecho",
                "apikeys",
                "create",
                "--tenant",
                "tnt_bench",
                "--user",
                "usr_bench",
                "--role",
                "tenant_admin",
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        key = json.loads(created.stdout)["key"]
        jwt = KeyStore(state).mint(
            tenant="tnt_bench",
            user="usr_bench",
            roles=["tenant_admin"],
            issuer_base=scaikey.base_url,
        )
        base = f"http://127.0.0.1:{port}"
        service = ManagedProcess(
            ["-m", "scaiecho", "serve"], env=env, ready_url=f"{base}/healthz", name="scaiecho"
        ).start()
        try:
            with httpx.Client(base_url=base) as client:
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
            service.stop()
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
