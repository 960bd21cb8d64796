"""Run an ASGI app with Hypercorn until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config


def serve_app(app: Any, host: str, port: int, *, name: str) -> None:
    """Serve ``app`` on ``host:port`` (blocking). Hypercorn's access log is off."""
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.graceful_timeout = 2.0
    print(f"{name} listening on http://{host}:{port}", file=sys.stderr, flush=True)
    asyncio.run(serve(app, config))
