"""Both services as real processes against real Postgres, Redis, S3 and dev ScaiKey."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scaicommon.testing import (
    DevServer,
    LocalRedis,
    ManagedProcess,
    S3Endpoint,
    free_port,
    fresh_database,
    start_scaikey,
)
from scaidevstack.scaikey import KeyStore

MODULES = ("scaiecho", "scaispeak")


@dataclass
class ScaiKey:
    """The dev ScaiKey server and its key store (to mint tokens directly)."""

    server: DevServer
    keys: KeyStore
    state_dir: Path

    @property
    def url(self) -> str:
        """Base URL, also the issuer prefix."""
        return self.server.base_url

    def mint(self, **kwargs: object) -> str:
        """A user JWT signed by the server's current key."""
        return self.keys.mint(issuer_base=self.url, **kwargs)  # type: ignore[arg-type]


@dataclass
class Service:
    """A running service (``python -m <module> serve``) and how to reach it."""

    module: str
    env: dict[str, str]
    port: int
    process: ManagedProcess | None = None
    workers: list[ManagedProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Base URL without the mount prefix."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def mount(self) -> str:
        """Base URL with the mount prefix."""
        return f"{self.url}/v1/modules/{self.module}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``python -m <module> ...`` with the service's environment."""
        done = subprocess.run(
            [sys.executable, "-m", self.module, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{self.module} {args} -> {done.returncode}: {done.stderr}")
        return done

    def start(self) -> Service:
        """Start ``serve`` and wait until ``/readyz`` answers."""
        self.process = ManagedProcess(
            ["-m", self.module, "serve"],
            env=self.env,
            ready_url=f"{self.url}/healthz",
            name=self.module,
        ).start()
        return self

    def stop(self) -> None:
        """Stop the API and any worker."""
        for proc in [*self.workers, *([self.process] if self.process else [])]:
            proc.stop()


def service_env(
    module: str,
    *,
    dsn: str,
    redis_url: str,
    s3: S3Endpoint,
    scaikey_url: str,
    port: int,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a service process in these tests."""
    p = module.upper()
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCAIECHO_", "SCAISPEAK_"))}
    env.update(
        {
            f"{p}_ENV": "development",
            f"{p}_HOST": "127.0.0.1",
            f"{p}_PORT": str(port),
            f"{p}_WORKER_HTTP_PORT": str(free_port()),
            f"{p}_DATABASE_URL": dsn,
            f"{p}_REDIS_URL": redis_url,
            f"{p}_S3_ENDPOINT_URL": s3.url,
            f"{p}_S3_ACCESS_KEY": s3.access_key,
            f"{p}_S3_SECRET_KEY": s3.secret_key,
            f"{p}_SCAIKEY_BASE_URL": scaikey_url,
            f"{p}_LOG_FORMAT": "json",
            **(extra or {}),
        }
    )
    return env


@pytest.fixture(scope="session")
def scaikey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaiKey]:
    """Dev ScaiKey as a real process."""
    state = tmp_path_factory.mktemp("scaikey")
    server = start_scaikey(state)
    try:
        yield ScaiKey(server, KeyStore(state), state)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def session_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """One database for the whole integration session."""
    with fresh_database(pg_admin_dsn) as dsn:
        yield dsn


@pytest.fixture(scope="module")
def private_redis() -> Iterator[LocalRedis]:
    """A Redis that tests may stop and start again."""
    server = LocalRedis().start()
    try:
        yield server
    finally:
        server.close()


def make_service(
    module: str,
    *,
    dsn: str,
    redis_url: str,
    s3: S3Endpoint,
    scaikey: ScaiKey,
    extra: dict[str, str] | None = None,
) -> Service:
    """Migrate and start one service."""
    port = free_port()
    env = service_env(
        module, dsn=dsn, redis_url=redis_url, s3=s3, scaikey_url=scaikey.url, port=port, extra=extra
    )
    service = Service(module, env, port)
    service.cli("migrate")
    return service.start()


@pytest.fixture(scope="module")
def echo(
    session_dsn: str, private_redis: LocalRedis, s3_endpoint: S3Endpoint, scaikey: ScaiKey
) -> Iterator[Service]:
    """ScaiEcho with a per-key rate limit of 5 and its own Redis."""
    service = make_service(
        "scaiecho",
        dsn=session_dsn,
        redis_url=private_redis.url,
        s3=s3_endpoint,
        scaikey=scaikey,
        extra={"SCAIECHO_RATE_LIMIT_PER_KEY": "5"},
    )
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def speak(
    session_dsn: str, redis_server_url: str, s3_endpoint: S3Endpoint, scaikey: ScaiKey
) -> Iterator[Service]:
    """ScaiSpeak on the shared Redis."""
    service = make_service(
        "scaispeak", dsn=session_dsn, redis_url=redis_server_url, s3=s3_endpoint, scaikey=scaikey
    )
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def repo_root() -> Path:
    """The repository root."""
    return Path(__file__).resolve().parents[2]
