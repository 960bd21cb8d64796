"""Serve an ASGI app with a real Hypercorn inside the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config


@contextlib.asynccontextmanager
async def serving(app: Any, *, wait_path: str | None = None) -> AsyncIterator[str]:
    """Serve ``app`` on a pre-bound 127.0.0.1 socket; yield its base URL; stop on exit.

    With ``wait_path`` it first waits until that path answers, so the app's lifespan
    start-up has run.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # listening already: no readiness wait needed
    config.graceful_timeout = 1
    config.accesslog = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    base = f"http://127.0.0.1:{port}"
    try:
        if wait_path is not None:
            async with httpx.AsyncClient() as client:
                await client.get(base + wait_path, timeout=30)
        yield base
    finally:
        stop.set()
        await task
