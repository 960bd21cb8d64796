"""gRPC client conventions (platform §7) against real devstack nodes.

Nodes G1 and G2 carry ``stt,speaker`` with capacity 1; G2 requires ``x-api-secret``. The one
in-test gRPC server below exists only to read back the full metadata of §7.1 (the node logs
``x-request-id``, ``x-tenant-id`` and ``traceparent`` but not ``x-module``/``x-user-id``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaicommon._proto.scaiinfer.v1 import audio_node_pb2_grpc as pb_grpc
from scaicommon.grpcclient import (
    CHANNEL_OPTIONS,
    ChannelPool,
    NodeCallError,
    NodeClient,
    deadline_s,
    error_code_of,
    map_status,
    missing_speaker_ids_of,
    retry_after_ms_of,
)
from scaicommon.metrics import ServiceMetrics
from scaicommon.nodepoller import Discovery, NodePoller
from scaicommon.nodes import NodeInfo, NodeRegistry
from scaicommon.requestid import set_request_id
from scaicommon.testing import LocalRedis
from scaicommon.testing.nodes import DevNode, start_nodes
from scaicommon.tracing import build_tracer_provider
from scaidevstack.speechgen import piper_speech

SECRET = "node-secret-for-tests"
STT = "audio.transcribe"


@pytest.fixture(scope="module")
def nodes() -> Iterator[tuple[DevNode, DevNode]]:
    g1 = DevNode("node-g1", engines="stt,speaker", capacity=1)
    g2 = DevNode("node-g2", engines="stt,speaker", capacity=1, env={"SCAI_NODE_API_SECRET": SECRET})
    start_nodes([g1, g2])
    try:
        yield g1, g2
    finally:
        g1.stop()
        g2.stop()


@pytest.fixture(scope="module")
def speech() -> bytes:
    return piper_speech("Hello world, this is a short test.").astype(np.int16).tobytes()


def pcm(data: bytes) -> pb.AudioInput:
    return pb.AudioInput(data=data, pcm=pb.PcmSpec(sample_rate_hz=16000, channels=1))


class Env:
    def __init__(self, rds: aioredis.Redis, secret: str = SECRET) -> None:
        self.metrics = ServiceMetrics("scaitest")
        self.exporter = InMemorySpanExporter()
        provider = build_tracer_provider(
            "scaitest", "0", processor=SimpleSpanProcessor(self.exporter)
        )
        self.tracer = provider.get_tracer("test")
        self.registry = NodeRegistry(rds, warn_after_s=15, stale_after_s=45)
        self.channels = ChannelPool()
        self.client = NodeClient(
            module="scaitest",
            registry=self.registry,
            channels=self.channels,
            secret=secret,
            metrics=self.metrics,
            tracer=self.tracer,
        )
        self.rds = rds

    async def register(self, *endpoints: str) -> None:
        poller = NodePoller(
            redis=self.rds,
            client=self.client,
            discovery=Discovery(list(endpoints)),
            interval_s=5,
            stale_after_s=45,
        )
        await poller.tick()

    async def node(self, node_id: str) -> NodeInfo:
        node = await self.registry.get(node_id)
        assert node is not None
        return node

    def calls(self, rpc: str, code: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "scaitest_grpc_client_calls_total", {"rpc": rpc, "code": code}
        )
        return value or 0.0


@pytest.fixture
async def env(local_redis: LocalRedis) -> AsyncIterator[Env]:
    rds = aioredis.Redis.from_url(local_redis.url)
    made = Env(rds)
    yield made
    await made.channels.aclose()
    await rds.aclose()


# ----- pure conventions -------------------------------------------------------------------


def test_deadlines() -> None:
    assert deadline_s("GetNodeInfo", scale=3.0) == 2.0
    assert deadline_s("Transcribe", audio_ms=60_000) == 90.0
    assert deadline_s("Transcribe", audio_ms=3_600_000) == 900.0
    assert deadline_s("Diarize", audio_ms=60_000, scale=2.0) == 120.0
    assert deadline_s("Synthesize", chars=1000) == pytest.approx(90.0)
    assert deadline_s("Synthesize", chars=100_000) == 600.0
    assert deadline_s("EnrollSpeaker", scale=1.5) == 90.0 and deadline_s("EmbedSpeaker") == 60.0
    assert deadline_s("EvictVoice") == deadline_s("ListSpeakers") == 10.0
    assert deadline_s("StreamTranscribe") is None and deadline_s("StreamSynthesize") is None
    options = dict(CHANNEL_OPTIONS)
    assert options["grpc.max_send_message_length"] == 64 * 1024 * 1024
    assert options["grpc.max_receive_message_length"] == 64 * 1024 * 1024
    assert options["grpc.keepalive_time_ms"] == 20000
    assert options["grpc.keepalive_timeout_ms"] == 10000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.max_pings_without_data"] == 0


MAPPING = [
    (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR", 422),
    (grpc.StatusCode.OUT_OF_RANGE, "VALIDATION_ERROR", 422),
    (grpc.StatusCode.FAILED_PRECONDITION, "BACKEND_ERROR", 502),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "BACKEND_RATE_LIMITED", 429),
    (grpc.StatusCode.UNAVAILABLE, "SCAITEST_BACKEND_UNAVAILABLE", 502),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "BACKEND_TIMEOUT", 504),
    (grpc.StatusCode.UNAUTHENTICATED, "BACKEND_ERROR", 502),
    (grpc.StatusCode.PERMISSION_DENIED, "BACKEND_ERROR", 502),
    (grpc.StatusCode.NOT_FOUND, "BACKEND_ERROR", 502),
    (grpc.StatusCode.UNIMPLEMENTED, "BACKEND_ERROR", 502),
    (grpc.StatusCode.ALREADY_EXISTS, "BACKEND_ERROR", 502),
    (grpc.StatusCode.ABORTED, "BACKEND_ERROR", 502),
    (grpc.StatusCode.INTERNAL, "BACKEND_ERROR", 502),
    (grpc.StatusCode.UNKNOWN, "BACKEND_ERROR", 502),
    (grpc.StatusCode.DATA_LOSS, "BACKEND_ERROR", 502),
    (grpc.StatusCode.CANCELLED, "BACKEND_ERROR", 502),
]


@pytest.mark.parametrize(("status", "code", "http"), MAPPING)
def test_status_mapping_table(status: grpc.StatusCode, code: str, http: int) -> None:
    error = map_status(status, "detail", (), module="scaitest", node_id="n1")
    assert error.code == code and error.http_status == http and error.grpc_code == status.name
    assert error.failover_eligible == (status.name in ("UNAVAILABLE", "RESOURCE_EXHAUSTED"))
    body = error.to_dict()
    assert set(body) <= {"code", "message", "retry_after"}  # internals stay out of the body
    if code == "VALIDATION_ERROR":
        assert error.message == "backend rejected input: detail"


def test_retry_after_and_trailer_readers() -> None:
    trailers = (("x-error-code", "AT_CAPACITY"), ("retry-after-ms", "2300"))
    error = map_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", trailers, module="scaitest")
    assert error.retry_after == 3 and error.retry_after_ms == 2300
    assert error.error_code == "AT_CAPACITY"
    small = map_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "", (("retry-after-ms", "40"),), module="scaitest"
    )
    assert small.retry_after == 1
    assert map_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "", (), module="m").retry_after == 1
    assert error_code_of(None) is None and retry_after_ms_of((("retry-after-ms", "x"),)) is None
    assert missing_speaker_ids_of((("x-missing-speaker-ids", "spkr_a, spkr_b"),)) == [
        "spkr_a",
        "spkr_b",
    ]


async def test_channel_pool_closes_channels_missing_too_long() -> None:
    pool = ChannelPool(stale_after_s=10)
    first = pool.channel("127.0.0.1:1")
    assert pool.channel("127.0.0.1:1") is first
    pool.channel("[::1]:2")
    assert await pool.retain(["127.0.0.1:1"], at=100.0) == []
    assert await pool.retain(["127.0.0.1:1"], at=109.0) == []
    assert await pool.retain([], at=111.0) == ["[::1]:2"]  # missing since 100
    assert pool.endpoints == ["127.0.0.1:1"]
    assert await pool.retain(["127.0.0.1:1"], at=200.0) == []
    await pool.aclose()
    assert pool.endpoints == []


# ----- metadata -----------------------------------------------------------------------------


class Recorder(pb_grpc.AudioNodeServicer):
    """Records the inbound metadata of ListSpeakers (the only method it serves)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def ListSpeakers(self, request: Any, context: Any) -> Any:
        self.seen.append({k: v for k, v in context.invocation_metadata()})
        return pb.ListSpeakersResponse()


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, Recorder]]:
    server = grpc.aio.server()
    servicer = Recorder()
    pb_grpc.add_AudioNodeServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", servicer
    await server.stop(0)


