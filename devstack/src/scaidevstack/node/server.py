"""Run the node: gRPC AudioNode + health and the relay HTTP app in one event loop.

Start-up: both listeners come up at once (health NOT_SERVING, no engines listed), then the
engines load in worker threads and appear one by one. SIGTERM/SIGINT start draining: health
goes NOT_SERVING, new heavy calls get ``UNAVAILABLE``/``DRAINING``, in-flight calls get the
grace period, and whatever still runs then ends with ``DRAINING``. A second signal skips the
rest of the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2_grpc
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2_grpc as pb_grpc
from scaidevstack.node.config import NodeConfig, parse_address
from scaidevstack.node.health import NodeHealth
from scaidevstack.node.loader import load_all
from scaidevstack.node.relay import create_relay_app
from scaidevstack.node.servicer import AudioNodeServicer
from scaidevstack.node.state import NodeState

log = logging.getLogger("scaidevstack.node")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
KILL_WAIT_S = 2.0
WORKER_THREADS = 64  # engine calls, decodes and abandoned (cancelled) work
GRPC_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_pings_without_data", 0),
)


class NodeServer:
    """The running node process (tests can drive it in-process through :meth:`run`)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.state = NodeState(config)
        self.health = NodeHealth(self.state)
        self.stop_requested = asyncio.Event()
        self.skip_grace = asyncio.Event()
        self.grpc_port = 0
        self._http_stop = asyncio.Event()

    async def start_grpc(self) -> grpc.aio.Server:
        """Bind and start the gRPC server (health NOT_SERVING until an engine loads)."""
        server = grpc.aio.server(options=GRPC_OPTIONS)
        pb_grpc.add_AudioNodeServicer_to_server(  # type: ignore[no-untyped-call]
            AudioNodeServicer(self.state), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        await self.health.sync()
        host, port = parse_address(self.config.grpc)
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.grpc_port = server.add_insecure_port(target)
        if not self.grpc_port:
            raise OSError(f"cannot bind gRPC to {self.config.grpc}")
        await server.start()
        return server

    def http_task(self) -> asyncio.Task[None]:
        """Serve the relay app with Hypercorn until :meth:`run` stops it."""
        host, port = parse_address(self.config.http)
        cfg = HypercornConfig()
        cfg.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        cfg.accesslog = None
        cfg.errorlog = "-"
        cfg.graceful_timeout = 1.0
        app = create_relay_app(self.state)
        coro = hypercorn_serve(app, cfg, shutdown_trigger=self._http_stop.wait)  # type: ignore[arg-type]
        return asyncio.create_task(coro)

    def request_stop(self) -> None:
        """First call: drain; second call: end the grace period now."""
        if self.stop_requested.is_set():
            self.skip_grace.set()
        self.stop_requested.set()

    async def drain(self) -> None:
        """Refuse new heavy calls, give in-flight ones the grace period, then end them."""
        self.state.admission.draining = True
        self.state.changed()
        await self.health.sync()
        inflight = self.state.admission.inflight()
        log.info("draining inflight=%d grace_s=%.1f", inflight, self.config.grace_period_s)
        idle = asyncio.create_task(self.state.admission.wait_idle())
        skip = asyncio.create_task(self.skip_grace.wait())
        await asyncio.wait(
            {idle, skip}, timeout=self.config.grace_period_s, return_when=asyncio.FIRST_COMPLETED
        )
        skip.cancel()
        if not idle.done():
            killed = self.state.admission.kill_all()
            log.info("grace_period_over ended=%d", killed)
            try:
                await asyncio.wait_for(idle, KILL_WAIT_S)
            except TimeoutError:
                log.warning("calls still running after the grace period")

    async def run(self) -> int:
        """Serve until a signal; returns the exit status."""
        loop = asyncio.get_running_loop()
        loop.set_default_executor(
            ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="engine")
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        server = await self.start_grpc()
        http = self.http_task()
        print(
            f"node {self.config.node_id} listening grpc={self.config.grpc} "
            f"http=http://{self.config.http} engines={','.join(self.config.enabled_engines)}",
            file=sys.stderr,
            flush=True,
        )
        loader = asyncio.create_task(load_all(self.state))
        stop = asyncio.create_task(self.stop_requested.wait())
        await asyncio.wait({stop, http}, return_when=asyncio.FIRST_COMPLETED)
        if http.done() and not stop.done():
            log.error("relay HTTP server ended: %r", http.exception())
            self.stop_requested.set()
        await self.drain()
        loader.cancel()
        await server.stop(1.0)
        self._http_stop.set()
        if not http.done():
            try:
                await asyncio.wait_for(http, 5.0)
            except (TimeoutError, Exception):
                log.warning("relay HTTP server did not stop cleanly")
        log.info("node stopped")
        return 0


def serve(config: NodeConfig) -> int:
    """Run the node until SIGTERM/SIGINT (blocking)."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # Not asyncio.run: it would join worker threads that cancelled calls left computing.
    code = loop.run_until_complete(NodeServer(config).run())
    logging.shutdown()
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(code)
