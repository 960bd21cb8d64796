"""``grpc.health.v1.Health`` fed from the node state (§4.1): SERVING while at least one engine
is loaded and the node is not draining, NOT_SERVING otherwise, for ``""`` and the AudioNode.
"""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from scaidevstack.node.state import NodeState

SERVICE_NAMES = ("", "scaiinfer.v1.AudioNode")


class NodeHealth:
    """Keeps a :class:`HealthServicer` in step with :class:`NodeState`."""

    def __init__(self, state: NodeState) -> None:
        self.state = state
        self.servicer = HealthServicer()
        self._tasks: set[asyncio.Task[None]] = set()
        state.on_change.append(self._schedule)

    async def sync(self) -> None:
        """Publish the current status under both service names."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.state.serving()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in SERVICE_NAMES:
            await self.servicer.set(name, status)

    def _schedule(self) -> None:
        task = asyncio.get_running_loop().create_task(self.sync())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