async def test_metadata_on_every_call(
    recorder: tuple[str, Recorder], local_redis: LocalRedis
) -> None:
    endpoint, servicer = recorder
    rds = aioredis.Redis.from_url(local_redis.url)
    try:
        for secret in ("", "s3cret"):
            env = Env(rds, secret=secret)
            set_request_id(f"req_{'ab' * 12}")
            stub = env.client.bind(endpoint, timeout_s=2, tenant_id="tnt_1", user_id="usr_1")
            with env.tracer.start_as_current_span("dispatch"):
                await stub.ListSpeakers(pb.ListSpeakersRequest())
            await env.channels.aclose()
            seen = servicer.seen[-1]
            assert seen["x-tenant-id"] == "tnt_1" and seen["x-user-id"] == "usr_1"
            assert seen["x-request-id"] == f"req_{'ab' * 12}" and seen["x-module"] == "scaitest"
            assert ("x-api-secret" in seen) == bool(secret)
            if secret:
                assert seen["x-api-secret"] == secret
            spans = {s.name: s for s in env.exporter.get_finished_spans()}
            client_span = spans["scaiinfer.v1.AudioNode/ListSpeakers"]
            _, trace_id, span_id, _ = seen["traceparent"].split("-")
            assert trace_id == format(client_span.context.trace_id, "032x")
            assert span_id == format(client_span.context.span_id, "016x")
            assert client_span.parent is not None
            assert client_span.parent.span_id == spans["dispatch"].context.span_id
    finally:
        await rds.aclose()


