"""gRPC client conventions towards inference nodes (platform §7) and node fan-out (§6.6).

- :class:`ChannelPool`: one lazily created ``grpc.aio`` channel per endpoint (§7.2).
- :func:`call_metadata`: the metadata of §7.1.
- :func:`deadline_s`: the deadlines of §7.3.
- :class:`NodeClient`: unary calls with the retries of §7.4, streaming calls, fan-out, metrics,
  spans and the status mapping of §7.5 (:class:`NodeCallError`, a :class:`ScaiError`).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2_grpc
from scaicommon.errors import ScaiError
from scaicommon.logging import scrub
from scaicommon.metrics import ServiceMetrics
from scaicommon.nodes import NodeInfo, NodeRegistry
from scaicommon.requestid import current_request_id
from scaicommon.settings import CommonSettings
from scaicommon.tracing import inject_trace_headers

log = structlog.get_logger("scaicommon.grpcclient")

T = TypeVar("T")

SERVICE = "scaiinfer.v1.AudioNode"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Not in §7.2: caps gRPC's reconnect backoff (default up to 120 s) so that a restarted
    # node is seen by the next polls rather than minutes later.
    ("grpc.max_reconnect_backoff_ms", 5000),
)

#: Unary RPCs this layer retries (§7.4).
IDEMPOTENT_UNARY = frozenset(
    {
        "GetNodeInfo",
        "Transcribe",
        "Diarize",
        "EmbedSpeaker",
        "EnrollSpeaker",
        "EvictSpeaker",
        "EvictVoice",
        "ListSpeakers",
    }
)
#: The engine kind each RPC needs (§6.9).
RPC_ENGINE_KIND: dict[str, str] = {
    "Transcribe": "audio.transcribe",
    "StreamTranscribe": "audio.transcribe",
    "Synthesize": "audio.synthesize",
    "StreamSynthesize": "audio.synthesize",
    "EvictVoice": "audio.synthesize",
    "EmbedSpeaker": "audio.analyze.pyannote",
    "EnrollSpeaker": "audio.analyze.pyannote",
    "EvictSpeaker": "audio.analyze.pyannote",
    "ListSpeakers": "audio.analyze.pyannote",
    "Diarize": "audio.analyze.pyannote",
}
GET_NODE_INFO_DEADLINE_S = 2.0
SYNTHESIZE_GAP_S = 30.0
RETRY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
MAX_ATTEMPTS = 3
_BACKOFF_S = (0.2, 0.8)
_MESSAGE_CHARS = 300


# ----- deadlines (§7.3) ---------------------------------------------------------------


def deadline_s(rpc: str, *, audio_ms: int = 0, chars: int = 0, scale: float = 1.0) -> float | None:
    """The deadline of one call in seconds, ``None`` for the unbounded streaming RPCs.

    Everything but ``GetNodeInfo`` is multiplied by ``scale`` (``<PREFIX>_GRPC_DEADLINE_SCALE``).
    """
    audio_s = audio_ms / 1000.0
    if rpc == "GetNodeInfo":
        return GET_NODE_INFO_DEADLINE_S
    if rpc in ("StreamTranscribe", "StreamSynthesize"):
        return None
    if rpc == "Transcribe":
        base = min(30.0 + audio_s, 900.0)
    elif rpc == "Diarize":
        base = min(30.0 + 0.5 * audio_s, 900.0)
    elif rpc == "Synthesize":
        base = min(30.0 + 0.06 * chars, 600.0)
    elif rpc in ("EmbedSpeaker", "EnrollSpeaker"):
        base = 60.0
    elif rpc in ("EvictSpeaker", "EvictVoice", "ListSpeakers"):
        base = 10.0
    else:
        raise ValueError(f"unknown RPC {rpc!r}")
    return base * scale


# ----- metadata (§7.1) and trailers -----------------------------------------------------

Metadata = tuple[tuple[str, str], ...]


def call_metadata(
    *,
    module: str,
    secret: str = "",
    tenant_id: str = "",
    user_id: str = "",
    request_id: str | None = None,
) -> Metadata:
    """Metadata for one call: secret (when set), tenant, user, request id, module, trace."""
    pairs: list[tuple[str, str]] = []
    if secret:
        pairs.append(("x-api-secret", secret))
    pairs += [
        ("x-tenant-id", tenant_id),
        ("x-user-id", user_id),
        ("x-request-id", request_id or current_request_id()),
        ("x-module", module),
    ]
    trace_headers: dict[str, str] = {}
    inject_trace_headers(trace_headers)
    pairs += [(k.lower(), v) for k, v in trace_headers.items()]
    return tuple(pairs)


def trailer(metadata: Any, key: str) -> str | None:
    """The value of ``key`` in gRPC (trailing) metadata, or ``None``."""
    if not metadata:
        return None
    for item in metadata:
        name, value = item[0], item[1]
        if name == key:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def error_code_of(metadata: Any) -> str | None:
    """``x-error-code`` of a node error (scaiinfer.proto.md §4.2)."""
    return trailer(metadata, "x-error-code")


def retry_after_ms_of(metadata: Any) -> int | None:
    """``retry-after-ms`` of a capacity error, when present and numeric."""
    value = trailer(metadata, "retry-after-ms")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def missing_speaker_ids_of(metadata: Any) -> list[str]:
    """``x-missing-speaker-ids`` of ``SPEAKER_NOT_ENROLLED``, as a list."""
    value = trailer(metadata, "x-missing-speaker-ids")
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


# ----- status mapping (§7.5) ----------------------------------------------------------


class NodeCallError(ScaiError):
    """A node call that failed, mapped to its platform error (§7.5).

    Besides the :class:`ScaiError` fields it carries the gRPC ``grpc_code`` name, the node's
    ``error_code`` (``x-error-code``), ``retry_after_ms``, ``missing_speaker_ids`` and the
    ``node_id``; none of them reach the client body.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        grpc_code: str,
        node_id: str | None = None,
        error_code: str | None = None,
        retry_after_ms: int | None = None,
        missing_speaker_ids: Sequence[str] = (),
        retry_after: int | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(code, message, http_status=http_status, retry_after=retry_after)
        self.grpc_code = grpc_code
        self.node_id = node_id
        self.error_code = error_code
        self.retry_after_ms = retry_after_ms
        self.missing_speaker_ids = list(missing_speaker_ids)

    @property
    def failover_eligible(self) -> bool:
        """``UNAVAILABLE`` or ``RESOURCE_EXHAUSTED``: the dispatcher may fail over (§5.4)."""
        return self.grpc_code in ("UNAVAILABLE", "RESOURCE_EXHAUSTED")

    @property
    def needs_resupply(self) -> bool:
        """``SPEAKER_NOT_ENROLLED`` / ``VOICE_NOT_CACHED``: re-supply and retry once (§6.7)."""
        return self.grpc_code == "FAILED_PRECONDITION" and self.error_code in (
            "SPEAKER_NOT_ENROLLED",
            "VOICE_NOT_CACHED",
        )


