"""The arq worker process of a service, with its own healthz/readyz/metrics listener."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from arq.connections import RedisSettings
from arq.cron import CronJob, cron
from arq.typing import WorkerCoroutine
from arq.worker import Function, Worker
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from scaicommon.runtime import Runtime

log = structlog.get_logger("scaicommon.worker")

JobFunction = Function | WorkerCoroutine
WORKER_TTL_S = 60


@dataclass
class WorkerDefinition:
    """What a service's worker runs: arq functions and cron jobs."""

    functions: Sequence[JobFunction] = ()
    cron_jobs: Sequence[CronJob] = ()
    max_jobs: int = 4
    job_timeout_s: int = 1800
    extra_ctx: dict[str, Any] = field(default_factory=dict)


def queue_name(module: str) -> str:
    """The module's arq queue, ``<module>:queue`` (platform §16)."""
    return f"{module}:queue"


def workers_key(module: str, worker_id: str) -> str:
    """Redis key a worker refreshes while it lives (the dashboard's 'workers seen')."""
    return f"scai:{module}:workers:{worker_id}"


async def heartbeat(ctx: dict[str, Any]) -> None:
    """Cron: record this worker as alive for ``WORKER_TTL_S`` seconds."""
    runtime: Runtime = ctx["runtime"]
    worker_id: str = ctx["worker_id"]
    payload = {"worker_id": worker_id, "pid": os.getpid(), "seen_at_ms": int(time.time() * 1000)}
    await runtime.redis.set(
        workers_key(runtime.spec.module, worker_id), json.dumps(payload), ex=WORKER_TTL_S
    )


async def run_worker(
    runtime: Runtime,
    definition: WorkerDefinition,
    health_app: Callable[[Runtime, Sequence[BaseRoute]], Starlette],
    *,
    burst: bool = False,
) -> None:
    """Run the arq worker and the health listener until SIGTERM/SIGINT."""
    settings = runtime.settings
    await runtime.start()
    worker_id = f"{socket.gethostname()}-{os.getpid()}"
    ctx: dict[str, Any] = {"runtime": runtime, "worker_id": worker_id, **definition.extra_ctx}
    beat = cron(
        heartbeat, name="worker_heartbeat", second=set(range(0, 60, 10)), run_at_startup=True
    )
    worker = Worker(
        functions=list(definition.functions),
        cron_jobs=[beat, *definition.cron_jobs],
        queue_name=queue_name(runtime.spec.module),
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        handle_signals=False,
        max_jobs=definition.max_jobs,
        job_timeout=definition.job_timeout_s,
        burst=burst,
        ctx=ctx,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    config = Config()
    config.bind = [f"{settings.host}:{settings.worker_http_port}"]
    config.accesslog = None
    app = health_app(runtime, [])
    health_task = asyncio.create_task(
        serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    )
    worker_task = asyncio.create_task(worker.async_run())
    log.info("worker_started", worker_id=worker_id, queue=queue_name(runtime.spec.module))
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({worker_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    worker_task.cancel()
    try:
        await worker.close()
    finally:
        await asyncio.gather(worker_task, health_task, return_exceptions=True)
        await runtime.redis.delete(workers_key(runtime.spec.module, worker_id))
        await runtime.close()
        log.info("worker_stopped", worker_id=worker_id)