async def test_node_logs_the_propagated_request_id(
    nodes: tuple[DevNode, DevNode], env: Env
) -> None:
    g1, _ = nodes
    await env.register(g1.endpoint)
    set_request_id("req_5eed0000000000000000c0de")
    with env.tracer.start_as_current_span("dispatch") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        with pytest.raises(NodeCallError) as err:
            await env.client.unary(
                "EvictSpeaker", pb.EvictSpeakerRequest(), tenant_id="tnt_logged", pin=True
            )
    assert err.value.code == "VALIDATION_ERROR" and err.value.error_code == "INVALID_PARAMETER"
    assert err.value.message.startswith("backend rejected input: ")
    pattern = (
        r"method=EvictSpeaker outcome=\S+ ms=\d+ request_id=req_5eed0000000000000000c0de"
        rf" tenant_id=tnt_logged traceparent=00-{trace_id}-"
    )

    async def logged() -> bool:
        return re.search(pattern, g1.log()) is not None

    for _ in range(50):
        if await logged():
            break
        await asyncio.sleep(0.05)
    assert await logged(), g1.log()[-2000:]


async def test_secret_is_required_by_a_node_that_sets_one(
    nodes: tuple[DevNode, DevNode], local_redis: LocalRedis
) -> None:
    _, g2 = nodes
    rds = aioredis.Redis.from_url(local_redis.url)
    with_secret, without = Env(rds), Env(rds, secret="")
    try:
        await with_secret.register(g2.endpoint)  # polling works with the secret
        node = await with_secret.node("node-g2")
        ok = await with_secret.client.unary("ListSpeakers", pb.ListSpeakersRequest(), node=node)
        assert ok.attempts == 1
        with pytest.raises(NodeCallError) as err:
            await without.client.unary("ListSpeakers", pb.ListSpeakersRequest(), node=node)
        assert err.value.code == "BACKEND_ERROR" and err.value.grpc_code == "UNAUTHENTICATED"
        assert without.calls("ListSpeakers", "UNAUTHENTICATED") == 1  # never retried
    finally:
        await with_secret.channels.aclose()
        await without.channels.aclose()
        await rds.aclose()


