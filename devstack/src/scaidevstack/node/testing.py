"""Run a real devstack node as a subprocess, for tests (this repo's and the services')."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2_grpc as pb_grpc
from scaicommon.testing import ManagedProcess, free_port

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)
_SOURCE_CONFIG = Path(__file__).resolve().parents[3] / "node.toml"


@dataclass
class NodeProcess:
    """A running node: its gRPC target, relay base URL and process."""

    grpc_target: str
    http_url: str
    process: ManagedProcess

    def channel(self) -> grpc.Channel:
        """A new blocking channel to the node (64 MiB messages)."""
        return grpc.insecure_channel(self.grpc_target, options=CHANNEL_OPTIONS)

    def stub(self, channel: grpc.Channel | None = None) -> pb_grpc.AudioNodeStub:
        """An ``AudioNode`` stub on ``channel`` (or a new channel)."""
        return pb_grpc.AudioNodeStub(channel or self.channel())  # type: ignore[no-untyped-call]

    def stop(self) -> int | None:
        """SIGTERM the node and wait for it."""
        return self.process.stop(timeout=30.0)

    def log(self) -> str:
        """Everything the node wrote so far."""
        return self.process.output()


def node_args(
    grpc_port: int,
    http_port: int,
    *,
    engines: Sequence[str] = ("stt", "tts", "speaker"),
    capacity: int | None = None,
    node_id: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The ``python`` arguments of ``node serve``."""
    args = ["-m", "scaidevstack", "node", "serve"]
    if _SOURCE_CONFIG.is_file():
        args += ["--config", str(_SOURCE_CONFIG)]
    args += [
        "--grpc",
        f"127.0.0.1:{grpc_port}",
        "--http",
        f"127.0.0.1:{http_port}",
        "--engines",
        ",".join(engines),
    ]
    if capacity is not None:
        args += ["--capacity", str(capacity)]
    if node_id is not None:
        args += ["--node-id", node_id]
    return [*args, *extra_args]


def start_node(
    *,
    engines: Sequence[str] = ("stt", "tts", "speaker"),
    capacity: int | None = None,
    node_id: str | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    grpc_port: int | None = None,
    http_port: int | None = None,
    timeout: float = 180.0,
) -> NodeProcess:
    """Start ``node serve`` on free ports and wait until every engine has loaded.

    ``SCAI_NODE_API_SECRET`` is cleared unless ``env`` sets it.
    """
    grpc_port = grpc_port or free_port()
    http_port = http_port or free_port()
    http_url = f"http://127.0.0.1:{http_port}"
    process = ManagedProcess(
        node_args(
            grpc_port,
            http_port,
            engines=engines,
            capacity=capacity,
            node_id=node_id,
            extra_args=extra_args,
        ),
        env={"SCAI_NODE_API_SECRET": "", **(env or {})},
        ready_url=f"{http_url}/readyz",
        ready_status=200,
        timeout=timeout,
        name="node",
    ).start()
    return NodeProcess(f"127.0.0.1:{grpc_port}", http_url, process)


def error_code(error: grpc.RpcError) -> str:
    """The ``x-error-code`` trailing metadata of a failed call (``""`` when absent)."""
    return trailing(error).get("x-error-code", "")


def trailing(error: grpc.RpcError) -> dict[str, str]:
    """Trailing metadata of a failed call as a dict."""
    md = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    return {k: v for k, v in (md or ()) if isinstance(v, str)}
