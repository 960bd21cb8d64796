"""The node registry (platform §6) against real devstack nodes and a private Redis.

Margins are small (poll 0.25 s, warning after 1 s, stale after 2 s) so the tiers move in a few
seconds. Node A carries ``stt,speaker`` and node B ``stt`` (capacity 1 each): only A offers
``diarization`` on ``audio.transcribe`` and only A has ``audio.analyze.pyannote``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaicommon.errors import ScaiError
from scaicommon.grpcclient import BoundStub, NodeStream
from scaicommon.metrics import ServiceMetrics
from scaicommon.nodepoller import Discovery, NodePoller, NodeStack
from scaicommon.nodes import (
    INDEX_KEY,
    LEASE_KEY,
    NodeInfo,
    NodeRegistry,
    endpoint_key,
    node_key,
    now_ms,
)
from scaicommon.policy import Policy, resolve_backend
from scaicommon.principal import ModulePermissions
from scaicommon.relay import RelayClient
from scaicommon.runtime import Runtime, ServiceSpec
from scaicommon.settings import CommonSettings
from scaicommon.testing import LocalRedis, S3Endpoint, free_port
from scaicommon.testing.nodes import DevNode, start_nodes
from scaicommon.warm import WarmRegistry

T = TypeVar("T")
STT = "audio.transcribe"
SPK = "audio.analyze.pyannote"
INTERVAL, WARN, STALE = 0.25, 1.0, 2.0
HASH_FIELDS = {
    "node_id", "endpoint", "version", "api_version", "engines", "engine_kinds", "models_loaded",
    "inflight", "capacity", "load", "draining", "started_at", "last_heartbeat_at",
    "first_seen_at",
}  # fmt: skip


class NodeTestSettings(CommonSettings, kw_only=True):
    ENV_PREFIX = "SCAITEST"
    MODULE = "scaitest"


def settings_for(endpoints: list[str], **overrides: Any) -> NodeTestSettings:
    values: dict[str, Any] = {
        "nodes": endpoints,
        "node_poll_interval_s": INTERVAL,
        "node_warn_after_s": WARN,
        "node_stale_after_s": STALE,
    }
    values.update(overrides)
    return NodeTestSettings(**values)


async def eventually(check: Callable[[], Awaitable[T | None]], within: float = 15.0) -> T:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[DevNode, DevNode]]:
    a = DevNode("node-a", engines="stt,speaker", capacity=1)
    b = DevNode("node-b", engines="stt", capacity=1)
    start_nodes([a, b])
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture
async def rds(local_redis: LocalRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(local_redis.url, socket_timeout=2, socket_connect_timeout=2)
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def stack_for(
    rds: aioredis.Redis, endpoints: list[str], *, run: bool = False, **overrides: Any
) -> AsyncIterator[NodeStack]:
    stack = NodeStack.from_settings(
        settings_for(endpoints, **overrides),
        rds,
        module="scaitest",
        metrics=ServiceMetrics("scaitest"),
    )
    if run:
        stack.start()
    try:
        yield stack
    finally:
        await stack.aclose()


async def node_of(registry: NodeRegistry, node_id: str) -> NodeInfo:
    node = await registry.get(node_id)
    assert node is not None, node_id
    return node


async def hold_stream_slot(stack: NodeStack, node: NodeInfo) -> NodeStream:
    """Open ``StreamTranscribe`` on ``node``: it holds an stt slot, idle, until cancelled."""
    stream = stack.client.stream("StreamTranscribe", node)
    await stream.write(pb.StreamTranscribeRequest(config=pb.StreamTranscribeConfig()))
    started = await stream.read()
    assert started is not None and started.WhichOneof("event") == "started"
    return stream


# ----- discovery ------------------------------------------------------------------------


async def test_discovery_static_and_dns() -> None:
    found = Discovery(["10.0.0.5:50051", " node-b:50051 ", "[fd00::5]:50051", "10.0.0.5:50051"])
    assert await found.endpoints() == ["10.0.0.5:50051", "node-b:50051", "[fd00::5]:50051"]
    for bad in ("node-b", "fd00::5:50051", "[fd00::5]", "[nope]:1", "host:0", "host:x"):
        with pytest.raises(ValueError):
            Discovery([bad])
    dns = Discovery(["10.0.0.5:1"], dns_name="localhost", dns_port=50055)
    assert "127.0.0.1:50055" in await dns.endpoints()
    assert all(e.startswith(("10.0.0.5", "127.", "[")) for e in await dns.endpoints())
    with capture_logs() as logs:
        broken = Discovery(["10.0.0.5:1"], dns_name="no-such-host.invalid")
        assert await broken.endpoints() == ["10.0.0.5:1"]
    assert any(e["event"] == "node_dns_failed" for e in logs)
    assert not Discovery().configured


# ----- poller ---------------------------------------------------------------------------


async def test_poll_writes_the_registry(pair: tuple[DevNode, DevNode], rds: aioredis.Redis) -> None:
    a, b = pair
    dead = f"127.0.0.1:{free_port()}"
    alias = f"localhost:{a.grpc_port}"  # the same node under a second endpoint
    async with stack_for(rds, [a.endpoint, b.endpoint, alias, dead]) as stack:
        with capture_logs() as logs:
            outcomes = await stack.poller.tick()
        assert outcomes is not None
        by_endpoint = {o.endpoint: o for o in outcomes}
        assert by_endpoint[a.endpoint].node_id == "node-a" and by_endpoint[a.endpoint].ok
        assert by_endpoint[alias].node_id == "node-a"
        assert not by_endpoint[dead].ok and by_endpoint[dead].node_id is None
        assert any(e["event"] == "node_id_collision" for e in logs)
        assert any(e["event"] == "node_poll_failed" and e["endpoint"] == dead for e in logs)

        raw = await rds.hgetall(node_key("node-b"))  # type: ignore[misc]
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        assert set(fields) == HASH_FIELDS
        assert fields["endpoint"] == b.endpoint and fields["api_version"] == "scaiinfer.v1"
        assert fields["engine_kinds"] == STT and fields["draining"] == "0"
        assert fields["capacity"] == "1" and fields["inflight"] == "0"
        assert 0 <= now_ms() - int(fields["last_heartbeat_at"]) < 5000
        ttl = await rds.ttl(node_key("node-b"))
        assert 10 * STALE - 2 <= ttl <= 10 * STALE
        assert await rds.get(endpoint_key(b.endpoint)) == b"node-b"
        assert await rds.smembers(INDEX_KEY) == {b"node-a", b"node-b"}  # type: ignore[misc]

        # Values are the node's own GetNodeInfo answer.
        info = await stack.client.bind(b.endpoint, timeout_s=2).GetNodeInfo(pb.GetNodeInfoRequest())
        node = await node_of(stack.registry, "node-b")
        assert node.started_at == info.started_at_unix_ms and node.health == "healthy"
        assert node.models_loaded == tuple(info.models_loaded)
        engine = node.engine(STT)
        assert engine is not None and engine.model == info.engines[0].model
        assert set(engine.capabilities) == set(info.engines[0].capabilities)
        assert node.has(STT, ["streaming"]) and not node.has(STT, ["diarization"])
        assert (await node_of(stack.registry, "node-a")).has(STT, ["diarization"])

        items = await stack.registry.listing()
        assert [i["node_id"] for i in items] == ["node-a", "node-b", None]
        never = items[-1]
        assert never["endpoint"] == dead and never["health"] == "stale"
        assert never["last_heartbeat_at"] is None and never["last_error"].startswith("UNAVAILABLE")
        item_b = items[1]
        assert set(item_b) == {
            "node_id", "endpoint", "health", "last_heartbeat_at", "engines", "models_loaded",
            "inflight", "capacity", "version", "load", "draining", "last_error",
        }  # fmt: skip
        assert item_b["engines"] == [
            {"kind": STT, "name": engine.name, "capabilities": list(engine.capabilities)}
        ]
        assert item_b["models_loaded"] == list(info.models_loaded)
        assert item_b["last_heartbeat_at"].endswith("Z") and item_b["draining"] is False
        assert [i["node_id"] for i in await stack.registry.listing(engine=SPK)] == ["node-a"]


async def test_lease_lets_one_process_poll_per_tick(
    pair: tuple[DevNode, DevNode], rds: aioredis.Redis
) -> None:
    a, b = pair
    async with stack_for(rds, [a.endpoint, b.endpoint]) as one:
        other = NodePoller(
            redis=rds,
            client=one.client,
            discovery=one.poller.discovery,
            interval_s=INTERVAL,
            stale_after_s=STALE,
            owner="other-process",
        )
        for _ in range(3):
            await eventually(lambda: _absent(rds, LEASE_KEY), within=2)
            first, second = await asyncio.gather(one.poller.tick(), other.tick())
            assert (first is None) != (second is None)
        assert one.poller.ticks_polled + other.ticks_polled == 3
        await eventually(lambda: _absent(rds, LEASE_KEY), within=2)
        assert await other.acquire_lease() and not await one.poller.acquire_lease()
        assert 0 < await rds.pttl(LEASE_KEY) <= INTERVAL * 800
        assert await rds.get(LEASE_KEY) == b"other-process"
        # The loser reads the same fresh state.
        assert {n.node_id for n in await one.registry.read()} == {"node-a", "node-b"}


async def _absent(rds: aioredis.Redis, key: str) -> bool:
    return not await rds.exists(key)


# ----- tiers, fan-out, resolve -----------------------------------------------------------


async def test_stopped_node_fails_fan_out_then_ages_to_stale(
    pair: tuple[DevNode, DevNode], rds: aioredis.Redis
) -> None:
    a, _b = pair
    spare = DevNode("node-spare", engines="speaker", capacity=1).start()
    try:
        async with stack_for(rds, [a.endpoint, spare.endpoint], run=True) as stack:
            registry = stack.registry

            async def both_healthy() -> bool:
                nodes = await registry.read()
                return len(nodes) == 2 and all(n.health == "healthy" for n in nodes)

            await eventually(both_healthy)
            spare.stop()

            # fan-out: the registry still lists the spare; its call fails, A's succeeds.
            async def list_speakers(stub: BoundStub, node: NodeInfo) -> int:
                answer = await stub.ListSpeakers(pb.ListSpeakersRequest(tenant_id="tnt_x"))
                return len(answer.speakers)

            result = await stack.client.fan_out(SPK, list_speakers, timeout_s=5)
            outcome = {r.node_id: r for r in result.results}
            assert set(outcome) == {"node-a", "node-spare"}
            assert outcome["node-a"].to_dict() == {
                "node_id": "node-a",
                "ok": True,
                "value": 0,
                "latency_ms": outcome["node-a"].latency_ms,
            }
            failed = outcome["node-spare"].to_dict()
            assert failed["ok"] is False and failed["error_code"] == "UNAVAILABLE"
            assert isinstance(failed["latency_ms"], int) and failed["error_message"]
            assert result.any_ok and not result.all_ok and result.ok_node_ids == ["node-a"]
            empty = await stack.client.fan_out("audio.synthesize", list_speakers)
            assert empty.results == () and not empty.any_ok and not empty.all_ok

            async def tier(expected: str) -> NodeInfo | None:
                node = await registry.get("node-spare")
                return node if node is not None and node.health == expected else None

            warning = await eventually(lambda: tier("warning"))
            assert warning.last_heartbeat_at is not None
            assert WARN * 1000 < now_ms() - warning.last_heartbeat_at <= STALE * 1000 + 500
            assert warning.last_error is not None and warning.last_error.startswith("UNAVAILABLE")
            # Healthy nodes first; the warning tier only when no healthy node is left.
            assert (await registry.resolve_audio_node(SPK)).node_id == "node-a"  # type: ignore[union-attr]
            fallback = await registry.resolve_audio_node(SPK, exclude=["node-a"])
            if fallback is not None:  # it may have turned stale in between
                assert fallback.node_id == "node-spare"

            stale = await eventually(lambda: tier("stale"))
            assert now_ms() - (stale.last_heartbeat_at or 0) > STALE * 1000
            assert await registry.resolve_audio_node(SPK, exclude=["node-a"]) is None
            picks = {
                (await registry.resolve_audio_node(SPK)).node_id  # type: ignore[union-attr]
                for _ in range(30)
            }
            assert picks == {"node-a"}
            assert [n.node_id for n in await registry.targets(SPK)] == ["node-a"]
            listed = {i["node_id"]: i for i in await registry.listing()}
            assert listed["node-spare"]["health"] == "stale"
            assert "node-spare" not in {
                i["node_id"] for i in await registry.listing(include_stale=False)
            }
            assert await registry.readiness([SPK]) == ("ok", None)
            assert stack.client.metrics is not None
            gauge = stack.client.metrics.nodes.labels(health="stale", engine_kind=SPK)
            await eventually(lambda: _gauge_is(gauge, 1.0))

            # A restart is a new started_at: warm entries recorded before it stop counting.
            warm = WarmRegistry(rds, "scaitest")
            await warm.record("speaker", "tnt_x", "spkr_1", stale)
            spare.start()
            back = await eventually(lambda: tier("healthy"))
            assert back.started_at != stale.started_at
            assert await warm.holders("speaker", "tnt_x", "spkr_1", registry=registry) == []
            await warm.record("speaker", "tnt_x", "spkr_1", back)
            assert await warm.holders("speaker", "tnt_x", "spkr_1", registry=registry) == [
                "node-spare"
            ]
    finally:
        spare.stop()


async def _gauge_is(gauge: Any, value: float) -> bool:
    return bool(gauge._value.get() == value)


async def test_busy_node_is_ranked_after_an_idle_one(
    pair: tuple[DevNode, DevNode], rds: aioredis.Redis
) -> None:
    a, b = pair
    async with stack_for(rds, [a.endpoint, b.endpoint], run=True) as stack:
        registry = stack.registry
        await eventually(lambda: _count(registry, 2))
        node_a = await node_of(registry, "node-a")
        stream = await hold_stream_slot(stack, node_a)
        try:

            async def a_busy() -> NodeInfo | None:
                node = await registry.get("node-a")
                engine = node.engine(STT) if node else None
                return node if engine and engine.inflight == 1 and engine.capacity == 1 else None

            busy = await eventually(a_busy)
            assert busy.ratio(STT) == 1.0 and busy.inflight == 1
            picks = [await registry.resolve_audio_node(STT) for _ in range(25)]
            assert {p.node_id for p in picks if p} == {"node-b"}
            # At capacity, but the best left: still returned (the node decides, §6.5).
            only = await registry.resolve_audio_node(STT, exclude=["node-b"])
            assert only is not None and only.node_id == "node-a"
            # Capabilities filter: only A offers diarization on audio.transcribe.
            diar = await registry.resolve_audio_node(STT, capabilities=["diarization"])
            assert diar is not None and diar.node_id == "node-a"
            assert await registry.resolve_audio_node(STT, capabilities=["cloning"]) is None
        finally:
            stream.cancel()

        async def a_idle() -> bool:
            node = await registry.get("node-a")
            engine = node.engine(STT) if node else None
            return bool(engine and engine.inflight == 0)

        await eventually(a_idle)
        picks = [await registry.resolve_audio_node(STT) for _ in range(40)]
        assert {p.node_id for p in picks if p} == {"node-a", "node-b"}  # random tie-break


async def _count(registry: NodeRegistry, n: int) -> bool:
    return len(await registry.read()) == n


async def test_draining_node_is_excluded(
    pair: tuple[DevNode, DevNode], rds: aioredis.Redis
) -> None:
    a, _b = pair
    spare = DevNode("node-drain", engines="stt", capacity=1, grace_period_s=60).start()
    try:
        async with stack_for(rds, [a.endpoint, spare.endpoint], run=True) as stack:
            registry = stack.registry
            await eventually(lambda: _count(registry, 2))
            stream = await hold_stream_slot(stack, await node_of(registry, "node-drain"))
            try:
                spare.signal()  # SIGTERM: drain while the stream keeps its slot

                async def draining() -> NodeInfo | None:
                    node = await registry.get("node-drain")
                    return node if node and node.draining and node.health == "healthy" else None

                await eventually(draining)
                picks = [await registry.resolve_audio_node(STT) for _ in range(20)]
                assert {p.node_id for p in picks if p} == {"node-a"}
                assert await registry.resolve_audio_node(STT, exclude=["node-a"]) is None
                assert [n.node_id for n in await registry.targets(STT)] == ["node-a"]
                listed = {i["node_id"]: i for i in await registry.listing()}
                assert listed["node-drain"]["draining"] is True
                assert listed["node-drain"]["health"] == "healthy"
            finally:
                stream.cancel()
            assert spare.process is not None and spare.process.proc is not None
            await asyncio.to_thread(spare.process.proc.wait, 30)
    finally:
        spare.stop()


async def test_redis_down_gives_no_node(
    pair: tuple[DevNode, DevNode], local_redis: LocalRedis, rds: aioredis.Redis
) -> None:
    a, _b = pair
    async with stack_for(rds, [a.endpoint]) as stack:
        await stack.poller.tick()
        assert (await stack.registry.resolve_audio_node(STT)) is not None
        local_redis.stop()
        try:
            with capture_logs() as logs:
                assert await stack.registry.resolve_audio_node(STT) is None
                assert await stack.registry.targets(STT) == []
                assert await stack.poller.tick() is None  # no lease without Redis
            assert any(e["event"] == "node_registry_unreadable" for e in logs)
            assert await stack.registry.readiness([STT]) == ("none", "node registry unreadable")
        finally:
            local_redis.start()


# ----- resolver wiring ------------------------------------------------------------------


def _policy(allowed: str, default: str) -> Policy:
    now = datetime.now(UTC)
    return Policy("tnt_x", allowed, default, now, now)


async def test_resolve_backend_with_a_real_registry(
    pair: tuple[DevNode, DevNode], rds: aioredis.Redis
) -> None:
    a, b = pair
    relay = RelayClient(
        module="scaitest", base_url=a.relay_url, api_key="sk-devstack", model="whisper-1",
        user_agent="scaitest/0 scaicommon/0",
    )  # fmt: skip
    unconfigured = RelayClient(
        module="scaitest", base_url="", api_key="", model="", user_agent="scaitest/0"
    )
    try:
        async with stack_for(rds, [a.endpoint, b.endpoint]) as stack:
            await stack.poller.tick()
            resolver = stack.registry.node_resolver
            choice = await resolve_backend(
                _policy("AB", "B"),
                "prefer_self_hosted",
                module="scaitest",
                engine_kind=STT,
                capabilities=["diarization"],
                node_resolver=resolver,
                relay_usable=relay.usable,
                api_form="echo",
            )
            assert choice.backend == "A" and choice.node is not None
            assert choice.node.node_id == "node-a" and choice.fallbacks == ("B",)

            fallback = await resolve_backend(
                _policy("AB", "A"),
                None,
                module="scaitest",
                engine_kind=STT,
                capabilities=["cloning"],
                node_resolver=resolver,
                relay_usable=relay.usable,
                api_form="echo",
            )
            assert fallback.backend == "B" and fallback.node is None
            assert fallback.candidates == ({"backend": "A", "usable": False, "reason": "no_node"},)

            with pytest.raises(ScaiError) as err:
                await resolve_backend(
                    _policy("AB", "A"),
                    "prefer_relay",
                    module="scaitest",
                    engine_kind="audio.synthesize",
                    node_resolver=resolver,
                    relay_usable=unconfigured.usable,
                    api_form="speak",
                )
            assert err.value.code == "SCAITEST_BACKEND_UNAVAILABLE"
            assert err.value.extras["resolution"] == {
                "allowed_backends": ["A", "B"],
                "default_backend": "A",
                "preference": "prefer_relay",
                "candidates": [
                    {"backend": "B", "usable": False, "reason": "relay_unconfigured"},
                    {"backend": "A", "usable": False, "reason": "no_node"},
                ],
            }
    finally:
        await relay.aclose()
        await unconfigured.aclose()


# ----- warm registry --------------------------------------------------------------------


async def test_warm_registry_and_reconciler(
    pair: tuple[DevNode, DevNode], rds: aioredis.Redis
) -> None:
    a, b = pair
    async with stack_for(rds, [a.endpoint, b.endpoint]) as stack:
        await stack.poller.tick()
        node_a = await node_of(stack.registry, "node-a")
        warm = WarmRegistry(rds, "scaitest", ttl_s=100)
        await warm.record("speaker", "tnt_x", "spkr_1", node_a)
        key = warm.key("speaker", "tnt_x", "spkr_1")
        assert key == "scai:scaitest:warm:speaker:tnt_x:spkr_1"
        raw_value = await rds.hget(key, "node-a")  # type: ignore[misc]
        value = raw_value.decode()
        assert value.startswith(f"{node_a.started_at}:")
        assert 90 < await rds.ttl(key) <= 100
        assert await warm.holders("speaker", "tnt_x", "spkr_1", registry=stack.registry) == [
            "node-a"
        ]
        assert await warm.clear("speaker", "tnt_x", "spkr_1") == ["node-a"]
        assert not await rds.exists(key)

        await warm.add_pending("speaker", "tnt_x", "spkr_1", "node-a")
        await warm.add_pending("speaker", "tnt_x", "spkr_2", "node-gone")
        await warm.add_pending("speaker", "tnt_x", "spkr_3", "node-b")
        assert await rds.smembers(warm.pending_key) == {  # type: ignore[misc]
            b"speaker:tnt_x:spkr_1:node-a",
            b"speaker:tnt_x:spkr_2:node-gone",
            b"speaker:tnt_x:spkr_3:node-b",
        }
        since = warm.pending_since_key
        await rds.hset(since, "speaker:tnt_x:spkr_3:node-b", "1")  # type: ignore[misc]

        async def evict(node: NodeInfo, kind: str, tenant_id: str, item_id: str) -> bool | None:
            result = await stack.client.unary(
                "EvictSpeaker",
                pb.EvictSpeakerRequest(tenant_id=tenant_id, speaker_id=item_id),
                node=node,
                pin=True,
            )
            return bool(result.value.evicted)

        with capture_logs() as logs:
            report = await warm.reconcile(stack.registry, evict)
        assert (report.resolved, report.kept, report.dropped) == (1, 1, 1)
        assert any(e["event"] == "evict_pending_dropped" for e in logs)
        assert [p.member for p in await warm.pending()] == ["speaker:tnt_x:spkr_2:node-gone"]


# ----- runtime wiring -------------------------------------------------------------------


async def test_runtime_runs_the_poller_and_reports_readiness(
    pair: tuple[DevNode, DevNode],
    pg_dsn: str,
    local_redis: LocalRedis,
    s3_endpoint: S3Endpoint,
    tmp_path: Path,
) -> None:
    a, _b = pair
    spec = ServiceSpec(
        "scaitest", "0.0.1", ModulePermissions("scaitest", frozenset(), frozenset()), STT
    )
    settings = settings_for(
        [a.endpoint],
        database_url=pg_dsn,
        redis_url=local_redis.url,
        s3_endpoint_url=s3_endpoint.url,
        s3_access_key=s3_endpoint.access_key,
    )
    runtime = Runtime(spec, settings)
    await runtime.start()
    try:
        await eventually(lambda: _count(runtime.nodes, 1))
        status, body = await runtime.readiness.evaluate()
        assert status == 200
        assert body["checks"]["scaiinfer"] == "ok" and body["checks"]["relay"] == "unconfigured"
        assert runtime.relay.usable() == "relay_unconfigured"
        node = await runtime.nodes.resolve_audio_node(STT)
        assert node is not None and node.node_id == "node-a"
        answer = await runtime.node_client.unary("ListSpeakers", pb.ListSpeakersRequest())
        assert answer.node.node_id == "node-a" and list(answer.value.speakers) == []
    finally:
        await runtime.close()