# ----- status mapping and retries against real nodes -----------------------------------------


async def test_node_errors_map_to_platform_errors(
    nodes: tuple[DevNode, DevNode], env: Env, speech: bytes
) -> None:
    g1, _ = nodes
    await env.register(g1.endpoint)
    node = await env.node("node-g1")

    with pytest.raises(NodeCallError) as err:
        await env.client.unary("EmbedSpeaker", pb.EmbedSpeakerRequest(audio=pcm(b"\x00" * 33)))
    assert err.value.code == "VALIDATION_ERROR" and err.value.error_code == "AUDIO_INVALID"
    assert env.calls("EmbedSpeaker", "INVALID_ARGUMENT") == 1

    # 6 MiB is over gRPC's 4 MiB default: the channel options let it through to the node.
    with pytest.raises(NodeCallError) as err:
        await env.client.unary(
            "EmbedSpeaker", pb.EmbedSpeakerRequest(audio=pcm(b"\x00\x01" * (3 * 1024 * 1024)))
        )
    assert err.value.error_code == "AUDIO_TOO_LONG"

    with pytest.raises(NodeCallError) as err:
        await env.client.unary(
            "Diarize",
            pb.DiarizeRequest(
                tenant_id="tnt_1", audio=pcm(speech), candidate_speaker_ids=["spkr_nope"]
            ),
            node=node,
        )
    assert err.value.code == "BACKEND_ERROR" and err.value.grpc_code == "FAILED_PRECONDITION"
    assert err.value.error_code == "SPEAKER_NOT_ENROLLED" and err.value.needs_resupply
    assert err.value.missing_speaker_ids == ["spkr_nope"]

    with pytest.raises(NodeCallError) as err:
        await env.client.unary(
            "Transcribe", pb.TranscribeRequest(audio=pcm(speech)), node=node, timeout_s=0.01
        )
    assert err.value.code == "BACKEND_TIMEOUT" and err.value.http_status == 504
    assert env.calls("Transcribe", "DEADLINE_EXCEEDED") == 1

    done = await env.client.unary("Transcribe", pb.TranscribeRequest(audio=pcm(speech)))
    assert "hello" in done.value.text.lower() and done.node.node_id == "node-g1"
    assert env.calls("Transcribe", "OK") == 1
    count = env.metrics.registry.get_sample_value(
        "scaitest_grpc_client_duration_seconds_count", {"rpc": "Transcribe"}
    )
    assert count == 2


async def test_cancelling_the_caller_is_not_mapped(
    nodes: tuple[DevNode, DevNode], env: Env, speech: bytes
) -> None:
    g1, _ = nodes
    await env.register(g1.endpoint)
    task = asyncio.create_task(
        env.client.unary("Transcribe", pb.TranscribeRequest(audio=pcm(speech * 4)))
    )
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # our side left: no platform error is made of it
    assert env.calls("Transcribe", "CANCELLED") == 1