def _short(text: str) -> str:
    return scrub(text.strip())[:_MESSAGE_CHARS]


def map_status(
    code: grpc.StatusCode,
    details: str | None,
    trailing: Any,
    *,
    module: str,
    node_id: str | None = None,
) -> NodeCallError:
    """The platform error for a gRPC status (§7.5)."""
    name = code.name
    reason = error_code_of(trailing)
    retry_ms = retry_after_ms_of(trailing)
    common: dict[str, Any] = {
        "grpc_code": name,
        "node_id": node_id,
        "error_code": reason,
        "retry_after_ms": retry_ms,
        "missing_speaker_ids": missing_speaker_ids_of(trailing),
    }
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        text = _short(details or reason or "invalid input")
        return NodeCallError("VALIDATION_ERROR", f"backend rejected input: {text}", **common)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        after = max(1, math.ceil(retry_ms / 1000)) if retry_ms else 1
        return NodeCallError(
            "BACKEND_RATE_LIMITED", "inference node at capacity", retry_after=after, **common
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        return NodeCallError(
            f"{module.upper()}_BACKEND_UNAVAILABLE",
            "inference node unavailable",
            http_status=502,
            **common,
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return NodeCallError("BACKEND_TIMEOUT", "inference node timed out", **common)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        log.error("node_auth_rejected", grpc_code=name, node_id=node_id)
        return NodeCallError("BACKEND_ERROR", "inference node refused the service", **common)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return NodeCallError(
            "BACKEND_ERROR", f"inference node precondition failed ({reason or name})", **common
        )
    return NodeCallError("BACKEND_ERROR", f"inference node error ({name})", **common)


def map_rpc_error(exc: grpc.RpcError, *, module: str, node_id: str | None = None) -> NodeCallError:
    """:func:`map_status` for a raised ``grpc.aio.AioRpcError``."""
    return map_status(
        exc.code(), exc.details(), exc.trailing_metadata(), module=module, node_id=node_id
    )


# ----- channels (§7.2) ----------------------------------------------------------------


class ChannelPool:
    """One ``grpc.aio`` channel per endpoint, created lazily and shared by the process."""

    def __init__(
        self, *, tls: bool = False, ca_file: str = "", stale_after_s: float = 45.0
    ) -> None:
        self.tls = tls
        self.ca_file = ca_file
        self.stale_after_s = stale_after_s
        self._channels: dict[str, Any] = {}
        self._stubs: dict[str, audio_node_pb2_grpc.AudioNodeStub] = {}
        self._missing_since: dict[str, float] = {}

    def channel(self, endpoint: str) -> Any:
        """The channel of ``endpoint`` (``host:port`` or ``[v6]:port``)."""
        chan = self._channels.get(endpoint)
        if chan is None:
            options = list(CHANNEL_OPTIONS)
            if self.tls:
                roots = None
                if self.ca_file:
                    with open(self.ca_file, "rb") as fh:
                        roots = fh.read()
                creds = grpc.ssl_channel_credentials(root_certificates=roots)
                chan = grpc.aio.secure_channel(endpoint, creds, options=options)
            else:
                chan = grpc.aio.insecure_channel(endpoint, options=options)
            self._channels[endpoint] = chan
        return chan

    def stub(self, endpoint: str) -> audio_node_pb2_grpc.AudioNodeStub:
        """The ``AudioNode`` stub on the endpoint's channel (one per channel)."""
        stub = self._stubs.get(endpoint)
        if stub is None:
            stub = audio_node_pb2_grpc.AudioNodeStub(self.channel(endpoint))  # type: ignore[no-untyped-call]
            self._stubs[endpoint] = stub
        return stub

    @property
    def endpoints(self) -> list[str]:
        """Endpoints that currently have a channel."""
        return sorted(self._channels)

    async def retain(self, endpoints: Iterable[str], *, at: float | None = None) -> list[str]:
        """Close channels whose endpoint has been missing from ``endpoints`` too long.

        Returns the endpoints whose channels were closed.
        """
        now = time.monotonic() if at is None else at
        current = set(endpoints)
        closed: list[str] = []
        for endpoint in list(self._channels):
            if endpoint in current:
                self._missing_since.pop(endpoint, None)
                continue
            since = self._missing_since.setdefault(endpoint, now)
            if now - since > self.stale_after_s:
                chan = self._channels.pop(endpoint)
                self._stubs.pop(endpoint, None)
                self._missing_since.pop(endpoint, None)
                await chan.close()
                closed.append(endpoint)
        return closed

    async def aclose(self) -> None:
        """Close every channel."""
        channels, self._channels = self._channels, {}
        self._stubs.clear()
        for chan in channels.values():
            await chan.close()


# ----- results -------------------------------------------------------------------------


@dataclass(frozen=True)
class UnaryResult(Generic[T]):
    """A successful unary call: the response, the node that answered and the attempts made."""

    value: T
    node: NodeInfo
    attempts: int


@dataclass(frozen=True)
class FanOutItem:
    """One node's outcome in a fan-out (§6.6)."""

    node_id: str
    ok: bool
    latency_ms: int
    value: Any = None
    error_code: str | None = None
    error_message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{node_id, ok, value, latency_ms}`` or ``{node_id, ok, error_code, …}``."""
        if self.ok:
            return {
                "node_id": self.node_id,
                "ok": True,
                "value": self.value,
                "latency_ms": self.latency_ms,
            }
        return {
            "node_id": self.node_id,
            "ok": False,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "latency_ms": self.latency_ms,
        }


@dataclass(frozen=True)
class FanOutResult:
    """Every target's outcome; an empty target set gives no results and ``any_ok`` false."""

    results: tuple[FanOutItem, ...]

    @property
    def any_ok(self) -> bool:
        """At least one node succeeded."""
        return any(r.ok for r in self.results)

    @property
    def all_ok(self) -> bool:
        """Every node succeeded (false for an empty target set)."""
        return bool(self.results) and all(r.ok for r in self.results)

    @property
    def ok_node_ids(self) -> list[str]:
        """Ids of the nodes that succeeded."""
        return [r.node_id for r in self.results if r.ok]


# ----- the client ----------------------------------------------------------------------


class BoundStub:
    """An ``AudioNode`` stub whose calls carry the §7.1 metadata, a deadline and metrics.

    ``await bound.EvictSpeaker(request)`` behaves like the raw stub; explicit ``timeout`` or
    ``metadata`` keyword arguments win.
    """

    def __init__(
        self,
        client: NodeClient,
        target: NodeInfo | str,
        *,
        timeout_s: float | None,
        tenant_id: str = "",
        user_id: str = "",
    ) -> None:
        self._client = client
        self._endpoint = target if isinstance(target, str) else target.endpoint
        self._node_id = None if isinstance(target, str) else target.node_id
        self._timeout_s = timeout_s
        self._tenant_id = tenant_id
        self._user_id = user_id

    def __getattr__(self, rpc: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._client.channels.stub(self._endpoint), rpc)

        async def invoke(request: Any, **kwargs: Any) -> Any:
            with self._client.span(rpc, self._node_id):
                kwargs.setdefault("timeout", self._timeout_s)
                kwargs.setdefault(
                    "metadata",
                    self._client.metadata(tenant_id=self._tenant_id, user_id=self._user_id),
                )
                started = time.perf_counter()
                code = "OK"
                try:
                    return await method(request, **kwargs)
                except grpc.RpcError as exc:
                    code = exc.code().name
                    raise
                except asyncio.CancelledError:
                    code = "CANCELLED"
                    raise
                finally:
                    self._client.observe(rpc, code, time.perf_counter() - started)

        return invoke


def _span_attributes(rpc: str, node_id: str | None) -> dict[str, str]:
    attributes = {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": rpc}
    if node_id:
        attributes["scai.node_id"] = node_id
    return attributes


class NodeClient:
    """Calls nodes the way §7 says: metadata, deadlines, retries, metrics and error mapping."""

    def __init__(
        self,
        *,
        module: str,
        registry: NodeRegistry,
        channels: ChannelPool,
        secret: str = "",
        deadline_scale: float = 1.0,
        metrics: ServiceMetrics | None = None,
        tracer: trace.Tracer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.module = module
        self.registry = registry
        self.channels = channels
        self.secret = secret
        self.deadline_scale = deadline_scale
        self.metrics = metrics
        self.tracer = tracer or trace.get_tracer("scaicommon.grpcclient")
        self._rng = rng or random.Random()

    @classmethod
    def from_settings(
        cls,
        settings: CommonSettings,
        *,
        module: str,
        registry: NodeRegistry,
        channels: ChannelPool,
        metrics: ServiceMetrics | None = None,
        tracer: trace.Tracer | None = None,
    ) -> NodeClient:
        """A client configured from the service settings."""
        return cls(
            module=module,
            registry=registry,
            channels=channels,
            secret=settings.grpc_service_secret.get(),
            deadline_scale=settings.grpc_deadline_scale,
            metrics=metrics,
            tracer=tracer,
        )

    # ----- helpers -----------------------------------------------------------------

    def metadata(
        self, *, tenant_id: str = "", user_id: str = "", request_id: str | None = None
    ) -> Metadata:
        """The §7.1 metadata for a call made now (inside the current span)."""
        return call_metadata(
            module=self.module,
            secret=self.secret,
            tenant_id=tenant_id,
            user_id=user_id,
            request_id=request_id,
        )

    def deadline(self, rpc: str, *, audio_ms: int = 0, chars: int = 0) -> float | None:
        """:func:`deadline_s` with this client's scale."""
        return deadline_s(rpc, audio_ms=audio_ms, chars=chars, scale=self.deadline_scale)

    def span(self, rpc: str, node_id: str | None = None) -> Any:
        """The client span ``scaiinfer.v1.AudioNode/<Rpc>``, made current (a context manager)."""
        return self.tracer.start_as_current_span(
            f"{SERVICE}/{rpc}", kind=SpanKind.CLIENT, attributes=_span_attributes(rpc, node_id)
        )

    def start_span(self, rpc: str, node_id: str | None = None) -> trace.Span:
        """The same span, started but not made current (streams end it themselves)."""
        return self.tracer.start_span(
            f"{SERVICE}/{rpc}", kind=SpanKind.CLIENT, attributes=_span_attributes(rpc, node_id)
        )

    def observe(self, rpc: str, code: str, seconds: float) -> None:
        """Record one finished call in ``grpc_client_calls_total`` and the latency histogram."""
        if self.metrics is not None:
            self.metrics.grpc_calls.labels(rpc=rpc, code=code).inc()
            self.metrics.grpc_duration.labels(rpc=rpc).observe(seconds)

    def bind(
        self,
        node: NodeInfo | str,
        *,
        timeout_s: float | None = None,
        tenant_id: str = "",
        user_id: str = "",
    ) -> BoundStub:
        """A stub for ``node`` (or an endpoint) adding metadata, ``timeout_s`` and metrics."""
        return BoundStub(self, node, timeout_s=timeout_s, tenant_id=tenant_id, user_id=user_id)

    # ----- unary with retries (§7.4) ---------------------------------------------------

    async def unary(
        self,
        rpc: str,
        request: Any,
        *,
        node: NodeInfo | None = None,
        engine_kind: str | None = None,
        capabilities: Sequence[str] = (),
        tenant_id: str = "",
        user_id: str = "",
        timeout_s: float | None = None,
        audio_ms: int = 0,
        pin: bool = False,
    ) -> UnaryResult[Any]:
        """Call a unary RPC, retrying per §7.4; raise :class:`NodeCallError` when it fails.

        ``node`` is the first target (else one is resolved). Idempotent RPCs are retried on
        ``UNAVAILABLE``/``RESOURCE_EXHAUSTED`` up to 3 attempts inside the one deadline
        (``timeout_s`` or §7.3's): on another node from the resolver (never with ``pin``),
        else on the same node after 200 ms / 800 ms ±50 % (or the node's larger
        ``retry-after-ms``). No node at all gives ``<MODULE>_BACKEND_UNAVAILABLE``.
        """
        kind = engine_kind or RPC_ENGINE_KIND.get(rpc, "")
        caps = tuple(capabilities)
        budget = timeout_s if timeout_s is not None else self.deadline(rpc, audio_ms=audio_ms)
        if budget is None:
            raise ValueError(f"{rpc} is a streaming RPC; use stream()")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        target = node or await self.registry.resolve_audio_node(kind, capabilities=caps)
        if target is None:
            raise NodeCallError(
                f"{self.module.upper()}_BACKEND_UNAVAILABLE",
                "no inference node available",
                grpc_code="UNAVAILABLE",
                http_status=502,
            )
        retryable = rpc in IDEMPOTENT_UNARY
        tried: list[str] = []
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - loop.time()
            try:
                stub = self.bind(
                    target, timeout_s=max(remaining, 0.001), tenant_id=tenant_id, user_id=user_id
                )
                value = await getattr(stub, rpc)(request)
                return UnaryResult(value, target, attempt)
            except grpc.RpcError as exc:
                error = map_rpc_error(exc, module=self.module, node_id=target.node_id)
                if not retryable or exc.code() not in RETRY_CODES or attempt >= MAX_ATTEMPTS:
                    raise error from None
            if target.node_id not in tried:
                tried.append(target.node_id)
            other = None
            if not pin and kind:
                other = await self.registry.resolve_audio_node(
                    kind, capabilities=caps, exclude=tried
                )
            if other is not None:
                log.info("node_retry_other", rpc=rpc, attempt=attempt, node_id=other.node_id)
                target = other
                continue
            pause = _BACKOFF_S[attempt - 1] * self._rng.uniform(0.5, 1.5)
            if error.grpc_code == "RESOURCE_EXHAUSTED" and error.retry_after_ms:
                pause = max(pause, error.retry_after_ms / 1000.0)
            if loop.time() + pause >= deadline:
                raise error from None
            log.info("node_retry_backoff", rpc=rpc, attempt=attempt, pause_s=round(pause, 3))
            await asyncio.sleep(pause)

    # ----- streaming (no retries) ---------------------------------------------------------

    def stream(
        self,
        rpc: str,
        node: NodeInfo,
        request: Any = None,
        *,
        tenant_id: str = "",
        user_id: str = "",
        chars: int = 0,
        timeout_s: float | None = None,
        gap_s: float | None = None,
    ) -> NodeStream:
        """Open a streaming RPC on ``node`` (never retried: failover is the dispatcher's job).

        ``Synthesize`` takes its ``request`` and gets §7.3's deadline plus a 30 s (scaled) gap
        limit between messages; the bidirectional RPCs have no deadline and are written with
        :meth:`NodeStream.write`.
        """
        timeout = timeout_s if timeout_s is not None else self.deadline(rpc, chars=chars)
        if gap_s is None and rpc == "Synthesize":
            gap_s = SYNTHESIZE_GAP_S * self.deadline_scale
        return NodeStream(
            self,
            rpc,
            node,
            request,
            tenant_id=tenant_id,
            user_id=user_id,
            timeout_s=timeout,
            gap_s=gap_s,
        )

    # ----- fan-out (§6.6) -----------------------------------------------------------------

    async def fan_out(
        self,
        engine_kind: str,
        call: Callable[[BoundStub, NodeInfo], Awaitable[Any]],
        *,
        timeout_s: float = 30.0,
        include_warning: bool = True,
        nodes: Sequence[NodeInfo] | None = None,
        tenant_id: str = "",
        user_id: str = "",
    ) -> FanOutResult:
        """Run ``call(stub, node)`` on every target concurrently; per-node failures never raise.

        Targets are ``nodes`` when given, else every non-draining node with ``engine_kind``
        that is healthy (or warning with ``include_warning``). Each call has its own deadline
        ``timeout_s`` (the stub's calls carry it too). A failure's ``error_code`` is the gRPC
        status name.
        """
        targets = (
            list(nodes)
            if nodes is not None
            else await self.registry.targets(engine_kind, include_warning=include_warning)
        )

        async def one(node: NodeInfo) -> FanOutItem:
            stub = self.bind(node, timeout_s=timeout_s, tenant_id=tenant_id, user_id=user_id)
            started = time.perf_counter()

            def elapsed() -> int:
                return int((time.perf_counter() - started) * 1000)

            try:
                # The gRPC deadline fires first; this bound only guards non-gRPC waits.
                value = await asyncio.wait_for(call(stub, node), timeout_s + 0.5)
            except grpc.RpcError as exc:
                return FanOutItem(
                    node.node_id,
                    False,
                    elapsed(),
                    None,
                    exc.code().name,
                    _short(exc.details() or ""),
                )
            except NodeCallError as exc:
                return FanOutItem(node.node_id, False, elapsed(), None, exc.grpc_code, exc.message)
            except TimeoutError:
                return FanOutItem(
                    node.node_id, False, elapsed(), None, "DEADLINE_EXCEEDED", "timed out"
                )
            except Exception as exc:
                log.warning("fan_out_call_failed", node_id=node.node_id, error=type(exc).__name__)
                return FanOutItem(
                    node.node_id, False, elapsed(), None, "UNKNOWN", type(exc).__name__
                )
            return FanOutItem(node.node_id, True, elapsed(), value)

        results = await asyncio.gather(*(one(n) for n in targets))
        return FanOutResult(tuple(results))


class NodeStream:
    """A streaming call: iterate for the node's messages; errors come as :class:`NodeCallError`.

    For ``StreamTranscribe``/``StreamSynthesize`` send with :meth:`write` and
    :meth:`done_writing`. Cancelling the consuming task cancels the call (no error mapping:
    our side left). :meth:`cancel` stops it explicitly.
    """

    def __init__(
        self,
        client: NodeClient,
        rpc: str,
        node: NodeInfo,
        request: Any,
        *,
        tenant_id: str,
        user_id: str,
        timeout_s: float | None,
        gap_s: float | None,
    ) -> None:
        self.client = client
        self.rpc = rpc
        self.node = node
        self.gap_s = gap_s
        self._started = time.perf_counter()
        self._observed = False
        self._span = client.start_span(rpc, node.node_id)
        token = otel_context.attach(trace.set_span_in_context(self._span))
        try:
            metadata = client.metadata(tenant_id=tenant_id, user_id=user_id)
        finally:
            otel_context.detach(token)
        method = getattr(client.channels.stub(node.endpoint), rpc)
        if request is None:
            self.call = method(timeout=timeout_s, metadata=metadata)
        else:
            self.call = method(request, timeout=timeout_s, metadata=metadata)

    def _finish(self, code: str) -> None:
        if self._observed:
            return
        self._observed = True
        self.client.observe(self.rpc, code, time.perf_counter() - self._started)
        if code != "OK":
            self._span.set_status(Status(StatusCode.ERROR, code))
        self._span.end()

    def _error(self, exc: grpc.RpcError) -> NodeCallError:
        self._finish(exc.code().name)
        return map_rpc_error(exc, module=self.client.module, node_id=self.node.node_id)

    async def write(self, message: Any) -> None:
        """Send one message on a bidirectional stream."""
        try:
            await self.call.write(message)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    async def done_writing(self) -> None:
        """Half-close the request side."""
        try:
            await self.call.done_writing()
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def cancel(self) -> None:
        """Cancel the call (our side; nothing is mapped)."""
        self.call.cancel()
        self._finish("CANCELLED")

    async def read(self) -> Any | None:
        """The next message from the node, or ``None`` once the stream ended with ``OK``.

        Raises :class:`NodeCallError` for a node error, and ``BACKEND_TIMEOUT`` when ``gap_s``
        passes without a message (the call is then cancelled).
        """
        try:
            read = self.call.read()
            message = await (asyncio.wait_for(read, self.gap_s) if self.gap_s is not None else read)
        except TimeoutError:
            self.call.cancel()
            self._finish("DEADLINE_EXCEEDED")
            raise NodeCallError(
                "BACKEND_TIMEOUT",
                "inference node stream stalled",
                grpc_code="DEADLINE_EXCEEDED",
                node_id=self.node.node_id,
            ) from None
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        except asyncio.CancelledError:
            self.call.cancel()
            self._finish("CANCELLED")
            raise
        if message is grpc.aio.EOF:
            self._finish("OK")
            return None
        return message

    def __aiter__(self) -> AsyncIterator[Any]:
        """Iterate the remaining messages; leaving the loop early cancels the call."""
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        try:
            while (message := await self.read()) is not None:
                yield message
        finally:
            if not self._observed:
                self.call.cancel()
                self._finish("CANCELLED")
