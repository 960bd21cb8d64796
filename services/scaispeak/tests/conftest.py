"""ScaiSpeak served in the test's loop against real Postgres, Redis, S3, a real dev node (A and
its relay API as B), dev ScaiKey and dev ScaiDrive."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from scaicommon.testing import DevServer, S3Endpoint, fresh_database, start_scaidrive, start_scaikey
from scaicommon.testing.inprocess import ServiceEnv, running_service
from scaidevstack.node.testing import NodeProcess, start_node
from scaidevstack.scaikey import KeyStore
from scaispeak.app import DEFINITION

RELAY_KEY = "sk-devstack"
ALL_KEYS = (
    "scaispeak:synthesize",
    "scaispeak:voice.read",
    "scaispeak:voice.write",
    "scaispeak:voice.share",
)


class SpeakEnv(ServiceEnv):
    """A running ScaiSpeak; keys default to every non-admin permission."""

    DEFAULT_PERMISSIONS = ALL_KEYS
    ENGINE_KIND = "audio.synthesize"


@contextlib.asynccontextmanager
async def running_speak(
    dsn: str, redis_url: str, s3: S3Endpoint, **overrides: Any
) -> AsyncIterator[SpeakEnv]:
    """Migrate ``dsn`` and serve ScaiSpeak with ``overrides`` applied to its settings."""
    async with running_service(
        DEFINITION, dsn, redis_url, s3, env_type=SpeakEnv, **overrides
    ) as env:
        yield env


def with_node(node: NodeProcess, *, cloning_relay: bool = True) -> dict[str, Any]:
    """Settings overrides: the dev node as A and its relay API as B (which clones)."""
    return {
        "nodes": [node.grpc_target],
        "relay_base_url": node.http_url,
        "relay_api_key": RELAY_KEY,
        "relay_supports_cloning": cloning_relay,
    }


@pytest.fixture(scope="session")
def tts_node() -> Iterator[NodeProcess]:
    """One real dev node (text-to-speech and speech-to-text) for the whole session."""
    node = start_node(engines=("tts", "stt"), env={"DEVSTACK_RELAY_API_KEY": RELAY_KEY})
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def scaikey_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DevServer, KeyStore]]:
    """Dev ScaiKey (JWT issuer, JWKS, token exchange) and its key store."""
    state = tmp_path_factory.mktemp("scaikey")
    server = start_scaikey(state)
    try:
        yield server, KeyStore(state)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def scaidrive_server(
    tmp_path_factory: pytest.TempPathFactory, scaikey_server: tuple[DevServer, KeyStore]
) -> Iterator[DevServer]:
    """Dev ScaiDrive trusting the dev ScaiKey."""
    state: Path = tmp_path_factory.mktemp("scaidrive")
    server = start_scaidrive(state, scaikey_url=scaikey_server[0].base_url)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def speak_with_node(
    pg_admin_dsn: str, redis_server_url: str, s3_endpoint: S3Endpoint, tts_node: NodeProcess
) -> AsyncIterator[SpeakEnv]:
    """ScaiSpeak (own database, flushed shared Redis) with the dev node as A and its relay as B."""
    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    client.close()
    with fresh_database(pg_admin_dsn) as dsn:
        async with running_speak(dsn, redis_server_url, s3_endpoint, **with_node(tts_node)) as env:
            await env.wait_for_node()
            yield env


@pytest.fixture
async def speak_bare(
    pg_dsn: str, redis_url: str, s3_endpoint: S3Endpoint
) -> AsyncIterator[SpeakEnv]:
    """ScaiSpeak without nodes, relay or ScaiDrive."""
    async with running_speak(pg_dsn, redis_url, s3_endpoint) as env:
        yield env