async def test_capacity_retries_then_rate_limited(
    nodes: tuple[DevNode, DevNode], env: Env, speech: bytes
) -> None:
    g1, g2 = nodes
    await env.register(g1.endpoint, g2.endpoint)
    busy = await env.node("node-g1")
    stream = env.client.stream("StreamTranscribe", busy)
    await stream.write(pb.StreamTranscribeRequest(config=pb.StreamTranscribeConfig()))
    await stream.read()  # started: G1's only stt slot is taken
    try:
        request = pb.TranscribeRequest(audio=pcm(speech))
        moved = await env.client.unary("Transcribe", request, node=busy)
        assert moved.node.node_id == "node-g2" and moved.attempts == 2

        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(NodeCallError) as err:
            await env.client.unary("Transcribe", request, node=busy, pin=True)
        elapsed = loop.time() - started
        assert err.value.code == "BACKEND_RATE_LIMITED" and err.value.retry_after is not None
        assert err.value.retry_after >= 1 and err.value.error_code == "AT_CAPACITY"
        assert err.value.retry_after_ms is not None and err.value.failover_eligible
        assert env.calls("Transcribe", "RESOURCE_EXHAUSTED") == 1 + 3
        assert 0.5 < elapsed < 5  # backoffs of 200 ms and 800 ms, ±50 %
    finally:
        stream.cancel()


async def test_unavailable_node_retries_on_another(
    nodes: tuple[DevNode, DevNode], env: Env
) -> None:
    g1, _ = nodes
    spare = DevNode("node-gone", engines="speaker", capacity=1).start()
    try:
        await env.register(g1.endpoint, spare.endpoint)
        gone = await env.node("node-gone")
    finally:
        spare.stop()
    moved = await env.client.unary("ListSpeakers", pb.ListSpeakersRequest(), node=gone)
    assert moved.node.node_id == "node-g1" and moved.attempts == 2

    with pytest.raises(NodeCallError) as err:
        await env.client.unary("ListSpeakers", pb.ListSpeakersRequest(), node=gone, pin=True)
    assert err.value.code == "SCAITEST_BACKEND_UNAVAILABLE" and err.value.failover_eligible
    assert env.calls("ListSpeakers", "UNAVAILABLE") == 1 + 3

    # Not idempotent: a streaming RPC is never retried by this layer.
    stream = env.client.stream("StreamTranscribe", gone)
    with pytest.raises(NodeCallError) as err:
        await stream.write(pb.StreamTranscribeRequest(config=pb.StreamTranscribeConfig()))
        await stream.read()
    assert err.value.grpc_code == "UNAVAILABLE"


async def test_no_node_at_all(env: Env) -> None:
    with pytest.raises(NodeCallError) as err:
        await env.client.unary("ListSpeakers", pb.ListSpeakersRequest())
    assert err.value.code == "SCAITEST_BACKEND_UNAVAILABLE"


# ----- streams ------------------------------------------------------------------------------


async def test_stream_errors_and_gap_limit(nodes: tuple[DevNode, DevNode], env: Env) -> None:
    g1, _ = nodes
    await env.register(g1.endpoint)
    node = await env.node("node-g1")

    bad = env.client.stream("StreamTranscribe", node)
    await bad.write(pb.StreamTranscribeRequest(audio=b"\x00" * 3200))  # audio before config
    with pytest.raises(NodeCallError) as err:
        async for _ in bad:
            pass
    assert err.value.code == "VALIDATION_ERROR" and err.value.error_code == "PROTOCOL_VIOLATION"

    quiet = env.client.stream("StreamTranscribe", node, gap_s=0.3)
    await quiet.write(pb.StreamTranscribeRequest(config=pb.StreamTranscribeConfig()))
    events = []
    with pytest.raises(NodeCallError) as err:
        async for event in quiet:
            events.append(event.WhichOneof("event"))
    assert events == ["started"] and err.value.code == "BACKEND_TIMEOUT"
    assert env.calls("StreamTranscribe", "DEADLINE_EXCEEDED") == 1
    spans = [s.name for s in env.exporter.get_finished_spans()]
    assert spans.count("scaiinfer.v1.AudioNode/StreamTranscribe") == 2
