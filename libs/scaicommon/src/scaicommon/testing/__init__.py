"""Test infrastructure for the workspace: real Postgres, Redis, S3 and service processes.

Loaded as a pytest plugin (entry point ``scaicommon``). Postgres and Redis come from
``SCAI_TEST_DATABASE_URL`` / ``SCAI_TEST_REDIS_URL`` when set, else from testcontainers
when a Docker engine answers, else from local binaries started in a temporary directory.
S3 is a MinIO container when Docker answers, else ``moto_server`` on 127.0.0.1.
"""

from scaicommon.testing.devstack import (
    DevServer,
    scaidrive_settings,
    start_scaidrive,
    start_scaikey,
)
from scaicommon.testing.processes import ManagedProcess, free_port, wait_http
from scaicommon.testing.services import (
    LocalRedis,
    S3Endpoint,
    docker_available,
    fresh_database,
    start_local_postgres,
)

__all__ = [
    "DevServer",
    "LocalRedis",
    "ManagedProcess",
    "S3Endpoint",
    "docker_available",
    "free_port",
    "fresh_database",
    "scaidrive_settings",
    "start_local_postgres",
    "start_scaidrive",
    "start_scaikey",
    "wait_http",
]
