"""Start devstack inference nodes (``python -m scaidevstack node serve``) for tests.

Several nodes start concurrently (:func:`start_nodes`); each is ready once its relay
``/readyz`` answers 200 (every configured engine loaded, not draining).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from scaicommon.testing.processes import ManagedProcess, free_port


@dataclass
class DevNode:
    """One devstack node process: gRPC on ``grpc_port``, relay HTTP on ``http_port``."""

    node_id: str
    engines: str = "speaker"
    capacity: int | None = None
    grace_period_s: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:<grpc port>``."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def relay_url(self) -> str:
        """Base URL of the node's OpenAI-compatible relay API."""
        return f"http://127.0.0.1:{self.http_port}"

    def args(self) -> list[str]:
        """The ``node serve`` command line (after the interpreter)."""
        args = [
            "-m", "scaidevstack", "node", "serve",
            "--node-id", self.node_id,
            "--grpc", self.endpoint,
            "--http", f"127.0.0.1:{self.http_port}",
            "--engines", self.engines,
        ]  # fmt: skip
        if self.capacity is not None:
            args += ["--capacity", str(self.capacity)]
        if self.grace_period_s is not None:
            args += ["--grace-period", str(self.grace_period_s)]
        return args

    def launch(self) -> DevNode:
        """Start the process without waiting for it."""
        env = {"SCAI_NODE_API_SECRET": "", **self.env}
        self.process = ManagedProcess(self.args(), env=env, name=f"node-{self.node_id}").start()
        return self

    def wait_ready(self, timeout: float = 180.0) -> DevNode:
        """Wait until ``/readyz`` answers 200; raise with the node's log when it does not."""
        assert self.process is not None, "node not launched"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.running:
                raise RuntimeError(f"node {self.node_id} exited:\n{self.process.output()}")
            try:
                if httpx.get(f"{self.relay_url}/readyz", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"node {self.node_id} not ready:\n{self.process.output()}")

    def start(self, timeout: float = 180.0) -> DevNode:
        """Launch and wait (also restarts a stopped node on the same ports)."""
        return self.launch().wait_ready(timeout)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` without waiting (SIGTERM starts draining)."""
        assert self.process is not None and self.process.pid is not None
        self.process.proc.send_signal(sig)  # type: ignore[union-attr]

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM and wait for the exit."""
        if self.process is not None:
            self.process.stop(timeout=timeout)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.running

    def log(self) -> str:
        """Everything the node wrote so far."""
        return self.process.output() if self.process is not None else ""


def start_nodes(nodes: Sequence[DevNode], timeout: float = 180.0) -> list[DevNode]:
    """Launch every node, then wait for all of them (they load concurrently)."""
    for node in nodes:
        node.launch()
    try:
        for node in nodes:
            node.wait_ready(timeout)
    except Exception:
        for node in nodes:
            node.stop()
        raise
    return list(nodes)
