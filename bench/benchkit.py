"""What the service benchmarks share: a real service process and the comparison table."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaicommon.testing import ManagedProcess, free_port, fresh_database
from scaicommon.testing.services import S3Endpoint, start_s3

RUNS = int(os.environ.get("SCAI_BENCH_RUNS", "8"))
RESULTS = Path(__file__).parent / "results"
TENANT = "tnt_bench"
USER = "usr_bench"


def summary(samples: list[float]) -> dict[str, float]:
    """Median, min and max in milliseconds."""
    return {
        "p50_ms": round(statistics.median(samples) * 1000, 1),
        "min_ms": round(min(samples) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
    }


@dataclass(frozen=True)
class BenchService:
    """A migrated, running service process and what it runs against."""

    module: str
    base: str
    env: dict[str, str]
    dsn: str
    s3: S3Endpoint

    def create_key(self, *permissions: str, roles: tuple[str, ...] = ()) -> str:
        """``python -m <module> apikeys create`` for the bench user; returns the key."""
        argv = [sys.executable, "-m", self.module, "apikeys", "create", "--tenant", TENANT,
                "--user", USER]  # fmt: skip
        for permission in permissions:
            argv += ["--permission", permission]
        for role in roles:
            argv += ["--role", role]
        done = subprocess.run(argv, env=self.env, check=True, capture_output=True, text=True)
        return str(json.loads(done.stdout)["key"])


@contextlib.contextmanager
def running_service(module: str, settings: Mapping[str, str]) -> Iterator[BenchService]:
    """``module`` migrated on a fresh database and serving, with ``settings`` (unprefixed).

    Postgres and Redis are the machine's (``SCAI_BENCH_DATABASE_URL`` /
    ``SCAI_BENCH_REDIS_URL``); S3 is a moto server.
    """
    admin = os.environ.get(
        "SCAI_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    redis_url = os.environ.get("SCAI_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    prefix = module.upper() + "_"
    with fresh_database(admin) as dsn, start_s3() as s3:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
        values = {
            "database_url": dsn,
            "redis_url": redis_url,
            "s3_endpoint_url": s3.url,
            "s3_access_key": s3.access_key,
            "s3_secret_key": s3.secret_key,
            "env": "development",
            "host": "127.0.0.1",
            "port": str(port),
            "log_level": "warning",
            **settings,
        }
        env.update({prefix + k.upper(): v for k, v in values.items()})
        subprocess.run(
            [sys.executable, "-m", module, "migrate"], env=env, check=True, capture_output=True
        )
        base = f"http://127.0.0.1:{port}"
        process = ManagedProcess(
            ["-m", module, "serve"], env=env, ready_url=f"{base}/healthz", name=module
        ).start()
        try:
            yield BenchService(module, base, env, dsn, s3)
        finally:
            process.stop()


def report(name: str, title: str, rows: dict[str, dict[str, float]], **extra: Any) -> float:
    """Print the http-vs-grpc table, write ``bench/results/<name>.json``; return the ratio."""
    ratio = round(rows["http"]["p50_ms"] / rows["grpc"]["p50_ms"], 3)
    print(f"{title}, {RUNS} runs each, {platform.machine()}")
    print(f"{'path':<8}{'p50 ms':>10}{'min ms':>10}{'max ms':>10}")
    for path, row in rows.items():
        print(f"{path:<8}{row['p50_ms']:>10.1f}{row['min_ms']:>10.1f}{row['max_ms']:>10.1f}")
    print(f"ratio http/grpc (p50) = {ratio}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    body = {"runs": RUNS, **extra, "results": rows, "ratio": ratio, "machine": platform.machine()}
    out.write_text(json.dumps(body, indent=2))
    print(f"written {out}")
    return ratio
