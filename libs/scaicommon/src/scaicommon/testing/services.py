"""Postgres, Redis and S3 for tests: from env, from Docker, or from local binaries."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from scaicommon.testing.processes import ManagedProcess, free_port, wait_http


def docker_available() -> bool:
    """Whether a Docker engine answers (the switch for testcontainers)."""
    try:
        import docker

        client: Any = docker.from_env()
        client.ping()
        return True
    except Exception:
        return False


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@contextmanager
def fresh_database(admin_dsn: str) -> Iterator[str]:
    """Create an empty database on the server of ``admin_dsn``; drop it afterwards."""
    name = "scai_t_" + secrets.token_hex(6)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(admin_dsn, name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def pg_binary(tool: str) -> str:
    """Path of a PostgreSQL server binary (newest installed version first)."""
    found = shutil.which(tool)
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), reverse=True)
    if candidates:
        return candidates[0]
    if found:
        return found
    raise RuntimeError(f"{tool} not found: install PostgreSQL or set SCAI_TEST_DATABASE_URL")


class LocalPostgres:
    """A PostgreSQL cluster under ``root`` (created on first start) on ``port``.

    initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user.
    """

    def __init__(self, root: Path, port: int, *, durable: bool = True) -> None:
        self.root = root
        self.port = port
        self.durable = durable
        self._prefix: list[str] = []

    @property
    def admin_dsn(self) -> str:
        """DSN of the ``postgres`` database as the ``postgres`` superuser."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._prefix, pg_binary(tool), *args], check=True, capture_output=True)

    def start(self) -> LocalPostgres:
        """Create the cluster when missing, then start it and wait until it accepts."""
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres")
            self._prefix = ["runuser", "-u", "postgres", "--"]
        data = self.root / "data"
        if not data.exists():
            self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        if not self.durable:
            opts += " -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(data),
            "-o",
            opts,
            "-w",
            "start",
            "-l",
            str(self.root / "server.log"),
        )
        return self

    def stop(self) -> None:
        """Stop the server at once."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop")


@contextmanager
def start_local_postgres() -> Iterator[str]:
    """A throw-away cluster in a temp dir on a free port; yields an admin DSN."""
    root = Path(tempfile.mkdtemp(prefix="scai-pg-"))
    server = LocalPostgres(root, free_port(), durable=False).start()
    try:
        yield server.admin_dsn
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


class LocalRedis:
    """A private ``redis-server`` on a free port that a test may stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="scai-redis-"))
        self._proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> LocalRedis:
        """Start (or restart) the server and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: install Redis or set SCAI_TEST_REDIS_URL")
        self._proc = ManagedProcess(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            python=False,
            name="redis",
        ).start()
        import redis

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return self
            except redis.RedisError:
                time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        """Stop the server."""
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass(frozen=True)
class S3Endpoint:
    """An S3-compatible endpoint for tests."""

    url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


@contextmanager
def start_s3() -> Iterator[S3Endpoint]:
    """MinIO in a container when Docker answers, else ``moto_server`` on 127.0.0.1."""
    if docker_available():
        from testcontainers.minio import MinioContainer

        with MinioContainer() as minio:
            config = minio.get_config()
            yield S3Endpoint(
                url=f"http://{config['endpoint']}",
                access_key=config["access_key"],
                secret_key=config["secret_key"],
            )
        return
    port = free_port()
    moto = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    proc = ManagedProcess([moto, "-H", "127.0.0.1", "-p", str(port)], python=False, name="moto")
    proc.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/", timeout=30)
        yield S3Endpoint(url=f"http://127.0.0.1:{port}", access_key="testing", secret_key="testing")
    finally:
        proc.stop()


@contextmanager
def start_postgres() -> Iterator[str]:
    """An admin DSN: env, then a container, then local binaries."""
    env = os.environ.get("SCAI_TEST_DATABASE_URL")
    if env:
        yield env
        return
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as pg:
            yield pg.get_connection_url()
        return
    with start_local_postgres() as dsn:
        yield dsn


@contextmanager
def start_redis() -> Iterator[str]:
    """A Redis URL: env, then a container, then a local ``redis-server``."""
    env = os.environ.get("SCAI_TEST_REDIS_URL")
    if env:
        yield env
        return
    if docker_available():
        from testcontainers.redis import RedisContainer

        with RedisContainer() as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
        return
    local = LocalRedis().start()
    try:
        yield local.url
    finally:
        local.close()
